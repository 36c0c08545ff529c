package dashboard

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// auditForm is the audit page's filter form, echoed back.
type auditForm struct {
	Action, Actor, Target, From, To string
}

var (
	actionRe = regexp.MustCompile(`^[a-z_]+(\.[a-z_]*)*$`)
	targetRe = regexp.MustCompile(`^[A-Za-z0-9_:-]{1,128}$`)
)

// auditFilter reads the filter form. The list is always of the session's
// environment plus the organisation-wide entries: live actions stay out of
// the sandbox view and back. That is filtered in the query, not on the page
// read, which could leave a page empty with more entries behind it.
func (d *Dashboard) auditFilter(r *http.Request, s *Session) (auditForm, audit.Filter, []string) {
	v := r.URL.Query()
	f := auditForm{Action: strings.TrimSpace(v.Get("action")), Actor: strings.TrimSpace(v.Get("actor")),
		Target: strings.TrimSpace(v.Get("target")), From: v.Get("from"), To: v.Get("to")}
	livemode := s.Livemode
	af := audit.Filter{Livemode: &livemode}
	var problems []string
	if f.Action != "" {
		a := strings.TrimSuffix(f.Action, "*")
		if actionRe.MatchString(a) {
			af.Action = a
		} else {
			problems = append(problems, "Action must look like api_key.created or api_key.* .")
		}
	}
	if f.Actor != "" {
		switch {
		case strings.HasPrefix(f.Actor, ids.User+"_") || strings.HasPrefix(f.Actor, ids.Key+"_"):
			af.ActorID = f.Actor
		case f.Actor == "user" || f.Actor == "api_key" || f.Actor == "cli" || f.Actor == "system":
			af.ActorType = audit.ActorType(f.Actor)
		case targetRe.MatchString(f.Actor):
			af.ActorID = f.Actor
		default:
			problems = append(problems, "Actor must be a user or key id, or one of user, api_key, cli, system.")
		}
	}
	if f.Target != "" {
		if targetRe.MatchString(f.Target) {
			af.TargetID = f.Target
		} else {
			problems = append(problems, "Target must be an object id such as key_….")
		}
	}
	for _, c := range []struct {
		v   string
		dst *time.Time
		nm  string
	}{{f.From, &af.Since, "From"}, {f.To, &af.Until, "To"}} {
		if c.v == "" {
			continue
		}
		t, err := time.Parse("2006-01-02T15:04", c.v)
		if err != nil {
			problems = append(problems, c.nm+" must be a date and time (UTC).")
			continue
		}
		*c.dst = t
	}
	if a := v.Get("after"); ids.Valid(a, ids.Audit) {
		af.StartingAfter = a
	} else if b := v.Get("before"); ids.Valid(b, ids.Audit) {
		af.EndingBefore = b
	}
	return f, af, problems
}

func (d *Dashboard) auditPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	f, af, problems := d.auditFilter(r, s)
	data := map[string]any{"F": f, "Problems": problems, "Query": r.URL.Query().Encode()}
	if len(problems) == 0 {
		af.Limit = 50
		pg, err := d.cfg.Audit.List(r.Context(), s.OrgID, af)
		if err != nil {
			return err
		}
		data["Entries"] = pg.Data
		emails := map[string]string{}
		if ms, err := d.cfg.Accounts.ListMembers(r.Context(), s.OrgID); err == nil {
			for _, m := range ms {
				emails[m.ID] = m.Email
			}
		}
		data["Emails"] = emails
		p := page{}
		if len(pg.Data) > 0 {
			if pg.HasMore || af.EndingBefore != "" {
				p.After = pg.Data[len(pg.Data)-1].ID
			}
			if af.StartingAfter != "" || (af.EndingBefore != "" && pg.HasMore) {
				p.Before = pg.Data[0].ID
			}
		}
		data["Pager"] = pageLinks(r, p)
		data["ExportCSV"], data["ExportJSON"] = exportLink(r, "csv"), exportLink(r, "json")
	}
	d.render(w, r, s, http.StatusOK, "audit.html", "Audit log", "audit", data)
	return nil
}

