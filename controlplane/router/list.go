package router

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// Page sizes of every list endpoint (DESIGN §5).
const (
	DefaultListLimit = 10
	MaxListLimit     = 100
)

// ListSpec describes a list endpoint's common parameters.
type ListSpec struct {
	// IDPrefix is the prefix of the listed objects' ids, which the cursors
	// starting_after and ending_before must carry.
	IDPrefix string
	// Cursor, when set, checks a cursor instead: for objects whose ids are
	// not ids.New's (a usage record's names what it counts).
	Cursor func(string) bool
	// Object names one listed object with its article, for messages:
	// "an event", "a webhook endpoint".
	Object string
	// Created enables created, created[gte], created[gt], created[lt] and
	// created[lte] (unix seconds).
	Created bool
}

// ListQuery is what every list request shares. At most one cursor is set.
type ListQuery struct {
	Limit         int
	StartingAfter string
	EndingBefore  string
	// CreatedGTE ≤ created_at < CreatedLT, each when set. The created
	// filters are whole seconds and rows keep microseconds, so the filters
	// become this half-open interval: created[gt]=n starts at n+1 and
	// created[lte]=n ends before n+1, and a row shown as "created": n
	// matches exactly the filters that n satisfies.
	CreatedGTE *time.Time
	CreatedLT  *time.Time
}

// ParseList reads a list request's query: limit, the cursors and (when
// spec.Created) the created filters; every other parameter goes to filter,
// which reports whether it knew it (nil: there are no others). A parameter
// sent twice, a bad value or an unknown parameter is a 400 naming it.
func ParseList(vals url.Values, spec ListSpec, filter func(key, val string) (bool, error)) (ListQuery, error) {
	q := ListQuery{Limit: DefaultListLimit}
	for _, key := range slices.Sorted(maps.Keys(vals)) {
		if len(vals[key]) > 1 {
			return q, apierror.ParameterInvalid(Printable(key), fmt.Sprintf("Parameter %s was sent more than once.", Printable(key)))
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
			valid := spec.Cursor
			if valid == nil {
				valid = func(v string) bool { return ids.Valid(v, spec.IDPrefix) }
			}
			if !valid(v) {
				return q, apierror.ParameterInvalid(key, fmt.Sprintf("Invalid %s: expected %s id (%s_…).", key, spec.Object, spec.IDPrefix))
			}
			if key == "starting_after" {
				q.StartingAfter = v
			} else {
				q.EndingBefore = v
			}
		case "created", "created[gte]", "created[gt]", "created[lt]", "created[lte]":
			if !spec.Created {
				return q, UnknownParam(key)
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || n > 1<<40 {
				return q, apierror.ParameterInvalid(key, fmt.Sprintf("Invalid %s: expected a unix timestamp in seconds.", key))
			}
			from, next := time.Unix(n, 0), time.Unix(n+1, 0)
			switch key {
			case "created":
				q.CreatedGTE, q.CreatedLT = later(q.CreatedGTE, from), earlier(q.CreatedLT, next)
			case "created[gte]":
				q.CreatedGTE = later(q.CreatedGTE, from)
			case "created[gt]":
				q.CreatedGTE = later(q.CreatedGTE, next)
			case "created[lt]":
				q.CreatedLT = earlier(q.CreatedLT, from)
			default: // created[lte]
				q.CreatedLT = earlier(q.CreatedLT, next)
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
				return q, UnknownParam(key)
			}
		}
	}
	if q.StartingAfter != "" && q.EndingBefore != "" {
		return q, apierror.ParameterInvalid("ending_before",
			"Pass starting_after or ending_before, not both: they page in opposite directions.")
	}
	return q, nil
}

// later is the later of a (when set) and t.
func later(a *time.Time, t time.Time) *time.Time {
	if a != nil && a.After(t) {
		return a
	}
	return &t
}

// earlier is the earlier of a (when set) and t.
func earlier(a *time.Time, t time.Time) *time.Time {
	if a != nil && a.Before(t) {
		return a
	}
	return &t
}

// PageSQL builds the query of one list page: conditions with numbered
// arguments, then the cursor and the order.
type PageSQL struct {
	where []string
	args  []any
}

// Add appends a condition; cond holds one %d for v's argument number.
func (p *PageSQL) Add(cond string, v any) {
	p.args = append(p.args, v)
	p.where = append(p.where, fmt.Sprintf(cond, len(p.args)))
}

// Query completes the page over idCol, newest first (ids sort by creation
// time under the "C" collation of migration 0006), limit+1 rows to learn
// has_more. The page before a cursor is read oldest first from the cursor;
// ascending tells the caller to reverse it (TrimPage does). The created
// window of q is the caller's to Add: its column differs between tables.
func (p *PageSQL) Query(selectFrom, idCol string, q ListQuery) (sql string, args []any, ascending bool) {
	switch {
	case q.StartingAfter != "":
		p.Add(idCol+" < $%d", q.StartingAfter)
	case q.EndingBefore != "":
		p.Add(idCol+" > $%d", q.EndingBefore)
		ascending = true
	}
	p.args = append(p.args, q.Limit+1)
	sql = selectFrom + " WHERE " + strings.Join(p.where, " AND ") +
		" ORDER BY " + idCol + " " + order(ascending) + fmt.Sprintf(" LIMIT $%d", len(p.args))
	return sql, p.args, ascending
}

// QueryView is Query for a view that joins other tables to table (under
// alias, ordered by its id). The page is cut from table alone and only its
// rows are joined, so a page reads a page of rows whatever the planner
// expects of the filters; view(from) selects from from, which carries the
// alias.
func (p *PageSQL) QueryView(table, alias string, q ListQuery, view func(from string) string) (sql string, args []any, ascending bool) {
	idCol := alias + ".id"
	page, args, ascending := p.Query("SELECT * FROM "+table+" "+alias, idCol, q)
	return view("("+page+") "+alias) + " ORDER BY " + idCol + " " + order(ascending), args, ascending
}

func order(ascending bool) string {
	if ascending {
		return "ASC"
	}
	return "DESC"
}

// TrimPage cuts the extra row PageSQL asked for and restores newest-first
// order; it reports whether there were more rows.
func TrimPage[T any](rows []T, limit int, ascending bool) ([]T, bool) {
	more := len(rows) > limit
	if more {
		rows = rows[:limit]
	}
	if ascending {
		slices.Reverse(rows)
	}
	return rows, more
}
