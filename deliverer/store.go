package deliverer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/controlplane/events"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/wire"
)

// delivery is the part of a webhook_deliveries row an attempt needs.
type delivery struct {
	ID             string
	OrganizationID string
	Livemode       bool
	EventID        string
	EndpointID     string
	Attempts       int  // attempts made before this one
	ManualAttempts int  // of which manual ones, which the schedule does not count
	Manual         bool // this attempt is a manual one (manual_pending or manual_claimed at the claim)
	// Delivered: a manual attempt's delivery has had a 2xx answer before
	// (a resend of an event the endpoint already received).
	Delivered bool
	LeaseID   string
}

// endpointSnap is the endpoint as read at ReadAt: by the claim or fan-out
// that produced a job, and again before an attempt when that is too old
// (endpointCache).
type endpointSnap struct {
	URL          string
	Status       string
	APIVersion   string // its payloads are rendered in (events.PayloadVersionSQL)
	FailingSince *time.Time
	AlertLevel   int
	// Secrets is the version of the endpoint's signing secrets
	// (secretsVersionSQL): the secret cache reloads when it changes.
	Secrets string
	// ReadAt is when the read began, on the real clock: the snapshot
	// reflects every change committed before then.
	ReadAt time.Time
}

// secretsVersionSQL is the version of the signing secrets of the endpoint
// whose id is ep (an SQL expression): a digest of the ids of the
// transactions that wrote its secret rows (xmin). Any insert, update or
// delete of those rows changes it — a rotation adds a row and moves the
// others' expiry — without a column the control plane must remember to
// bump. It reads the endpoint's few rows through their index, so claims and
// fan-out can afford it per endpoint. Every query must use this one
// definition: versions from different queries are compared.
func secretsVersionSQL(ep string) string {
	return `COALESCE((SELECT md5(string_agg(s.xmin::text, ',' ORDER BY s.id))
		FROM webhook_endpoint_secrets s WHERE s.endpoint_id = ` + ep + `), '')`
}

// job is one held delivery on its way through the dispatcher.
type job struct {
	d  delivery
	ep endpointSnap
	ev *wire.Event // nil when the event row is missing
	// fast: handed over by fan-out; eventTime is the Kafka timestamp.
	fast      bool
	eventTime time.Time
}

func newLeaseID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// matches reports whether an endpoint subscribed to patterns wants events of
// type typ: "*", the exact type, or a prefix wildcard such as "customer.*".
func matches(patterns []string, typ string) bool {
	for _, p := range patterns {
		if p == "*" || p == typ {
			return true
		}
		if strings.HasSuffix(p, ".*") && strings.HasPrefix(typ, p[:len(p)-1]) {
			return true
		}
	}
	return false
}

// endpointBackdate is the clock skew allowed between an event's producer
// and Postgres: an endpoint receives the events created after it, or at
// most this long before. Endpoints never get events from before their time,
// so re-reading the topic from the start cannot flood a new endpoint.
const endpointBackdate = time.Minute

type fanEndpoint struct {
	ID, Org    string
	Livemode   bool
	URL        string
	Events     []string
	APIVersion string
	Failing    *time.Time
	AlertLevel int
	Created    time.Time
	Secrets    string
}

