package deliverer_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/gatehouse/gatehouse/deliverer"
	"github.com/gatehouse/gatehouse/internal/secretbox"
	"github.com/gatehouse/gatehouse/internal/testenv"
)

func TestHandlers(t *testing.T) {
	db, _ := testenv.Pool(t)
	brokers := testenv.Kafka(t)
	nowhere := testenv.FreeAddr(t)
	pgDown, err := pgxpool.New(context.Background(), "postgres://gatehouse@"+nowhere+"/none?connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pgDown.Close)

	healthy := newService(t, db, brokers).Handler()
	for _, tc := range []struct {
		name    string
		handler http.Handler
		path    string
		status  int
		body    []string // substrings the body must contain
	}{
		{"healthz", healthy, "/healthz", 200, []string{`"ok"`}},
		{"readyz with postgres and kafka up", healthy, "/readyz", 200, []string{`"ready"`}},
		{"readyz with kafka down", newService(t, db, []string{nowhere}).Handler(),
			"/readyz", 503, []string{"dependency_unavailable", "kafka"}},
		{"readyz with postgres down", newService(t, pgDown, brokers).Handler(),
			"/readyz", 503, []string{"dependency_unavailable", "postgres"}},
		{"readyz falls back to the next broker", newService(t, db, append([]string{nowhere}, brokers...)).Handler(),
			"/readyz", 200, []string{`"ready"`}},
		{"healthz with everything down", newService(t, pgDown, []string{nowhere}).Handler(),
			"/healthz", 200, []string{`"ok"`}},
		{"unknown path is an error object", healthy, "/nope", 404, []string{`"route_missing"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			tc.handler.ServeHTTP(rec, httptest.NewRequest("GET", tc.path, nil))
			if rec.Code != tc.status {
				t.Fatalf("status = %d, want %d: %s", rec.Code, tc.status, rec.Body)
			}
			for _, s := range tc.body {
				if !strings.Contains(rec.Body.String(), s) {
					t.Errorf("body %q lacks %q", rec.Body, s)
				}
			}
			if rec.Header().Get("Request-Id") == "" {
				t.Error("no Request-Id")
			}
			if tc.status >= 400 {
				var obj struct{ Error map[string]string }
				if err := json.Unmarshal(rec.Body.Bytes(), &obj); err != nil || obj.Error["request_id"] == "" {
					t.Errorf("not an error object with a request id: %s", rec.Body)
				}
			}
		})
	}

	// Readiness results show up in the metrics, next to the Go runtime's.
	rec := httptest.NewRecorder()
	healthy.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{`gatehouse_deliverer_dependency_up{dependency="kafka"} 1`,
		`gatehouse_deliverer_dependency_up{dependency="postgres"} 1`, "go_goroutines"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestWorkerStopsWithContext(t *testing.T) {
	e := newEnv(t)
	w, err := deliverer.NewWorker(e.config())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v, want nil on a cancelled context", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("worker ignored its context")
	}
}

func TestNewWorkerRequiresDependencies(t *testing.T) {
	if _, err := deliverer.NewWorker(deliverer.WorkerConfig{}); err == nil {
		t.Fatal("NewWorker accepted an empty configuration")
	}
}

// newService is a deliverer service over db and brokers with a valid
// worker configuration.
func newService(t *testing.T, db *pgxpool.Pool, brokers []string) *deliverer.Service {
	t.Helper()
	box, err := secretbox.New(testMasterKey)
	if err != nil {
		t.Fatal(err)
	}
	s, err := deliverer.New(deliverer.Config{DB: db, Brokers: brokers,
		Worker: deliverer.WorkerConfig{Box: box, SpoolDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestServeShutsDownOnContext(t *testing.T) {
	db, _ := testenv.Pool(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	svc := newService(t, db, []string{testenv.FreeAddr(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- svc.Serve(ctx, ln)
	}()
	resp, err := http.Get("http://" + ln.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "go_goroutines") {
		t.Fatalf("metrics = %d", resp.StatusCode)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after the context ended")
	}
}
