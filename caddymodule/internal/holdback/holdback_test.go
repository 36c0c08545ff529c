package holdback

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHoldsBackThenStreamsPastTheLimit(t *testing.T) {
	rec := httptest.NewRecorder()
	hw := New(rec, new(bytes.Buffer), 10, nil)

	hw.WriteHeader(http.StatusCreated)
	_, _ = hw.Write([]byte("12345"))
	_ = hw.FlushError()
	if rec.Flushed || rec.Body.Len() != 0 || hw.Streamed || !hw.Held() {
		t.Fatal("a response under the limit reached the client before its release")
	}
	_, _ = hw.Write([]byte("67890"))
	if hw.Streamed {
		t.Fatal("exactly the limit must still be held")
	}
	_, _ = hw.Write([]byte("X"))
	if !hw.Streamed || rec.Code != http.StatusCreated || rec.Body.String() != "1234567890X" {
		t.Fatalf("after the limit: streamed=%v code=%d body=%q", hw.Streamed, rec.Code, rec.Body.String())
	}
	_, _ = hw.ReadFrom(strings.NewReader("YZ"))
	if rec.Body.String() != "1234567890XYZ" {
		t.Fatalf("ReadFrom bypassed the buffer logic: %q", rec.Body.String())
	}
}

func TestReleaseSendsStatusAndBodyOnce(t *testing.T) {
	rec := httptest.NewRecorder()
	hw := New(rec, new(bytes.Buffer), 100, nil)
	hw.Header().Set("Content-Type", "application/json")
	hw.WriteHeader(http.StatusCreated)
	_, _ = hw.Write([]byte(`{"id":1}`))
	if rec.Code != http.StatusOK || rec.Body.Len() != 0 {
		t.Fatalf("status %d body %q before the release; want nothing sent", rec.Code, rec.Body.String())
	}
	if string(hw.Body()) != `{"id":1}` {
		t.Fatalf("Body() = %q", hw.Body())
	}
	hw.Release()
	hw.Release()
	if rec.Code != http.StatusCreated || rec.Body.String() != `{"id":1}` {
		t.Fatalf("after release: %d %q", rec.Code, rec.Body.String())
	}
	_, _ = hw.Write([]byte("+"))
	if rec.Body.String() != `{"id":1}+` {
		t.Fatalf("a write after the release must pass through: %q", rec.Body.String())
	}
}

// Only the statuses a handler wants are held; the others, and what cannot
// be held, go straight through.
func TestStreamsWhatIsNotWantedOrCannotBeHeld(t *testing.T) {
	only201 := func(s int) bool { return s == http.StatusCreated }
	for name, tc := range map[string]struct {
		header http.Header
		status int
		want   func(int) bool
	}{
		"declared too long":  {http.Header{"Content-Length": {"11"}}, http.StatusOK, nil},
		"server-sent events": {http.Header{"Content-Type": {"text/event-stream; charset=utf-8"}}, http.StatusOK, nil},
		"status not wanted":  {http.Header{}, http.StatusBadRequest, only201},
	} {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			for k, v := range tc.header {
				rec.Header()[k] = v
			}
			hw := New(rec, new(bytes.Buffer), 10, tc.want)
			hw.WriteHeader(tc.status)
			_, _ = hw.Write([]byte("abc"))
			if !hw.Streamed || rec.Code != tc.status || rec.Body.String() != "abc" {
				t.Fatalf("streamed=%v code=%d body=%q; want it passed straight through", hw.Streamed, rec.Code, rec.Body.String())
			}
		})
	}
	rec := httptest.NewRecorder()
	hw := New(rec, new(bytes.Buffer), 10, only201)
	hw.WriteHeader(http.StatusCreated)
	if hw.Streamed {
		t.Fatal("a wanted status was not held")
	}
}

// Drop forgets a held response, its headers included, so that an error
// answer in its place says nothing of it.
func TestDropRestoresTheHeadersOfBefore(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Request-Id", "req_1")
	hw := New(rec, new(bytes.Buffer), 100, nil)
	hw.Header().Set("Set-Cookie", "session=1")
	hw.Header().Set("Request-Id", "req_changed")
	hw.WriteHeader(http.StatusCreated)
	_, _ = hw.Write([]byte("held"))
	hw.Drop()
	hw.Release() // must not send anything now
	if h := rec.Header(); h.Get("Set-Cookie") != "" || h.Get("Request-Id") != "req_1" {
		t.Fatalf("headers after Drop: %v; want only those of before", h)
	}
	if rec.Code == http.StatusCreated || rec.Body.Len() != 0 {
		t.Fatalf("sent %d %q after Drop", rec.Code, rec.Body.String())
	}
}

// OnStream is told once, with the status, as the response starts to stream
// and before any of it reaches the client.
func TestOnStreamComesBeforeTheFirstByte(t *testing.T) {
	rec := httptest.NewRecorder()
	hw := New(rec, new(bytes.Buffer), 4, nil)
	var calls []int
	hw.OnStream = func(status int) {
		if rec.Body.Len() != 0 || rec.Code != http.StatusOK { // the recorder still at its defaults
			t.Errorf("OnStream after the client got something: %d %q", rec.Code, rec.Body.String())
		}
		calls = append(calls, status)
	}
	hw.WriteHeader(http.StatusAccepted)
	_, _ = hw.Write([]byte("1234"))
	_, _ = hw.Write([]byte("56"))
	_, _ = hw.Write([]byte("78"))
	hw.Release()
	if len(calls) != 1 || calls[0] != http.StatusAccepted || rec.Body.String() != "12345678" {
		t.Fatalf("OnStream calls %v, body %q", calls, rec.Body.String())
	}
}
