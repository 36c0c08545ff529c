package dashboard

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/apierror"
)

// view is what every page template receives.
type view struct {
	Title      string
	Nav        string
	S          *Session
	CSRF       string
	Now        time.Time
	GatewayURL string
	Flash      string
	Path       string
	// Back is the page with its query, for the environment switch.
	Back string
	Data any
}

func (d *Dashboard) parseTemplates() error {
	d.pages = map[string]*template.Template{}
	names, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return err
	}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" || base == "partials.html" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(assets,
			"templates/layout.html", "templates/partials.html", n)
		if err != nil {
			return fmt.Errorf("parsing %s: %w", n, err)
		}
		d.pages[base] = t
	}
	return nil
}

// render writes a page. The page is rendered to a buffer first so that a
// template failure becomes a clean 500 rather than half a page.
func (d *Dashboard) render(w http.ResponseWriter, r *http.Request, s *Session, status int, page, title, nav string, data any) {
	t, ok := d.pages[page]
	if !ok {
		d.log.Error("dashboard: unknown template", zap.String("page", page))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	v := view{Title: title, Nav: nav, S: s, Now: d.now(), GatewayURL: d.cfg.GatewayURL, Path: r.URL.Path, Back: r.URL.RequestURI(), Data: data}
	if s != nil {
		v.CSRF = s.CSRF + "." + s.context()
	} else {
		v.CSRF = d.preSessionToken(w, r)
	}
	if c, err := r.Cookie(flashCookie); err == nil {
		v.Flash, _ = url.QueryUnescape(c.Value)
		http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
			Secure: isTLS(r), SameSite: http.SameSiteLaxMode})
	}
	var buf bytes.Buffer
	if err := t.Execute(&buf, v); err != nil {
		d.log.Error("dashboard: rendering page", zap.String("page", page), zap.Error(err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	// Pages show tenant data (and sometimes a secret, once): never cache.
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

const flashCookie = "gh_flash"

// redirect ends a POST with a redirect to a page that shows msg once.
func redirect(w http.ResponseWriter, r *http.Request, to, msg string) {
	if msg != "" {
		http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: url.QueryEscape(msg), Path: "/", HttpOnly: true,
			Secure: isTLS(r), SameSite: http.SameSiteLaxMode, MaxAge: 60})
	}
	http.Redirect(w, r, to, http.StatusSeeOther)
}

// userMessage is the text of an error to show beside a form: the public
// error object's message for the user's mistakes, nothing for ours (the
// caller then fails the request as a 500).
func userMessage(err error) (string, bool) {
	ae := apierror.From(err)
	if ae.Status >= 500 {
		return "", false
	}
	return ae.Message, true
}

var funcs = template.FuncMap{
	"ts": func(v any) string { return utcText(v, "2006-01-02 15:04:05 UTC") },
	// tsShort is ts without the zone, for table cells under a "(UTC)"
	// heading.
	"tsShort": func(v any) string { return utcText(v, "2006-01-02 15:04:05") },
	"deliveryTable": func(rows []Delivery, showEndpoint bool) any {
		return struct {
			Rows         []Delivery
			ShowEndpoint bool
		}{rows, showEndpoint}
	},
	"tsInput": func(v any) string {
		t, ok := asTime(v)
		if !ok {
			return ""
		}
		return t.UTC().Format("2006-01-02T15:04")
	},
	"ago": func(now time.Time, v any) string {
		t, ok := asTime(v)
		if !ok {
			return "never"
		}
		return ago(now, t)
	},
	"deref": func(v any) any {
		switch p := v.(type) {
		case *string:
			if p == nil {
				return ""
			}
			return *p
		case *int:
			if p == nil {
				return ""
			}
			return *p
		case *int64:
			if p == nil {
				return ""
			}
			return *p
		case *float64:
			if p == nil {
				return ""
			}
			return *p
		case *bool:
			if p == nil {
				return ""
			}
			return *p
		}
		return v
	},
	"pretty": func(v any) string {
		var raw []byte
		switch x := v.(type) {
		case json.RawMessage:
			raw = x
		case []byte:
			raw = x
		case string:
			raw = []byte(x)
		case *string:
			if x == nil {
				return ""
			}
			raw = []byte(*x)
		default:
			b, _ := json.MarshalIndent(x, "", "  ")
			return string(b)
		}
		var out bytes.Buffer
		if json.Indent(&out, raw, "", "  ") != nil {
			return string(raw)
		}
		return out.String()
	},
	"statusClass": func(code any) string {
		var n int
		switch c := code.(type) {
		case int:
			n = c
		case *int:
			if c == nil {
				return "s0"
			}
			n = *c
		}
		switch {
		case n >= 500:
			return "s5"
		case n >= 400:
			return "s4"
		case n >= 300:
			return "s3"
		case n >= 200:
			return "s2"
		}
		return "s0"
	},
	"join":      strings.Join,
	"contains":  func(list []string, s string) bool { return indexOf(list, s) >= 0 },
	"hasPrefix": strings.HasPrefix,
	"add":       func(a, b int) int { return a + b },
	"docURL":    apierror.DocURL,
	"comma":     comma,
	"pct": func(a, b int64) string {
		if b == 0 {
			return "0%"
		}
		return strconv.FormatFloat(float64(a)*100/float64(b), 'f', 1, 64) + "%"
	},
	"query": func(base string, kv ...string) string {
		q := url.Values{}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] != "" {
				q.Set(kv[i], kv[i+1])
			}
		}
		if len(q) == 0 {
			return base
		}
		return base + "?" + q.Encode()
	},
	"ms": millis,
	// kv lists a map's entries by key, values as compact JSON (strings
	// bare), for audit details.
	"kv": func(m map[string]any) []header {
		out := make([]header, 0, len(m))
		for k, v := range m {
			var val string
			if str, ok := v.(string); ok {
				val = str
			} else {
				b, _ := json.Marshal(v)
				val = string(b)
			}
			out = append(out, header{k, val})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
		return out
	},
	// codeText renders `code` spans of the error catalogue's descriptions.
	"codeText": func(s string) template.HTML {
		parts := strings.Split(s, "`")
		var b strings.Builder
		for i, p := range parts {
			if i%2 == 1 && i < len(parts)-1 {
				b.WriteString("<code>" + template.HTMLEscapeString(p) + "</code>")
			} else {
				if i%2 == 1 {
					b.WriteString("`")
				}
				b.WriteString(template.HTMLEscapeString(p))
			}
		}
		return template.HTML(b.String())
	},
}

