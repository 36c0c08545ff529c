// Package audit is the organisation's audit trail: who changed what, when.
// Services write an entry in the same transaction as the change it
// describes, so the trail can never disagree with the data; the dashboard
// reads it back with filters and cursors.
package audit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// ActorType says what kind of principal acted.
type ActorType string

// Actor types; the audit_logs check constraint allows exactly these.
const (
	ActorUser   ActorType = "user"    // a dashboard user; ID is the user id
	ActorAPIKey ActorType = "api_key" // an API request; ID is the key id
	ActorCLI    ActorType = "cli"     // an operator at the admin CLI; ID is the OS user
	ActorSystem ActorType = "system"  // the platform itself; ID names the component
)

// Actor is who performed an action.
type Actor struct {
	Type ActorType `json:"type"`
	ID   string    `json:"id"`
	// IP is the address the actor acted from, when known (a dashboard
	// user's): an entry without its own IP records it.
	IP string `json:"-"`
}

// Validate checks that the actor can be recorded.
func (a Actor) Validate() error {
	switch a.Type {
	case ActorUser, ActorAPIKey, ActorCLI, ActorSystem:
	default:
		return fmt.Errorf("audit: unknown actor type %q", a.Type)
	}
	if a.ID == "" {
		return errors.New("audit: actor id is empty")
	}
	return nil
}

// Ref is the actor as one string, for columns such as api_keys.created_by.
// User and key ids carry their own prefix; other actors get their type in
// front so "cli:alice" cannot be mistaken for a user.
func (a Actor) Ref() string {
	if a.Type == ActorUser || a.Type == ActorAPIKey {
		return a.ID
	}
	return string(a.Type) + ":" + a.ID
}

// Entry is one audit record.
type Entry struct {
	ID             string `json:"id"`
	OrganizationID string `json:"organization"`
	// Livemode is nil for organisation-wide actions (members, settings).
	Livemode   *bool  `json:"livemode"`
	Actor      Actor  `json:"actor"`
	Action     string `json:"action"` // e.g. "api_key.rolled"
	TargetType string `json:"target_type,omitempty"`
	TargetID   string `json:"target_id,omitempty"`
	// Data describes the change. It must never hold secrets (keys, hashes,
	// passwords): the audit log is readable by every member of the org, viewers included.
	Data      map[string]any `json:"data"`
	IP        string         `json:"ip,omitempty"`
	CreatedAt time.Time      `json:"created"`
}