// fanOut stores a round of events and their deliveries in one transaction:
// the events rows (so the dashboard shows the event even while the control
// plane's ingester lags) and one delivery per event and matching endpoint.
// Deliveries for which the dispatcher has room are inserted already leased
// and returned as jobs (the fast path); the rest are left for the poller.
// Existing (event, endpoint) pairs are skipped, which makes a re-read of the
// same messages after a crash a no-op.
func (w *Worker) fanOut(ctx context.Context, now time.Time, evs []wire.Event, times []time.Time) (jobs []*job, created int, err error) {
	type cand struct {
		j        *job
		reserved bool
		inserted bool
	}
	var cands []*cand
	undo := func() {
		for _, c := range cands {
			if c.reserved {
				w.disp.unreserve(c.j.d.EndpointID)
			}
		}
		cands = nil
	}
	err = pgx.BeginFunc(ctx, w.db, func(tx pgx.Tx) error {
		undo() // a retried transaction starts over
		if _, err := events.Insert(ctx, tx, evs...); err != nil {
			return err
		}
		orgSet := map[string]bool{}
		var orgs []string
		for _, e := range evs {
			if !orgSet[e.OrganizationID] {
				orgSet[e.OrganizationID] = true
				orgs = append(orgs, e.OrganizationID)
			}
		}
		readAt := time.Now()
		rows, err := tx.Query(ctx, `
			SELECT e.id, e.organization_id, e.livemode, e.url, e.enabled_events, `+events.PayloadVersionSQL("e")+`,
			       e.failing_since, e.failing_alert_level, e.created_at, `+secretsVersionSQL("e.id")+`
			FROM webhook_endpoints e
			WHERE e.organization_id = ANY($1) AND e.status = 'enabled'`, orgs)
		if err != nil {
			return fmt.Errorf("loading endpoints: %w", err)
		}
		var eps []fanEndpoint
		for rows.Next() {
			var e fanEndpoint
			if err := rows.Scan(&e.ID, &e.Org, &e.Livemode, &e.URL, &e.Events, &e.APIVersion, &e.Failing, &e.AlertLevel,
				&e.Created, &e.Secrets); err != nil {
				rows.Close()
				return fmt.Errorf("loading endpoints: %w", err)
			}
			eps = append(eps, e)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("loading endpoints: %w", err)
		}
		if len(eps) == 0 {
			return nil
		}
		leaseID := newLeaseID()
		leaseUntil := now.Add(w.cfg.Lease)
		var (
			dIDs, dOrgs, dEvents, dEndpoints, dLeases []string
			dLive                                     []bool
			dLocked                                   []*time.Time
		)
		for i := range evs {
			e := &evs[i]
			for _, ep := range eps {
				if ep.Org != e.OrganizationID || ep.Livemode != e.Livemode || !matches(ep.Events, e.Type) ||
					ep.Created.After(time.Unix(e.Created, 0).Add(endpointBackdate)) {
					continue
				}
				c := &cand{j: &job{
					d: delivery{ID: ids.NewAt(ids.Delivery, now), OrganizationID: e.OrganizationID, Livemode: e.Livemode,
						EventID: e.ID, EndpointID: ep.ID},
					ep: endpointSnap{URL: ep.URL, Status: "enabled", APIVersion: ep.APIVersion, FailingSince: ep.Failing,
						AlertLevel: ep.AlertLevel, Secrets: ep.Secrets, ReadAt: readAt},
					ev:   e,
					fast: true, eventTime: times[i],
				}}
				var locked *time.Time
				lease := ""
				if c.reserved = w.disp.reserve(e.OrganizationID, ep.ID); c.reserved {
					locked, lease = &leaseUntil, leaseID
					c.j.d.LeaseID = leaseID
				}
				cands = append(cands, c)
				dIDs, dOrgs, dLive = append(dIDs, c.j.d.ID), append(dOrgs, e.OrganizationID), append(dLive, e.Livemode)
				dEvents, dEndpoints = append(dEvents, e.ID), append(dEndpoints, ep.ID)
				dLocked, dLeases = append(dLocked, locked), append(dLeases, lease)
			}
		}
		if len(cands) == 0 {
			return nil
		}
		rows, err = tx.Query(ctx, `
			INSERT INTO webhook_deliveries (id, organization_id, livemode, event_id, endpoint_id, status,
			                                attempts, next_attempt_at, locked_until, lease_id, created_at, updated_at)
			SELECT u.id, u.org, u.live, u.ev, u.ep, 'pending', 0, $1, u.locked, NULLIF(u.lease, ''), $1, $1
			FROM unnest($2::text[], $3::text[], $4::boolean[], $5::text[], $6::text[], $7::timestamptz[], $8::text[])
			     AS u(id, org, live, ev, ep, locked, lease)
			ON CONFLICT (event_id, endpoint_id) DO NOTHING
			RETURNING id`, now, dIDs, dOrgs, dLive, dEvents, dEndpoints, dLocked, dLeases)
		if err != nil {
			return fmt.Errorf("inserting deliveries: %w", err)
		}
		inserted, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return fmt.Errorf("inserting deliveries: %w", err)
		}
		set := make(map[string]bool, len(inserted))
		for _, id := range inserted {
			set[id] = true
		}
		for _, c := range cands {
			c.inserted = set[c.j.d.ID]
		}
		return nil
	})
	if err != nil {
		undo()
		return nil, 0, err
	}
	for _, c := range cands {
		if c.inserted {
			created++
		}
		switch {
		case c.reserved && c.inserted:
			jobs = append(jobs, c.j)
		case c.reserved:
			w.disp.unreserve(c.j.d.EndpointID)
		case c.inserted:
			w.disp.leftBehind(c.j.d.OrganizationID, c.j.d.EndpointID)
		}
	}
	return jobs, created, nil
}

