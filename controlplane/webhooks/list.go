package webhooks

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gatehouse/gatehouse/controlplane/router"
)

// filters accumulates a WHERE clause with numbered arguments.
type filters struct {
	where []string
	args  []any
}

func (f *filters) add(cond string, v any) {
	f.args = append(f.args, v)
	f.where = append(f.where, fmt.Sprintf(cond, len(f.args)))
}

// page completes a list query over idCol: newest first (ids sort by
// creation time under the "C" collation of migration 0006), limit+1 rows to
// learn has_more. The page before a cursor is read oldest first from the
// cursor; ascending tells the caller to reverse it. The created bounds of q
// are not applied: the webhook lists' ListSpecs leave Created off, so a
// created filter is refused before it gets here.
func (f *filters) page(selectFrom, idCol string, q router.ListQuery) (sql string, args []any, ascending bool) {
	order := "DESC"
	switch {
	case q.StartingAfter != "":
		f.add(idCol+" < $%d", q.StartingAfter)
	case q.EndingBefore != "":
		f.add(idCol+" > $%d", q.EndingBefore)
		order, ascending = "ASC", true
	}
	f.args = append(f.args, q.Limit+1)
	sql = selectFrom + " WHERE " + strings.Join(f.where, " AND ") +
		" ORDER BY " + idCol + " " + order + fmt.Sprintf(" LIMIT $%d", len(f.args))
	return sql, f.args, ascending
}

// trimPage cuts the extra row and restores newest-first order.
func trimPage[T any](rows []T, limit int, ascending bool) ([]T, bool) {
	more := len(rows) > limit
	if more {
		rows = rows[:limit]
	}
	if ascending {
		slices.Reverse(rows)
	}
	return rows, more
}