// Execer is what Record needs: a pgx.Tx in practice, so that the entry
// commits or rolls back with the change it records.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Record writes e. CreatedAt defaults to now; the id is derived from it so
// that id order is time order, which the list cursors rely on.
func Record(ctx context.Context, tx Execer, e Entry) error {
	if err := e.Actor.Validate(); err != nil {
		return err
	}
	if e.OrganizationID == "" || e.Action == "" {
		return errors.New("audit: organization and action are required")
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = time.Now()
	}
	if e.ID == "" {
		e.ID = ids.NewAt(ids.Audit, e.CreatedAt)
	}
	if e.Data == nil {
		e.Data = map[string]any{}
	}
	if e.IP == "" {
		e.IP = e.Actor.IP
	}
	_, err := tx.Exec(ctx, `
		INSERT INTO audit_logs (id, organization_id, livemode, actor_type, actor_id, action,
		                        target_type, target_id, data, ip, created_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		e.ID, e.OrganizationID, e.Livemode, string(e.Actor.Type), e.Actor.ID, e.Action,
		e.TargetType, e.TargetID, e.Data, e.IP, e.CreatedAt)
	if err != nil {
		return fmt.Errorf("recording audit entry %s: %w", e.Action, err)
	}
	return nil
}

// Querier is what List needs: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// Log reads the audit trail.
type Log struct {
	db Querier
}

// NewLog returns a reader over db.
func NewLog(db Querier) *Log { return &Log{db: db} }

// Filter narrows List. Zero fields do not filter.
type Filter struct {
	Action    string    // exact action, or a prefix ending in "." ("api_key.")
	ActorType ActorType // with or without ActorID
	ActorID   string
	TargetID  string
	// Livemode, when set, keeps one environment's entries and the
	// organisation-wide ones (Livemode nil), which belong to both. It is
	// applied in SQL so that a page holds Limit entries of the environment
	// shown, however many of the other lie between them.
	Livemode *bool
	Since    time.Time // inclusive
	Until    time.Time // exclusive
	// Limit is 1–100; zero means DefaultLimit.
	Limit int
	// StartingAfter and EndingBefore are entry ids (DESIGN §5 cursors); at
	// most one may be set.
	StartingAfter string
	EndingBefore  string
}

// List limits.
const (
	DefaultLimit = 10
	MaxLimit     = 100
)

// Page is one page of entries, newest first.
type Page struct {
	Data    []Entry
	HasMore bool
}

type row struct {
	ID             string         `db:"id"`
	OrganizationID string         `db:"organization_id"`
	Livemode       *bool          `db:"livemode"`
	ActorType      string         `db:"actor_type"`
	ActorID        string         `db:"actor_id"`
	Action         string         `db:"action"`
	TargetType     string         `db:"target_type"`
	TargetID       string         `db:"target_id"`
	Data           map[string]any `db:"data"`
	IP             string         `db:"ip"`
	CreatedAt      time.Time      `db:"created_at"`
}

// List returns org's entries matching f, newest first.
func (l *Log) List(ctx context.Context, org string, f Filter) (Page, error) {
	limit := f.Limit
	switch {
	case limit == 0:
		limit = DefaultLimit
	case limit < 1 || limit > MaxLimit:
		return Page{}, apierror.ParameterInvalid("limit", fmt.Sprintf("limit must be between 1 and %d.", MaxLimit))
	}
	if f.StartingAfter != "" && f.EndingBefore != "" {
		return Page{}, apierror.ParameterInvalid("ending_before", "starting_after and ending_before cannot be used together.")
	}

	where := []string{"organization_id = $1"}
	args := []any{org}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Action != "" {
		if strings.HasSuffix(f.Action, ".") {
			add("starts_with(action, $%d)", f.Action)
		} else {
			add("action = $%d", f.Action)
		}
	}
	if f.ActorType != "" {
		add("actor_type = $%d", string(f.ActorType))
	}
	if f.ActorID != "" {
		add("actor_id = $%d", f.ActorID)
	}
	if f.TargetID != "" {
		add("target_id = $%d", f.TargetID)
	}
	if f.Livemode != nil {
		add("(livemode = $%d OR livemode IS NULL)", *f.Livemode)
	}
	if !f.Since.IsZero() {
		add("created_at >= $%d", f.Since)
	}
	if !f.Until.IsZero() {
		add("created_at < $%d", f.Until)
	}
	// Ending before a cursor walks towards newer entries, so it reads in
	// ascending order and the page is reversed afterwards.
	order := "DESC"
	switch {
	case f.StartingAfter != "":
		add("id < $%d", f.StartingAfter)
	case f.EndingBefore != "":
		add("id > $%d", f.EndingBefore)
		order = "ASC"
	}
	args = append(args, limit+1)
	q := `SELECT id, organization_id, livemode, actor_type, actor_id, action, target_type,
	             target_id, data, ip, created_at
	      FROM audit_logs WHERE ` + strings.Join(where, " AND ") +
		` ORDER BY id ` + order + fmt.Sprintf(" LIMIT $%d", len(args))

	rows, err := l.db.Query(ctx, q, args...)
	if err != nil {
		return Page{}, fmt.Errorf("listing audit entries: %w", err)
	}
	rs, err := pgx.CollectRows(rows, pgx.RowToStructByName[row])
	if err != nil {
		return Page{}, fmt.Errorf("listing audit entries: %w", err)
	}
	p := Page{HasMore: len(rs) > limit}
	if p.HasMore {
		rs = rs[:limit]
	}
	p.Data = make([]Entry, len(rs))
	for i, r := range rs {
		j := i
		if order == "ASC" {
			j = len(rs) - 1 - i
		}
		p.Data[j] = Entry{
			ID: r.ID, OrganizationID: r.OrganizationID, Livemode: r.Livemode,
			Actor:  Actor{Type: ActorType(r.ActorType), ID: r.ActorID},
			Action: r.Action, TargetType: r.TargetType, TargetID: r.TargetID,
			Data: r.Data, IP: r.IP, CreatedAt: r.CreatedAt,
		}
	}
	return p, nil
}
