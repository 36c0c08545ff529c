package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/gatehouse/gatehouse/internal/whsign"
)

// receiver is the customers' webhook endpoint: one loopback server, one
// path per scenario. It answers 200 to everything and records, per event,
// how often it arrived and under which webhook-id.
type receiver struct {
	srv *httptest.Server

	mu      sync.Mutex
	secrets map[string]string // path → whsec_ secret
	paths   map[string]*pathLog
}

type pathLog struct {
	first    map[string]string // event id → webhook-id of its first delivery
	count    map[string]int
	requests int
	mismatch int // a repeat of an event under another webhook-id
	badSig   int
}

func newReceiver() *receiver {
	rc := &receiver{secrets: map[string]string{}, paths: map[string]*pathLog{}}
	rc.srv = httptest.NewServer(http.HandlerFunc(rc.serve))
	return rc
}

func (rc *receiver) close() { rc.srv.Close() }

// url is where a scenario's endpoint points.
func (rc *receiver) url(path string) string { return rc.srv.URL + path }

func (rc *receiver) register(path, secret string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.secrets[path] = secret
	rc.paths[path] = &pathLog{first: map[string]string{}, count: map[string]int{}}
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	var ev struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(body, &ev)
	rc.mu.Lock()
	secret := rc.secrets[r.URL.Path]
	pl := rc.paths[r.URL.Path]
	rc.mu.Unlock()
	sigErr := error(nil)
	if secret != "" {
		sigErr = whsign.Verify(secret, r.Header, body, 5*time.Minute, time.Now())
	}
	if pl != nil {
		id := r.Header.Get("Webhook-Id")
		rc.mu.Lock()
		pl.requests++
		if sigErr != nil || strings.TrimSpace(ev.ID) == "" {
			pl.badSig++
		}
		if f, ok := pl.first[ev.ID]; ok {
			if f != id {
				pl.mismatch++
			}
		} else {
			pl.first[ev.ID] = id
		}
		pl.count[ev.ID]++
		rc.mu.Unlock()
	}
	w.WriteHeader(http.StatusOK)
}

// deliveryStats of one path.
type deliveryStats struct {
	Distinct int `json:"distinct_events"`
	Requests int `json:"requests"`
	// Duplicates are deliveries beyond the first per event (at-least-once).
	Duplicates int `json:"duplicates"`
	// DuplicatesOtherWebhookID must be 0: a receiver deduplicates on
	// webhook-id, which is stable across retries.
	DuplicatesOtherWebhookID int `json:"duplicates_with_other_webhook_id"`
	BadSignatures            int `json:"bad_signatures"`
}

func (rc *receiver) stats(path string) deliveryStats {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	pl := rc.paths[path]
	if pl == nil {
		return deliveryStats{}
	}
	return deliveryStats{Distinct: len(pl.first), Requests: pl.requests, Duplicates: pl.requests - len(pl.first),
		DuplicatesOtherWebhookID: pl.mismatch, BadSignatures: pl.badSig}
}

// missing returns the ids of want that path has not received.
func (rc *receiver) missing(path string, want []string) []string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	pl := rc.paths[path]
	var out []string
	for _, id := range want {
		if pl == nil || pl.count[id] == 0 {
			out = append(out, id)
		}
	}
	return out
}