// claimSQL leases due deliveries. Candidates are the oldest due, unheld
// deliveries, at most room per endpoint (the dispatcher's per-endpoint
// bound; endpoints already full are skipped entirely, so a backlog on one
// endpoint cannot fill every claim), none for organisations already at
// their bound (a tenant's backlog cannot fill every claim either; what a
// claim takes beyond an organisation's remaining room is released at once,
// see pollLoop: ranking candidates by organisation too cost the claim a
// tenth of its throughput), then locked with SKIP LOCKED so concurrent
// deliverers take disjoint sets. The due conditions are checked
// again on the locked rows because the candidate scan ran before the locks.
// The ranked ids are an array, computed once: as a subquery (IN), a
// planner with statistics from before a burst ran the ranking again for
// every due row, and each claim took seconds until the next ANALYZE
// (TestClaimRanksCandidatesOnceWhateverTheStatistics).
//
// The claim takes over a manual request: it clears manual_pending and notes
// the attempt as manual in manual_claimed (migration 0011). A retry asked
// for while the attempt is in flight sets manual_pending again, which the
// result then leaves queued (applyDeliveriesSQL); manual_claimed keeps the
// attempt manual if this deliverer dies and another takes it over.
var claimSQL = `
WITH room AS (
	SELECT * FROM unnest($5::text[], $6::int[]) AS r(endpoint_id, room)
), cand AS (
	SELECT d.id, d.endpoint_id, d.next_attempt_at
	FROM webhook_deliveries d
	WHERE d.status IN ('pending', 'failed') AND d.next_attempt_at <= $1
	  AND (d.locked_until IS NULL OR d.locked_until < $1)
	  AND d.endpoint_id NOT IN (SELECT endpoint_id FROM room WHERE room <= 0)
	  AND d.organization_id <> ALL($10::text[])
	  AND d.id <> ALL($4::text[])
	ORDER BY d.next_attempt_at
	LIMIT $8
), ranked AS (
	SELECT c.id, row_number() OVER (PARTITION BY c.endpoint_id ORDER BY c.next_attempt_at) AS rn,
	       COALESCE(r.room, $7) AS room
	FROM cand c LEFT JOIN room r ON r.endpoint_id = c.endpoint_id
), due AS (
	SELECT d.id, d.manual_pending OR d.manual_claimed AS manual FROM webhook_deliveries d
	WHERE d.id = ANY(ARRAY(SELECT id FROM ranked WHERE rn <= room))
	  AND d.status IN ('pending', 'failed') AND d.next_attempt_at <= $1
	  AND (d.locked_until IS NULL OR d.locked_until < $1)
	ORDER BY d.next_attempt_at
	LIMIT $3
	FOR UPDATE SKIP LOCKED
), claimed AS (
	UPDATE webhook_deliveries d SET locked_until = $2, lease_id = $9, updated_at = $1,
	       manual_pending = false, manual_claimed = due.manual
	FROM due WHERE d.id = due.id
	RETURNING d.id, d.organization_id, d.livemode, d.event_id, d.endpoint_id, d.attempts, d.manual_attempts, due.manual
)
SELECT c.id, c.organization_id, c.livemode, c.event_id, c.endpoint_id, c.attempts, c.manual_attempts, c.manual,
       c.manual AND EXISTS (SELECT 1 FROM webhook_attempts a WHERE a.delivery_id = c.id AND a.status_code BETWEEN 200 AND 299),
       e.url, e.status, ` + events.PayloadVersionSQL("e") + `, e.failing_since, e.failing_alert_level,
       ` + secretsVersionSQL("e.id") + `,
       ev.id IS NOT NULL, COALESCE(ev.type, ''), COALESCE(ev.api_version, ''), ev.data,
       COALESCE(ev.request_id, ''), COALESCE(ev.idempotency_key, ''), ev.created_at
FROM claimed c
JOIN webhook_endpoints e ON e.id = c.endpoint_id
LEFT JOIN events ev ON ev.id = c.event_id AND ev.organization_id = c.organization_id AND ev.livemode = c.livemode`

// claim leases up to n due deliveries (DESIGN: a crashed deliverer's leases
// simply expire and the next claim takes them over).
func (w *Worker) claim(ctx context.Context, now time.Time, n int) ([]*job, error) {
	c := w.disp.claimLimits()
	leaseID := newLeaseID()
	var out []*job
	err := asyncTx(ctx, w.db, func(tx pgx.Tx) error {
		out = nil
		readAt := time.Now()
		rows, err := tx.Query(ctx, claimSQL, now, now.Add(w.cfg.Lease), n, c.held, c.endpoints, c.epRooms,
			w.cfg.limits.maxPerEndpoint, n*4, leaseID, c.fullOrgs)
		if err != nil {
			return err
		}
		defer rows.Close()
		return scanClaimed(rows, leaseID, readAt, &out)
	})
	if err != nil {
		return nil, fmt.Errorf("claiming deliveries: %w", err)
	}
	return out, nil
}

