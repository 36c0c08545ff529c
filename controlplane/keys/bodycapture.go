package keys

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/apikey"
)

// BodyCapture reports whether the organisation keeps request and response
// bodies in its request logs for env (DESIGN §9: off unless turned on).
func (s *Service) BodyCapture(ctx context.Context, org string, env apikey.Environment) (bool, error) {
	var on bool
	err := s.db.QueryRow(ctx, `SELECT CASE WHEN $2 = 'live' THEN body_capture_live ELSE body_capture_sandbox END
		FROM organizations WHERE id = $1`, org, string(env)).Scan(&on)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, orgNotFound(org)
	}
	if err != nil {
		return false, fmt.Errorf("loading body capture: %w", err)
	}
	return on, nil
}

// SetBodyCapture turns body capture on or off for the organisation's env.
// The gateways learn it with each key they authenticate (the key lookup
// carries the setting), so every key of env is announced on NotifyChannel
// in the same transaction, and the next request with any of them follows
// the new setting. A change is recorded in the audit trail; setting the
// current value changes nothing. Who may change it is the caller's rule
// (the dashboard: admins for sandbox, owners for live).
func (s *Service) SetBodyCapture(ctx context.Context, actor audit.Actor, org string, env apikey.Environment, on bool) (changed bool, err error) {
	if err := actor.Validate(); err != nil {
		return false, err
	}
	column := "body_capture_sandbox"
	if env == apikey.Live {
		column = "body_capture_live"
	}
	now := s.now()
	err = pgx.BeginFunc(ctx, s.db, func(tx pgx.Tx) error {
		var was bool
		err := tx.QueryRow(ctx, `SELECT `+column+` FROM organizations WHERE id = $1 FOR NO KEY UPDATE`, org).Scan(&was)
		if errors.Is(err, pgx.ErrNoRows) {
			return orgNotFound(org)
		}
		if err != nil {
			return fmt.Errorf("loading organization: %w", err)
		}
		if was == on {
			return nil
		}
		changed = true
		if _, err := tx.Exec(ctx, `UPDATE organizations SET `+column+` = $2 WHERE id = $1`, org, on); err != nil {
			return fmt.Errorf("updating organization: %w", err)
		}
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, encode(key_hash, 'hex'))
			FROM api_keys WHERE organization_id = $2 AND environment = $3`, NotifyChannel, org, string(env)); err != nil {
			return fmt.Errorf("notifying gateways: %w", err)
		}
		live := env == apikey.Live
		return audit.Record(ctx, tx, audit.Entry{
			OrganizationID: org, Livemode: &live, Actor: actor, Action: "organization.updated",
			TargetType: "organization", TargetID: org, CreatedAt: now,
			Data: map[string]any{column: map[string]any{"from": was, "to": on}},
		})
	})
	if err != nil {
		return false, fmt.Errorf("setting body capture: %w", err)
	}
	return changed, nil
}
