package dashboard

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/gatehouse/gatehouse/controlplane/audit"
	"github.com/gatehouse/gatehouse/internal/ids"
)

// The audit export holds every matching entry, however many: it stopped at
// 10,000 without a word in the file, its headers or the page. It reads the
// log a page at a time, and when a later page cannot be read the download
// fails instead of ending like a complete file.
func TestAuditExportHoldsEveryEntry(t *testing.T) {
	e := newEnv(t)
	b := e.signup("export@example.com", "Export Heavy")
	org := e.orgOf(b)
	ctx := context.Background()
	start := time.Now().Add(-48 * time.Hour)
	rows := make([][]any, 10050) // past the 10,000 the export once stopped at
	for i := range rows {
		at := start.Add(time.Duration(i) * time.Second)
		rows[i] = []any{ids.NewAt(ids.Audit, at), org, false, "cli", "ops", "api_key.updated", "api_key",
			"key_x", map[string]any{"n": i}, "", at}
	}
	if _, err := e.pool.CopyFrom(ctx, pgx.Identifier{"audit_logs"}, []string{"id", "organization_id", "livemode",
		"actor_type", "actor_id", "action", "target_type", "target_id", "data", "ip", "created_at"},
		pgx.CopyFromRows(rows)); err != nil {
		t.Fatal(err)
	}
	var want int // with the sign-up's own entries
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM audit_logs WHERE organization_id = $1
		AND (livemode = false OR livemode IS NULL)`, org).Scan(&want); err != nil || want <= len(rows) {
		t.Fatal(want, err)
	}

	p := b.get("/audit/export?format=csv")
	recs, err := csv.NewReader(strings.NewReader(p.body)).ReadAll()
	if p.status != http.StatusOK || err != nil {
		t.Fatalf("csv export: %d, %v", p.status, err)
	}
	if got := len(recs) - 1; got != want {
		t.Errorf("the CSV export has %d entries, want %d", got, want)
	}
	p = b.get("/audit/export?format=json")
	var out struct {
		Object string        `json:"object"`
		Data   []audit.Entry `json:"data"`
	}
	if err := json.Unmarshal([]byte(p.body), &out); err != nil || out.Object != "list" {
		t.Fatalf("json export: %v (%.200s)", err, p.body)
	}
	seen := map[string]bool{}
	for _, en := range out.Data {
		seen[en.ID] = true
	}
	if len(out.Data) != want || len(seen) != want {
		t.Errorf("the JSON export has %d entries (%d distinct), want %d", len(out.Data), len(seen), want)
	}

	// Over a slow link the export takes longer than a page may: each page
	// has its own deadline, not the whole download (it was cut off at the
	// dashboard's 30 s per request, the server's 60 s write timeout too).
	e.d.cfg.RequestTimeout = 300 * time.Millisecond
	began := time.Now()
	body, err := slowDownload(t, e, b, "/audit/export?format=csv")
	recs, _ = csv.NewReader(strings.NewReader(string(body))).ReadAll()
	if took := time.Since(began); err != nil || len(recs)-1 != want || took < 3*e.d.cfg.RequestTimeout {
		t.Errorf("a slow download took %s (%s a page) and got %d of %d entries: %v", took, e.d.cfg.RequestTimeout, len(recs)-1, want, err)
	}
	e.d.cfg.RequestTimeout = 30 * time.Second

	// The log becomes unreadable after the first page.
	for _, format := range []string{"csv", "json"} {
		e.d.cfg.Audit = audit.NewLog(&failAfter{Querier: e.pool, n: 1})
		resp, err := b.c.Get(e.srv.URL + "/audit/export?format=" + format)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err == nil {
			t.Errorf("%s: an export cut short by a database error downloaded as if complete", format)
		}
	}
	// An empty export is still a well-formed list.
	e.d.cfg.Audit = audit.NewLog(e.pool)
	p = b.get("/audit/export?format=json&action=webhook_endpoint.deleted")
	if err := json.Unmarshal([]byte(p.body), &out); err != nil || out.Data == nil || len(out.Data) != 0 {
		t.Fatalf("empty json export: %v %q", err, p.body)
	}
}

// failAfter answers n queries, then fails.
type failAfter struct {
	audit.Querier
	n int
}

func (f *failAfter) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if f.n == 0 {
		return nil, errors.New("connection lost")
	}
	f.n--
	return f.Querier.Query(ctx, sql, args...)
}

// slowDownload GETs path from e's dashboard with b's cookies over a link of
// about 1 MB/s: small socket buffers on both sides, and a reader that takes
// 50 KB every 50 ms, so the server's writes wait for it.
func slowDownload(t *testing.T, e *env, b *browser, path string) ([]byte, error) {
	t.Helper()
	srv := httptest.NewUnstartedServer(e.d)
	srv.Listener = smallBuffers{srv.Listener}
	srv.Start()
	defer srv.Close()
	req, _ := http.NewRequest("GET", srv.URL+path, nil)
	u, _ := url.Parse(e.srv.URL)
	for _, c := range b.c.Jar.Cookies(u) {
		req.AddCookie(c)
	}
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(32 << 10)
		}
		return c, err
	}}}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out bytes.Buffer
	for tick := time.NewTicker(50 * time.Millisecond); ; <-tick.C {
		switch _, err := io.CopyN(&out, resp.Body, 50<<10); err {
		case nil:
		case io.EOF:
			return out.Bytes(), nil
		default: // a download cut short: unexpected EOF
			return out.Bytes(), err
		}
	}
}

// smallBuffers gives accepted connections a small send buffer, so that a
// slow reader holds the server's writes back as a real link would.
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(32 << 10)
	}
	return c, err
}
