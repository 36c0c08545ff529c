package dashboard

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/accounts"
	"github.com/gatehouse/gatehouse/controlplane/requestlogs"
	"github.com/gatehouse/gatehouse/internal/apikey"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// logFilter is the request log page's form, echoed back into it.
type logFilter struct {
	Status, Method, Path, Key, Since, From, To, RequestID string
	ErrorCode                                             string
}

var (
	statusFilterRe = regexp.MustCompile(`^([1-5]xx|[1-5][0-9][0-9])$`)
	methodFilterRe = regexp.MustCompile(`^[A-Z]{1,10}$`)
	errorCodeRe    = regexp.MustCompile(`^[a-z0-9_]{1,64}$`)
	sinceChoices   = []choice{{"", "Any time"}, {"15m", "Last 15 minutes"}, {"1h", "Last hour"}, {"24h", "Last 24 hours"},
		{"168h", "Last 7 days"}, {"720h", "Last 30 days"}}
)

// logQuery turns the form into a request log query; problems are shown
// beside the form rather than failing the page.
func (d *Dashboard) logQuery(r *http.Request) (logFilter, requestlogs.Query, []string) {
	v := r.URL.Query()
	f := logFilter{
		Status: strings.ToLower(strings.TrimSpace(v.Get("status"))), Method: strings.ToUpper(strings.TrimSpace(v.Get("method"))),
		Path: strings.TrimSpace(v.Get("path")), Key: strings.TrimSpace(v.Get("key")), Since: v.Get("since"),
		From: v.Get("from"), To: v.Get("to"), RequestID: strings.TrimSpace(v.Get("request_id")),
		ErrorCode: strings.TrimSpace(v.Get("error_code")),
	}
	q := requestlogs.Query{Limit: pageSize}
	var problems []string
	if f.Status != "" {
		switch {
		case !statusFilterRe.MatchString(f.Status):
			problems = append(problems, "Status must be a code such as 404 or a class such as 4xx.")
		case strings.HasSuffix(f.Status, "xx"):
			q.StatusClass = int(f.Status[0] - '0')
		default:
			q.Status, _ = strconv.Atoi(f.Status)
		}
	}
	if f.Method != "" {
		if methodFilterRe.MatchString(f.Method) {
			q.Method = f.Method
		} else {
			problems = append(problems, "Method must be an HTTP method such as POST.")
		}
	}
	if f.Path != "" {
		if strings.HasPrefix(f.Path, "/") && len(f.Path) <= 2048 {
			q.PathPrefix = f.Path
		} else {
			problems = append(problems, "Path must start with /.")
		}
	}
	if f.Key != "" {
		if ids.Valid(f.Key, ids.Key) {
			q.APIKey = f.Key
		} else {
			problems = append(problems, "API key must be a key id (key_…); the key list shows them.")
		}
	}
	if f.RequestID != "" {
		if ids.Valid(f.RequestID, ids.Request) {
			q.RequestID = f.RequestID
		} else {
			problems = append(problems, "Request id must look like req_… (the Request-Id response header).")
		}
	}
	if f.ErrorCode != "" {
		if errorCodeRe.MatchString(f.ErrorCode) {
			q.ErrorCode = f.ErrorCode
		} else {
			problems = append(problems, "Error code must look like resource_missing.")
		}
	}
	if dur, ok := parseChoice(f.Since, sinceChoices); ok && dur > 0 {
		t := d.now().Add(-dur)
		q.CreatedGTE = &t
	} else if !ok {
		problems = append(problems, "Choose a time range from the list.")
	}
	for _, c := range []struct {
		v   string
		dst **time.Time
		nm  string
	}{{f.From, &q.CreatedGTE, "From"}, {f.To, &q.CreatedLT, "To"}} {
		if c.v == "" {
			continue
		}
		t, err := time.Parse("2006-01-02T15:04", c.v)
		if err != nil {
			problems = append(problems, c.nm+" must be a date and time (UTC).")
			continue
		}
		*c.dst = &t
	}
	if a := v.Get("after"); ids.Valid(a, ids.Request) {
		q.StartingAfter = a
	} else if b := v.Get("before"); ids.Valid(b, ids.Request) {
		q.EndingBefore = b
	}
	return f, q, problems
}

// methodChoices are the method filter's options: the common methods, and
// the current filter's when it is another, so that submitting the form
// again keeps it.
func methodChoices(current string) []string {
	methods := []string{"GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS"}
	if methodFilterRe.MatchString(current) && !slices.Contains(methods, current) {
		methods = append(methods, current)
	}
	return methods
}

func (d *Dashboard) logsPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	f, q, problems := d.logQuery(r)
	data := map[string]any{"F": f, "Problems": problems, "SinceChoices": sinceChoices, "Methods": methodChoices(f.Method)}
	if len(problems) == 0 {
		list, more, err := requestlogs.List(r.Context(), d.cfg.DB, s.OrgID, s.Livemode, q)
		if err != nil && !strings.Contains(err.Error(), "no such request log") {
			return err
		}
		data["Logs"] = list
		labels, err := d.keyLabels(r.Context(), s)
		if err != nil {
			return err
		}
		data["KeyLabels"] = labels
		p := page{}
		if len(list) > 0 {
			if more || q.EndingBefore != "" {
				p.After = list[len(list)-1].ID
			}
			if q.StartingAfter != "" || (q.EndingBefore != "" && more) {
				p.Before = list[0].ID
			}
		}
		data["Pager"] = pageLinks(r, p)
	}
	capture, err := d.cfg.Keys.BodyCapture(r.Context(), s.OrgID, apikey.Environment(s.Env()))
	if err != nil {
		return err
	}
	data["BodyCapture"], data["MayChangeBodyCapture"] = capture, mayChangeBodyCapture(s) == nil
	d.render(w, r, s, http.StatusOK, "logs.html", "Request logs", "logs", data)
	return nil
}

