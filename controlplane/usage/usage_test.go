package usage

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/controlplane/router"
	"github.com/gatehouse/gatehouse/controlplane/server"
	"github.com/gatehouse/gatehouse/internal/identity"
	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

var testSecret = []byte("usage-test-identity-secret")

const (
	key1 = "key_1111111111111111111111"
	key2 = "key_2222222222222222222222"
	keyL = "key_LLLLLLLLLLLLLLLLLLLLLL"
	keyB = "key_BBBBBBBBBBBBBBBBBBBBBB"
)

func TestUsage(t *testing.T) {
	db, _ := testenv.Pool(t)
	now := time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)
	h := server.New(server.Config{IdentitySecret: testSecret,
		API: []router.Routes{New(db, nil, func() time.Time { return now })}}).Handler()

	for _, r := range []struct {
		org  string
		live bool
		key  string
		day  string
		q    int64
	}{
		{"org_A", false, key1, "2026-11-27", 5},
		{"org_A", false, key1, "2026-11-26", 7},
		{"org_A", false, key2, "2026-11-26", 11},
		{"org_A", false, key1, "2026-10-01", 100}, // outside the default 30 days
		{"org_A", true, keyL, "2026-11-27", 1000},
		{"org_B", false, keyB, "2026-11-27", 10000},
	} {
		_, err := db.Exec(context.Background(), `INSERT INTO usage_records (organization_id, livemode, api_key_id, metric, day, quantity)
			VALUES ($1, $2, $3, 'requests', $4, $5)`, r.org, r.live, r.key, r.day, r.q)
		if err != nil {
			t.Fatal(err)
		}
	}
	orgA := identity.Identity{OrgID: "org_A", KeyID: key1, Scopes: []string{"*"}}
	get := func(id identity.Identity, target string) (int, string) {
		req := httptest.NewRequest("GET", target, nil)
		id.RequestID = ids.New(ids.Request)
		identity.NewSigner(testSecret, nil).Apply(req, id)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		b, _ := io.ReadAll(rec.Body)
		return rec.Code, string(b)
	}
	// summary renders data as "metric key date quantity" lines.
	summary := func(t *testing.T, body string) []string {
		t.Helper()
		var l struct {
			Object string
			URL    string
			Data   []Record
		}
		if err := json.Unmarshal([]byte(body), &l); err != nil || l.Object != "list" || l.URL != "/v1/usage" {
			t.Fatalf("not a list: %s", body)
		}
		var out []string
		for _, r := range l.Data {
			k, d := "-", "-"
			if r.APIKey != nil {
				k = *r.APIKey
			}
			if r.Date != nil {
				d = *r.Date
			}
			out = append(out, fmt.Sprintf("%s %s %s %d %v", r.Metric, k, d, r.Quantity, r.Livemode))
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		who   identity.Identity
		query string
		want  []string
	}{
		{"default: last 30 days per key and day", orgA, "", []string{
			"requests " + key1 + " 2026-11-27 5 false", "requests " + key1 + " 2026-11-26 7 false", "requests " + key2 + " 2026-11-26 11 false"}},
		{"group by day", orgA, "?group_by=day", []string{"requests - 2026-11-27 5 false", "requests - 2026-11-26 18 false"}},
		{"group by key", orgA, "?group_by=key", []string{"requests " + key1 + " - 12 false", "requests " + key2 + " - 11 false"}},
		{"dates", orgA, "?start=2026-10-01&end=2026-11-26&group_by=key", []string{"requests " + key1 + " - 107 false", "requests " + key2 + " - 11 false"}},
		{"unix seconds", orgA, fmt.Sprintf("?start=%d&end=%d", now.Unix(), now.Unix()), []string{"requests " + key1 + " 2026-11-27 5 false"}},
		{"one key", orgA, "?api_key=" + key2, []string{"requests " + key2 + " 2026-11-26 11 false"}},
		{"metric", orgA, "?metric=bytes", nil},
		{"live is separate", identity.Identity{OrgID: "org_A", Livemode: true, Scopes: []string{"usage:read"}}, "", []string{"requests " + keyL + " 2026-11-27 1000 true"}},
		{"another tenant", identity.Identity{OrgID: "org_C", Scopes: []string{"*"}}, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := get(tc.who, "/v1/usage"+tc.query)
			if status != 200 {
				t.Fatalf("got %d %s", status, body)
			}
			got := summary(t, body)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %q\nwant %q", got, tc.want)
			}
		})
	}
	t.Run("pages", func(t *testing.T) {
		// 3 metrics × 2 keys × 4 days more, so that every grouping has
		// pages of 2 to walk through in both directions.
		for _, m := range []string{"a_metric", "requests", "z_metric"} {
			for _, k := range []string{key1, key2} {
				for d := 20; d < 24; d++ {
					if _, err := db.Exec(context.Background(), `INSERT INTO usage_records (organization_id, livemode, api_key_id, metric, day, quantity)
						VALUES ('org_A', false, $1, $2, $3, 1) ON CONFLICT DO NOTHING`, k, m, fmt.Sprintf("2026-11-%d", d)); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		type page struct {
			HasMore bool `json:"has_more"`
			Data    []Record
		}
		read := func(query string) page {
			t.Helper()
			status, body := get(orgA, "/v1/usage"+query)
			var p page
			if err := json.Unmarshal([]byte(body), &p); status != 200 || err != nil {
				t.Fatalf("%s: %d %s", query, status, body)
			}
			return p
		}
		for _, group := range []string{"", "day", "key"} {
			by := ""
			if group != "" {
				by = "&group_by=" + group
			}
			all := read("?limit=100" + by)
			if all.HasMore || len(all.Data) < 6 {
				t.Fatalf("group_by=%s: %d records in one page", group, len(all.Data))
			}
			var forward []string
			for cursor := ""; ; {
				p := read("?limit=2" + by + cursor)
				forward = append(forward, idsOf(p.Data)...)
				if !p.HasMore {
					break
				}
				cursor = "&starting_after=" + p.Data[len(p.Data)-1].ID
			}
			var backward []string
			for cursor := "&ending_before=" + all.Data[len(all.Data)-1].ID; ; {
				p := read("?limit=2" + by + cursor)
				backward = append(idsOf(p.Data), backward...)
				if !p.HasMore {
					break
				}
				cursor = "&ending_before=" + p.Data[0].ID
			}
			want := idsOf(all.Data)
			if len(slices.Compact(slices.Sorted(slices.Values(want)))) != len(want) {
				t.Errorf("group_by=%s: ids are not unique: %v", group, want)
			}
			if fmt.Sprint(forward) != fmt.Sprint(want) {
				t.Errorf("group_by=%s: pages forward\n%v\nwant\n%v", group, forward, want)
			}
			if fmt.Sprint(append(backward, want[len(want)-1])) != fmt.Sprint(want) {
				t.Errorf("group_by=%s: pages backward\n%v\nwant\n%v", group, backward, want[:len(want)-1])
			}
		}
		// A cursor at the edge of what a date can be (Postgres has no year
		// 0) is a position like any other.
		year0 := recordID(position{day: "0000-01-01", metric: "requests"})
		if got := read("?starting_after=" + year0).Data; len(got) != 0 {
			t.Errorf("after year 0: %d records", len(got))
		}
		if got := read("?ending_before=" + year0).Data; len(got) != router.DefaultListLimit {
			t.Errorf("before year 0 (every record is newer): %d records", len(got))
		}
		if got := read("").Data; len(got) != router.DefaultListLimit {
			t.Errorf("a page without limit has %d records, want %d", len(got), router.DefaultListLimit)
		}
	})
	t.Run("dates are ISO whatever the DateStyle", func(t *testing.T) {
		conn, err := db.Acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Release()
		if _, err := conn.Exec(context.Background(), "SET DateStyle = 'German, DMY'"); err != nil {
			t.Fatal(err)
		}
		defer conn.Exec(context.Background(), "RESET DateStyle")
		q, err := ParseQuery(map[string][]string{"group_by": {"day"}}, now)
		if err != nil {
			t.Fatal(err)
		}
		recs, _, err := List(context.Background(), conn, "org_A", false, q)
		if err != nil || len(recs) == 0 || recs[0].Date == nil || *recs[0].Date != "2026-11-27" {
			t.Fatalf("got %+v, %v", recs, err)
		}
	})
	for _, tc := range []struct {
		name, query string
		status      int
		code, param string
		scopes      []string
	}{
		{"scope", "", 403, "scope_missing", "", []string{"logs:read"}},
		{"bad date", "?start=2026-13-01", 400, "parameter_invalid", "start", nil},
		{"start after end", "?start=2026-11-27&end=2026-11-01", 400, "parameter_invalid", "start", nil},
		{"too long", "?start=2024-01-01&end=2026-01-01", 400, "parameter_invalid", "start", nil},
		{"group_by", "?group_by=month", 400, "parameter_invalid", "group_by", nil},
		{"api_key", "?api_key=sk_test_x", 400, "parameter_invalid", "api_key", nil},
		{"unknown", "?page=3", 400, "parameter_unknown", "page", nil},
		{"limit", "?limit=101", 400, "parameter_invalid", "limit", nil},
		{"a cursor that is no record", "?starting_after=ur_" + "bm9wZQ", 400, "parameter_invalid", "starting_after", nil},
		{"another object's id", "?ending_before=" + key1, 400, "parameter_invalid", "ending_before", nil},
		{"a record of another grouping", "?group_by=key&starting_after=" + recordID(position{day: "2026-11-27", metric: "requests", key: key1}),
			400, "parameter_invalid", "starting_after", nil},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			id := orgA
			if tc.scopes != nil {
				id.Scopes = tc.scopes
			}
			status, body := get(id, "/v1/usage"+tc.query)
			var e struct{ Error map[string]string }
			_ = json.Unmarshal([]byte(body), &e)
			if status != tc.status || e.Error["code"] != tc.code || e.Error["param"] != tc.param {
				t.Fatalf("got %d %s", status, body)
			}
		})
	}
}

func idsOf(recs []Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.ID)
	}
	return out
}
