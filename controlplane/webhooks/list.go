package webhooks

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// pageQuery is the cursor part of a list request (DESIGN §5). At most one
// cursor is set.
type pageQuery struct {
	Limit         int
	StartingAfter string
	EndingBefore  string
}

// parseList reads limit and the cursors (ids with prefix, naming object in
// messages) and hands every other query parameter to filter, which
// reports whether it knew the parameter.
func parseList(vals url.Values, prefix, object string, filter func(key, val string) (bool, error)) (pageQuery, error) {
	q := pageQuery{Limit: DefaultListLimit}
	for _, key := range slices.Sorted(maps.Keys(vals)) {
		if len(vals[key]) > 1 {
			return q, apierror.ParameterInvalid(router.Printable(key), fmt.Sprintf("Parameter %s was sent more than once.", router.Printable(key)))
		}
		v := vals[key][0]
		switch key {
		case "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > MaxListLimit {
				return q, apierror.ParameterInvalid("limit", fmt.Sprintf("Invalid limit: must be an integer from 1 to %d.", MaxListLimit))
			}
			q.Limit = n
		case "starting_after", "ending_before":
			// Ids sort by creation time, so any well-formed id is a position;
			// it need not exist (it may have been deleted since).
			if !ids.Valid(v, prefix) {
				return q, apierror.ParameterInvalid(key, fmt.Sprintf("Invalid %s: expected a %s id (%s_…).", key, object, prefix))
			}
			if key == "starting_after" {
				q.StartingAfter = v
			} else {
				q.EndingBefore = v
			}
		default:
			known := false
			if filter != nil {
				var err error
				if known, err = filter(key, v); err != nil {
					return q, err
				}
			}
			if !known {
				return q, router.UnknownParam(key)
			}
		}
	}
	if q.StartingAfter != "" && q.EndingBefore != "" {
		return q, apierror.ParameterInvalid("ending_before",
			"Pass starting_after or ending_before, not both: they page in opposite directions.")
	}
	return q, nil
}

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
// cursor; ascending tells the caller to reverse it.
func (f *filters) page(selectFrom, idCol string, q pageQuery) (sql string, args []any, ascending bool) {
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