// mayChangeBodyCapture is who may turn body capture on or off: admins in
// sandbox, only owners in live, where bodies hold customers' data.
func mayChangeBodyCapture(s *Session) error {
	if s.Livemode && s.Role != accounts.RoleOwner {
		return errForbidden("Only owners can turn body capture on or off in live mode.")
	}
	if !s.CanAdmin() {
		return errForbidden("Only admins and owners can turn body capture on or off.")
	}
	return nil
}

func (d *Dashboard) setBodyCapture(w http.ResponseWriter, r *http.Request, s *Session) error {
	if err := mayChangeBodyCapture(s); err != nil {
		return err
	}
	var on bool
	switch r.PostFormValue("capture") {
	case "on":
		on = true
	case "off":
	default:
		return errBadRequest("Choose on or off.")
	}
	if _, err := d.cfg.Keys.SetBodyCapture(r.Context(), s.Actor(), s.OrgID, apikey.Environment(s.Env()), on); err != nil {
		return err
	}
	msg := "Body capture is off in " + s.modeName() + ": new request logs keep no bodies."
	if on {
		msg = "Body capture is on in " + s.modeName() + ": new request logs keep redacted request and response bodies."
	}
	redirect(w, r, "/logs", msg)
	return nil
}

// header is one header of a logged request or response, for display.
type header struct{ Name, Value string }

func sortedHeaders(m map[string]string) []header {
	out := make([]header, 0, len(m))
	for k, v := range m {
		out = append(out, header{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (d *Dashboard) logPage(w http.ResponseWriter, r *http.Request, s *Session) error {
	id := r.PathValue("id") // a request id: wrap checked it
	o, err := requestlogs.Get(r.Context(), d.cfg.DB, s.OrgID, s.Livemode, id)
	if errors.Is(err, requestlogs.ErrNotFound) {
		return errNotFound()
	}
	if err != nil {
		return err
	}
	// A replay ran nothing: its trace is the execution it replays, which
	// its response names.
	traceOf := id
	if orig := o.ResponseHeaders["Original-Request-Id"]; o.IdempotentReplayed && ids.Valid(orig, ids.Request) {
		traceOf = orig
	}
	trace, err := d.eventsOfRequest(r.Context(), s, traceOf)
	if err != nil {
		return err
	}
	// Other requests that carried the same Idempotency-Key: the original
	// and its replays.
	var related []requestlogs.Object
	if o.IdempotencyKey != nil {
		related, err = d.sameIdempotencyKey(r, s, o)
		if err != nil {
			return err
		}
	}
	labels, err := d.keyLabels(r.Context(), s)
	if err != nil {
		return err
	}
	d.render(w, r, s, http.StatusOK, "log.html", o.Method+" "+o.Path, "logs", map[string]any{
		"Log": o, "RequestHeaders": sortedHeaders(o.RequestHeaders), "ResponseHeaders": sortedHeaders(o.ResponseHeaders),
		"Trace": trace, "TraceOf": traceOf, "Related": related, "KeyLabels": labels,
	})
	return nil
}

// sameIdempotencyKey finds the requests with o's Idempotency-Key within a
// day of it (idempotency records live 24 hours).
func (d *Dashboard) sameIdempotencyKey(r *http.Request, s *Session, o requestlogs.Object) ([]requestlogs.Object, error) {
	rows, err := d.cfg.DB.Query(r.Context(), `SELECT request_id FROM request_logs
		WHERE organization_id = $1 AND livemode = $2 AND idempotency_key = $3
		  AND created_at >= $4 AND created_at < $5 AND request_id <> $6
		ORDER BY created_at LIMIT 20`, s.OrgID, s.Livemode, *o.IdempotencyKey,
		o.CreatedAt.Add(-24*time.Hour), o.CreatedAt.Add(24*time.Hour), o.ID)
	if err != nil {
		return nil, err
	}
	var idList []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		idList = append(idList, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []requestlogs.Object
	for _, id := range idList {
		x, err := requestlogs.Get(r.Context(), d.cfg.DB, s.OrgID, s.Livemode, id)
		if err == nil {
			out = append(out, x)
		}
	}
	return out, nil
}

// keyLabels names the session's environment's API keys by id, as people
// know them (keys.Key.Label).
func (d *Dashboard) keyLabels(ctx context.Context, s *Session) (map[string]string, error) {
	list, err := d.cfg.Keys.List(ctx, s.OrgID, apikey.Environment(s.Env()))
	if err != nil {
		return nil, err
	}
	labels := make(map[string]string, len(list))
	for _, k := range list {
		labels[k.ID] = k.Label()
	}
	return labels, nil
}
