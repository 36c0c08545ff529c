package sampleapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap/zaptest"

	"github.com/gatehouse/gatehouse/internal/ids"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// Cursors compare ids with < and >, which only follows creation order under
// byte-wise ("C") collation; a database created with en_US.UTF-8 would sort
// 'a' before 'B'. Migration 0002 pins the column's collation so that list
// order does not depend on how the database was created.
func TestCustomerIDsUseByteOrder(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Pool(t)
	var collation string
	err := pool.QueryRow(context.Background(), `
		SELECT coalesce(collation_name, '') FROM information_schema.columns
		WHERE table_name = 'customers' AND column_name = 'id'`).Scan(&collation)
	if err != nil {
		t.Fatal(err)
	}
	if collation != "C" {
		t.Fatalf("customers.id collation = %q, want C", collation)
	}
	// And so a list puts the later id ("…a…" > "…B…" byte-wise) first.
	st := &store{pool: pool}
	older, newer := "cus_0000000B00000000000000", "cus_0000000a00000000000000"
	for _, id := range []string{older, newer} {
		if err := st.insert(context.Background(), "org_A", customer{ID: id, CreatedAt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	page, _, err := st.list(context.Background(), "org_A", false, listQuery{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 2 || page[0].ID != newer || page[1].ID != older {
		t.Fatalf("list order = %v, want %s then %s", page, newer, older)
	}
}

func TestRunStopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	pool, _ := testenv.Pool(t)
	s := NewServer(Config{Addr: "127.0.0.1:0", IdentitySecret: testSecret}, pool, zaptest.NewLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
}

// While Postgres cannot be reached every endpoint that needs it answers 503
// dependency_unavailable with Retry-After, as the control plane does, so
// clients and the gateway retry instead of reporting a bug of ours.
func TestDatabaseUnavailable(t *testing.T) {
	t.Parallel()
	down, err := pgxpool.New(context.Background(), "postgres://u:p@"+testenv.FreeAddr(t)+"/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(down.Close)
	e := &env{t: t, handler: NewServer(Config{IdentitySecret: testSecret}, down, zaptest.NewLogger(t)).Handler()}
	cus := "/v1/customers/" + ids.New(ids.Customer)
	for _, tc := range []struct {
		name string
		req  request
	}{
		{"list", request{method: http.MethodGet, target: "/v1/customers"}},
		{"create", request{method: http.MethodPost, target: "/v1/customers", contentType: "application/json", body: `{"name":"Ada"}`}},
		{"get", request{method: http.MethodGet, target: cus}},
		{"update", request{method: http.MethodPost, target: cus, contentType: "application/json", body: `{"name":"Ada"}`}},
		{"delete", request{method: http.MethodDelete, target: cus}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.id = &orgA
			res := e.do(tc.req)
			res.assertError(t, wantError{http.StatusServiceUnavailable, "api_error", "dependency_unavailable", ""})
			if ra := res.header.Get("Retry-After"); ra != "1" {
				t.Errorf("Retry-After = %q, want 1", ra)
			}
		})
	}
}

// A request that lost a lock conflict to a concurrent one (a deadlock, a
// serialization failure) is a 429 to retry; other failures stay a 500.
func TestFailReadsPostgresErrors(t *testing.T) {
	t.Parallel()
	s := NewServer(Config{IdentitySecret: testSecret}, nil, zaptest.NewLogger(t))
	for _, tc := range []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{"deadlock", fmt.Errorf("updating customer: %w", &pgconn.PgError{Code: "40P01"}), 429, "lock_timeout", "1"},
		{"too many connections", fmt.Errorf("listing customers: %w", &pgconn.PgError{Code: "53300"}), 503, "dependency_unavailable", "1"},
		{"refused statement", fmt.Errorf("inserting customer: %w", &pgconn.PgError{Code: "23505"}), 500, "internal_error", ""},
		{"not postgres", errors.New("boom"), 500, "internal_error", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			s.fail(w, httptest.NewRequest(http.MethodGet, "/v1/customers", nil), tc.err)
			var body struct{ Error map[string]string }
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if w.Code != tc.status || body.Error["code"] != tc.code || w.Header().Get("Retry-After") != tc.retryAfter {
				t.Errorf("= %d %q Retry-After %q, want %d %q %q", w.Code, body.Error["code"],
					w.Header().Get("Retry-After"), tc.status, tc.code, tc.retryAfter)
			}
		})
	}
}

// A connection to Postgres lost after the INSERT was sent may have lost
// only the answer: the customer can exist. That is no 503 with
// Retry-After, which tells the gateway's idempotency (and any client) that
// nothing was done, so that a retry with the same Idempotency-Key would
// create the customer a second time.
func TestLostAnswerIsNoRetryLater(t *testing.T) {
	t.Parallel()
	pool, dsn := testenv.Pool(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := cutAfterInsert(t, u.Host)
	u.Host = proxy
	cut, err := pgxpool.New(context.Background(), u.String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cut.Close)
	e := &env{t: t, handler: NewServer(Config{IdentitySecret: testSecret}, cut, zaptest.NewLogger(t)).Handler()}

	res := e.do(request{id: &orgA, method: http.MethodPost, target: "/v1/customers",
		contentType: "application/json", body: `{"name":"Ada"}`})
	var n int
	if err := pool.QueryRow(context.Background(), `SELECT count(*) FROM customers WHERE name = 'Ada'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d customers stored, want the 1 whose answer was lost (response %d %s)", n, res.status, res.raw)
	}
	if res.status == http.StatusServiceUnavailable && res.header.Get("Retry-After") != "" {
		t.Fatalf("the customer was created, but the answer is %d with Retry-After %q: %s",
			res.status, res.header.Get("Retry-After"), res.raw)
	}
	if res.status < 500 {
		t.Fatalf("status %d, want a 5xx: %s", res.status, res.raw)
	}
}

// cutAfterInsert is a TCP proxy to the Postgres at addr that passes
// everything on but closes the connection, instead of passing on Postgres'
// answer, once an INSERT INTO customers has completed.
func cutAfterInsert(t *testing.T, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", addr)
			if err != nil {
				client.Close()
				continue
			}
			var inserting atomic.Bool
			go func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := client.Read(buf)
					if n > 0 {
						if bytes.Contains(buf[:n], []byte("INSERT INTO customers")) {
							inserting.Store(true)
						}
						if _, err := server.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						server.Close()
						return
					}
				}
			}()
			go func() {
				buf := make([]byte, 64<<10)
				for {
					n, err := server.Read(buf)
					if n > 0 && inserting.Load() && bytes.Contains(buf[:n], []byte("INSERT 0 1")) {
						client.Close()
						server.Close()
						return
					}
					if n > 0 {
						if _, err := client.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						client.Close()
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}
