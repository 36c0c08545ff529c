package main

import (
	"testing"
	"time"
)

// A keyed create sent in the last moment before Redis froze and answered
// after it may meet the fault; one answered before it may not, and a plain
// request never may.
func TestKeyedMay503CountsRequestsInFlightAtTheFault(t *testing.T) {
	faultAt := time.Date(2026, 11, 29, 12, 0, 8, 0, time.UTC)
	ok := keyedMay503(faultAt)
	refused := func(op opKind, phase string, sent time.Time, latency time.Duration) result {
		return result{Op: op, Phase: phase, Sent: sent, Latency: latency, Status: 503, Code: "idempotency_unavailable"}
	}
	if !ok(refused(opCreateKeyed, "before", faultAt.Add(-time.Millisecond), 500*time.Millisecond)) {
		t.Error("a keyed create in flight at the fault may get 503")
	}
	if ok(refused(opCreateKeyed, "before", faultAt.Add(-time.Second), 10*time.Millisecond)) {
		t.Error("a keyed create answered before the fault may not get 503")
	}
	if ok(refused(opCreatePlain, "fault", faultAt, time.Millisecond)) {
		t.Error("a plain create may never get 503 idempotency_unavailable")
	}
	if !ok(refused(opCreateKeyed, "fault", faultAt.Add(time.Second), time.Millisecond)) {
		t.Error("a keyed create during the fault may get 503")
	}
}
