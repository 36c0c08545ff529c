package deliverer

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// OrgAdmins returns a SMTPNotifier.Recipients that mails an organisation's
// owners and admins.
func OrgAdmins(db *pgxpool.Pool) func(ctx context.Context, org string) ([]string, error) {
	return func(ctx context.Context, org string) ([]string, error) {
		rows, err := db.Query(ctx, `
			SELECT u.email FROM memberships m JOIN users u ON u.id = m.user_id
			WHERE m.organization_id = $1 AND m.role IN ('owner', 'admin')
			ORDER BY u.email`, org)
		if err != nil {
			return nil, fmt.Errorf("listing organisation admins: %w", err)
		}
		return pgx.CollectRows(rows, pgx.RowTo[string])
	}
}