func scanClaimed(rows pgx.Rows, leaseID string, readAt time.Time, out *[]*job) error {
	for rows.Next() {
		j := &job{}
		var (
			hasEvent bool
			ev       wire.Event
			data     []byte
			created  *time.Time
		)
		if err := rows.Scan(&j.d.ID, &j.d.OrganizationID, &j.d.Livemode, &j.d.EventID, &j.d.EndpointID, &j.d.Attempts, &j.d.ManualAttempts, &j.d.Manual, &j.d.Delivered,
			&j.ep.URL, &j.ep.Status, &j.ep.APIVersion, &j.ep.FailingSince, &j.ep.AlertLevel, &j.ep.Secrets,
			&hasEvent, &ev.Type, &ev.APIVersion, &data, &ev.RequestID, &ev.IdempotencyKey, &created); err != nil {
			return err
		}
		j.d.LeaseID, j.ep.ReadAt = leaseID, readAt
		if hasEvent {
			ev.V, ev.ID, ev.OrganizationID, ev.Livemode = 1, j.d.EventID, j.d.OrganizationID, j.d.Livemode
			ev.Data = json.RawMessage(data)
			if created != nil {
				ev.Created = created.Unix()
			}
			j.ev = &ev
		}
		*out = append(*out, j)
	}
	return rows.Err()
}

// release gives leases back without recording anything, so the deliveries
// are due again at once (shutdown, or jobs the dispatcher could not take).
func (w *Worker) release(ctx context.Context, jobs []*job) error {
	if len(jobs) == 0 {
		return nil
	}
	idsA, leases := make([]string, len(jobs)), make([]string, len(jobs))
	for i, j := range jobs {
		idsA[i], leases[i] = j.d.ID, j.d.LeaseID
	}
	err := asyncTx(ctx, w.db, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, releaseSQL, idsA, leases)
		return err
	})
	if err != nil {
		return fmt.Errorf("releasing leases: %w", err)
	}
	return nil
}

// releaseSQL gives leases back. Rows are locked in id order, as everywhere
// several deliveries are updated at once, so that concurrent statements
// cannot deadlock.
const releaseSQL = `
WITH l AS (
	SELECT d.id FROM webhook_deliveries d JOIN unnest($1::text[], $2::text[]) AS u(id, lease)
	     ON d.id = u.id AND d.lease_id = u.lease
	ORDER BY d.id FOR UPDATE OF d
)
UPDATE webhook_deliveries d SET locked_until = NULL, lease_id = NULL FROM l WHERE d.id = l.id`

// renew extends the leases of every held delivery. Attempts finish well
// within a lease, but a delivery can wait in the dispatcher's queue behind
// a slow endpoint for longer than that.
func (w *Worker) renew(ctx context.Context, now time.Time) error {
	jobs := w.disp.leases()
	if len(jobs) == 0 {
		return nil
	}
	idsA, leases := make([]string, len(jobs)), make([]string, len(jobs))
	for i, j := range jobs {
		idsA[i], leases[i] = j.d.ID, j.d.LeaseID
	}
	// Rows being written right now (locked by the result writer) are
	// skipped: their leases are about to be released anyway, and waiting
	// for them could deadlock.
	err := asyncTx(ctx, w.db, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `
			WITH l AS (
				SELECT d.id FROM webhook_deliveries d JOIN unnest($2::text[], $3::text[]) AS u(id, lease)
				     ON d.id = u.id AND d.lease_id = u.lease
				ORDER BY d.id FOR UPDATE OF d SKIP LOCKED
			)
			UPDATE webhook_deliveries d SET locked_until = $1 FROM l WHERE d.id = l.id`, now.Add(w.cfg.Lease), idsA, leases)
		return err
	})
	if err != nil {
		return fmt.Errorf("renewing leases: %w", err)
	}
	return nil
}

// asyncTx runs fn in a transaction committed without waiting for the WAL
// flush (synchronous_commit off). It is for bookkeeping a Postgres crash may
// lose without harm — leases, attempt results — never for fan-out, whose
// commit the Kafka offsets depend on. A lost lease just expires early; a
// lost result means the delivery is attempted again (at least once, same
// webhook-id). In exchange a slow disk does not stall the dispatcher.
func asyncTx(ctx context.Context, db *pgxpool.Pool, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit TO off"); err != nil {
			return err
		}
		return fn(tx)
	})
}

// queueStats samples the backlog for the metrics.
func (w *Worker) queueStats(ctx context.Context, now time.Time) (due int64, oldest time.Duration, failing int64, err error) {
	var min *time.Time
	err = w.db.QueryRow(ctx, `
		SELECT count(*), min(next_attempt_at) FROM webhook_deliveries
		WHERE status IN ('pending', 'failed') AND next_attempt_at <= $1
		  AND (locked_until IS NULL OR locked_until < $1)`, now).Scan(&due, &min)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("sampling due deliveries: %w", err)
	}
	if min != nil {
		oldest = now.Sub(*min)
	}
	err = w.db.QueryRow(ctx, `SELECT count(*) FROM webhook_endpoints WHERE status = 'enabled' AND failing_since IS NOT NULL`).Scan(&failing)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("counting failing endpoints: %w", err)
	}
	return due, oldest, failing, nil
}