// pager holds the links to the neighbouring pages of a list.
type pager struct{ Prev, Next string }

// pageLinks keeps the list's filters and swaps the cursor.
func pageLinks(r *http.Request, p page) pager {
	link := func(key, id string) string {
		if id == "" {
			return ""
		}
		q := r.URL.Query()
		q.Del("after")
		q.Del("before")
		q.Set(key, id)
		return r.URL.Path + "?" + q.Encode()
	}
	return pager{Prev: link("before", p.Before), Next: link("after", p.After)}
}

func indexOf(list []string, s string) int {
	for i, x := range list {
		if x == s {
			return i
		}
	}
	return -1
}

func asTime(v any) (time.Time, bool) {
	switch t := v.(type) {
	case time.Time:
		return t, !t.IsZero()
	case *time.Time:
		if t == nil {
			return time.Time{}, false
		}
		return *t, true
	case int64:
		return time.Unix(t, 0), true
	case *int64:
		if t == nil {
			return time.Time{}, false
		}
		return time.Unix(*t, 0), true
	}
	return time.Time{}, false
}

func ago(now, t time.Time) string {
	d := now.Sub(t)
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = strconv.Itoa(int(d.Seconds())) + "s"
	case d < time.Hour:
		s = strconv.Itoa(int(d.Minutes())) + "m"
	case d < 48*time.Hour:
		s = strconv.Itoa(int(d.Hours())) + "h"
	default:
		s = strconv.Itoa(int(d.Hours()/24)) + "d"
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

func comma(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	if neg {
		s = s[1:]
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// millis shows a duration in milliseconds, in seconds from one second on
// ("30012.3 ms" reads as "30.0 s").
func millis(v float64) string {
	if v >= 1000 {
		return strconv.FormatFloat(v/1000, 'f', 1, 64) + " s"
	}
	return strconv.FormatFloat(v, 'f', 1, 64) + " ms"
}

// utcText formats a time (or a pointer to one) in UTC, "—" for none.
func utcText(v any, layout string) string {
	t, ok := asTime(v)
	if !ok {
		return "—"
	}
	return t.UTC().Format(layout)
}
