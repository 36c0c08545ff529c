package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/gatehouse/gatehouse/internal/apierror"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

// failWith answers one request with Fail(err) and returns the response.
func failWith(t *testing.T, err error) (*http.Response, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	Fail(rec, httptest.NewRequest("GET", "/v1/events", nil), zap.NewNop(), "test", err)
	var body struct{ Error map[string]any }
	if jerr := json.Unmarshal(rec.Body.Bytes(), &body); jerr != nil {
		t.Fatalf("body %q: %v", rec.Body, jerr)
	}
	return rec.Result(), body.Error
}

// A request that fails because Postgres is unreachable, or because it lost a
// lock conflict to a concurrent one, tells the caller to retry instead of
// reporting an internal error.
func TestFailTellsTheCallerWhenToRetry(t *testing.T) {
	// Postgres unreachable: a real connection error from pgx.
	pool, err := pgxpool.New(context.Background(), "postgres://u:p@127.0.0.1:"+fmt.Sprint(testenv.FreePort(t))+"/db?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, dialErr := pool.Exec(ctx, "SELECT 1")
	if dialErr == nil {
		t.Fatal("a query on a closed port succeeded")
	}

	// A deadlock, as Postgres reports it.
	deadlock := fmt.Errorf("recovering deliveries: %w", &pgconn.PgError{Code: "40P01", Message: "deadlock detected"})

	for _, tc := range []struct {
		name       string
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{"postgres unreachable", fmt.Errorf("listing events: %w", dialErr), 503, "dependency_unavailable", "1"},
		{"deadlock", deadlock, 429, "lock_timeout", "1"},
		{"serialization failure", &pgconn.PgError{Code: "40001"}, 429, "lock_timeout", "1"},
		{"a value Postgres refuses", &pgconn.PgError{Code: "22021"}, 500, "internal_error", ""},
		{"our own error object", apierror.NotFound("event", "evt_1"), 404, "resource_missing", ""},
		{"anything else", errors.New("boom"), 500, "internal_error", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, e := failWith(t, tc.err)
			if resp.StatusCode != tc.status || e["code"] != tc.code {
				t.Errorf("%d %v, want %d %s", resp.StatusCode, e, tc.status, tc.code)
			}
			if got := resp.Header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After %q, want %q", got, tc.retryAfter)
			}
		})
	}
}
