package ingest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Partitions keeps request_logs' daily partitions: request_logs_YYYYMMDD
// holds the UTC day [YYYY-MM-DD, +1 day). Maintain creates today's and the
// next Ahead days' partitions and drops those entirely older than
// Retention; Ensure creates one on demand for a late or early message.
//
// There is no DEFAULT partition on purpose: rows parked in one would have to
// be moved out before the day's partition could be created, and retention
// could no longer be a plain DROP.
type Partitions struct {
	db        *pgxpool.Pool
	retention time.Duration
	ahead     int
	now       func() time.Time

	mu     sync.Mutex
	known  map[string]bool // partitions known to exist
	failed map[string]int  // consecutive failed creations, by partition
}

// NewPartitions returns the partition manager; now may be nil for time.Now.
func NewPartitions(db *pgxpool.Pool, retention time.Duration, ahead int, now func() time.Time) *Partitions {
	if now == nil {
		now = time.Now
	}
	return &Partitions{db: db, retention: retention, ahead: ahead, now: now, known: map[string]bool{}, failed: map[string]int{}}
}

const partitionPrefix = "request_logs_"

// PartitionName is the partition holding the UTC day of t.
func PartitionName(t time.Time) string {
	return partitionPrefix + t.UTC().Format("20060102")
}

// day truncates t to the start of its UTC day.
func day(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// expired reports whether the partition of day d is entirely older than the
// retention at now, i.e. would be dropped.
func (p *Partitions) expired(d, now time.Time) bool {
	return day(d).Before(FirstKeptDay(now, p.retention))
}

// FirstKeptDay is the first UTC day whose request logs retention keeps at
// now: earlier days' partitions are dropped at the next maintenance.
func FirstKeptDay(now time.Time, retention time.Duration) time.Time {
	return day(now.Add(-retention))
}

// tooNew reports whether t lies beyond the prepared range by more than a
// day: a gateway clock that far off must not create partitions that then
// live for the whole retention.
func (p *Partitions) tooNew(t, now time.Time) bool {
	return !day(t).Before(day(now).AddDate(0, 0, p.ahead+2))
}

// ddlLockTimeout bounds how long a partition's drop waits for its locks,
// and so how long the reads and inserts queued behind it can wait.
const ddlLockTimeout = `SET LOCAL lock_timeout = '1s'`

// createLockWait is how long a partition's creation waits for its lock
// after n failed attempts: 1 s, doubling, and after maxCreateWaits
// failures, as long as it takes (0). Reads that keep overlapping would
// otherwise keep a day's partition from ever being made, and the ingester,
// which needs it, would stop for as long as they went on; once a second's
// patience has failed several times, making the day is worth holding up
// the reads behind it.
func createLockWait(n int) time.Duration {
	if n >= maxCreateWaits {
		return 0
	}
	return time.Second << n
}

const maxCreateWaits = 5 // 1+2+4+8+16 s of trying

// partitionLock serialises partition DDL between control-plane replicas.
const partitionLock = `SELECT pg_advisory_xact_lock(hashtext('gatehouse.request_logs.partitions'))`

// Ensure creates the partition for the UTC day of t unless it is known to
// exist.
func (p *Partitions) Ensure(ctx context.Context, t time.Time) (created bool, err error) {
	name := PartitionName(t)
	p.mu.Lock()
	ok := p.known[name]
	p.mu.Unlock()
	if ok {
		return false, nil
	}
	p.mu.Lock()
	wait := createLockWait(p.failed[name])
	p.mu.Unlock()
	err = pgx.BeginFunc(ctx, p.db, func(tx pgx.Tx) error {
		// Creating a partition takes an exclusive lock on request_logs,
		// queued behind any read in progress, with every later read and
		// insert queued behind it: give up rather than stall them, at
		// first (see createLockWait). A day's partition is made days
		// ahead, and the ingester retries a batch whose day is missing.
		if _, err := tx.Exec(ctx, fmt.Sprintf(`SET LOCAL lock_timeout = %d`, wait.Milliseconds())); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, partitionLock); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return nil
		}
		from := day(t)
		to := from.AddDate(0, 0, 1)
		// Identifiers and bounds come from a formatted date, never from input.
		_, err := tx.Exec(ctx, fmt.Sprintf(
			`CREATE TABLE %s PARTITION OF request_logs FOR VALUES FROM ('%s') TO ('%s')`,
			pgx.Identifier{name}.Sanitize(), from.Format(time.RFC3339), to.Format(time.RFC3339)))
		created = err == nil
		return err
	})
	if err != nil {
		p.mu.Lock()
		p.failed[name]++
		p.mu.Unlock()
		return false, fmt.Errorf("creating partition %s: %w", name, err)
	}
	p.mu.Lock()
	p.known[name] = true
	delete(p.failed, name)
	p.mu.Unlock()
	return created, nil
}

// forget drops the cache, after another replica may have dropped a
// partition this one thought existed.
func (p *Partitions) forget() {
	p.mu.Lock()
	p.known = map[string]bool{}
	p.mu.Unlock()
}

// List returns the names of request_logs' daily partitions, oldest first.
func (p *Partitions) List(ctx context.Context) ([]string, error) {
	rows, err := p.db.Query(ctx, `
		SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		WHERE i.inhparent = 'request_logs'::regclass`)
	if err != nil {
		return nil, fmt.Errorf("listing partitions: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing partitions: %w", err)
	}
	sort.Strings(names)
	return names, nil
}

// Maintain creates the partitions of today and the Ahead days after it, and
// drops the partitions wholly older than the retention. It returns what it
// created and dropped, and what failed: one step failing does not stop the
// others.
func (p *Partitions) Maintain(ctx context.Context) (created, dropped []string, err error) {
	now := p.now()
	names, err := p.List(ctx)
	if err != nil {
		return nil, nil, err
	}
	p.mu.Lock()
	p.known = make(map[string]bool, len(names))
	for _, n := range names {
		p.known[n] = true
	}
	p.mu.Unlock()

	var errs []error
	for i := 0; i <= p.ahead; i++ {
		d := day(now).AddDate(0, 0, i)
		ok, err := p.Ensure(ctx, d)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if ok {
			created = append(created, PartitionName(d))
		}
	}
	for _, n := range names {
		stamp, ok := strings.CutPrefix(n, partitionPrefix)
		if !ok {
			continue
		}
		d, err := time.Parse("20060102", stamp)
		if err != nil || !p.expired(d, now) {
			continue
		}
		err = pgx.BeginFunc(ctx, p.db, func(tx pgx.Tx) error {
			// Dropping takes an exclusive lock on request_logs; rather than
			// queue readers and the ingester behind a long query, give up
			// and retry at the next round.
			if _, err := tx.Exec(ctx, ddlLockTimeout); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, partitionLock); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{n}.Sanitize())
			return err
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("dropping partition %s: %w", n, err))
			continue
		}
		p.mu.Lock()
		delete(p.known, n)
		p.mu.Unlock()
		dropped = append(dropped, n)
	}
	return created, dropped, errors.Join(errs...)
}