// exportLink is the export of the entries r's filters select, whole: a
// query pasted after a "?" in the template would be escaped a second time,
// and the export would drop the filters.
func exportLink(r *http.Request, format string) string {
	q := r.URL.Query()
	q.Del("after")
	q.Del("before")
	q.Set("format", format)
	return "/audit/export?" + q.Encode()
}

// auditExport writes every matching entry, newest first, as CSV or JSON,
// a page at a time: memory stays bounded however long the log. The first
// page is read before anything is written, so a failure to read it is an
// error page; a later failure aborts the connection, so the browser reports
// a failed download instead of saving a file that looks complete.
func (d *Dashboard) auditExport(w http.ResponseWriter, r *http.Request, s *Session) error {
	_, af, problems := d.auditFilter(r, s)
	if len(problems) > 0 {
		return errBadRequest(strings.Join(problems, " "))
	}
	format := r.URL.Query().Get("format")
	if format != "csv" && format != "json" {
		return errBadRequest("Choose format=csv or format=json.")
	}
	af.Limit = audit.MaxLimit
	af.StartingAfter, af.EndingBefore = "", ""
	// Each page gets its own RequestTimeout to read and to write (the
	// route has no deadline of its own): the whole export takes as long as
	// the client's link needs.
	list := func() (audit.Page, error) {
		ctx, cancel := context.WithTimeout(r.Context(), d.cfg.RequestTimeout)
		defer cancel()
		return d.cfg.Audit.List(ctx, s.OrgID, af)
	}
	rc := http.NewResponseController(w)
	pg, err := list()
	if err != nil {
		return err
	}
	name := "audit-" + s.OrgID + "-" + s.Env() + "-" + d.now().UTC().Format("20060102T150405Z")
	w.Header().Set("Cache-Control", "no-store")
	var write func(page []audit.Entry, last bool) error
	if format == "json" {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.json"`)
		write = jsonEntries(w)
	} else {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.csv"`)
		write = csvEntries(w)
	}
	for {
		_ = rc.SetWriteDeadline(time.Now().Add(d.cfg.RequestTimeout))
		if err := write(pg.Data, !pg.HasMore || len(pg.Data) == 0); err != nil {
			return nil // the client went away
		}
		if !pg.HasMore || len(pg.Data) == 0 {
			return nil
		}
		af.StartingAfter = pg.Data[len(pg.Data)-1].ID
		if pg, err = list(); err != nil {
			d.log.Warn("dashboard: audit export cut short", zap.String("org", s.OrgID), zap.Error(err))
			panic(http.ErrAbortHandler)
		}
	}
}

// csvEntries writes a CSV export: a header, then each page's rows.
func csvEntries(w io.Writer) func(page []audit.Entry, last bool) error {
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"id", "created", "livemode", "actor_type", "actor_id", "action", "target_type", "target_id", "ip", "data"})
	return func(page []audit.Entry, _ bool) error {
		for _, e := range page {
			live := ""
			if e.Livemode != nil {
				live = strconv.FormatBool(*e.Livemode)
			}
			data, _ := json.Marshal(e.Data)
			_ = cw.Write([]string{e.ID, e.CreatedAt.UTC().Format(time.RFC3339), live, string(e.Actor.Type), csvSafe(e.Actor.ID),
				e.Action, e.TargetType, csvSafe(e.TargetID), csvSafe(e.IP), csvSafe(string(data))})
		}
		cw.Flush()
		return cw.Error()
	}
}

// jsonEntries writes a JSON export, {"object": "list", "data": [...]}, an
// entry per line.
func jsonEntries(w io.Writer) func(page []audit.Entry, last bool) error {
	b := []byte("{\n  \"object\": \"list\",\n  \"data\": [")
	n := 0
	return func(page []audit.Entry, last bool) error {
		for _, e := range page {
			line, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if n++; n > 1 {
				b = append(b, ',')
			}
			b = append(append(b, "\n    "...), line...)
		}
		if last {
			b = append(b, "\n  ]\n}\n"...)
		}
		_, err := w.Write(b)
		b = b[:0]
		return err
	}
}

// csvSafe defuses spreadsheet formulas in user-controlled cells.
func csvSafe(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
