package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"
)

// stack is shared by the end-to-end tests of this package: starting four
// processes per test would dominate the suite's time.
var stack *Stack

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	bin, err := os.MkdirTemp("", "gatehouse-bin-")
	if err == nil {
		err = Build(bin)
	}
	if err == nil {
		stack, err = Start(ctx, Options{Bin: bin})
	}
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: starting the stack:", err)
		os.Exit(1)
	}
	// The processes run in process groups of their own, so a Ctrl-C (or a
	// TERM from make or CI) reaches only this binary: stop them before dying,
	// or they keep running, with their database and topics, until killed.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		stack.Stop()
		os.RemoveAll(bin)
		os.Exit(130)
	}()
	code := m.Run()
	if code != 0 {
		fmt.Fprintln(os.Stderr, stack.Logs())
	}
	stack.Stop()
	os.RemoveAll(bin)
	os.Exit(code)
}

// apiResponse is a decoded response of the public API.
type apiResponse struct {
	Status int
	Header http.Header
	Body   map[string]any
	Raw    string
}

// errObj is the error object of a failed response.
func (r apiResponse) errObj() map[string]any {
	e, _ := r.Body["error"].(map[string]any)
	return e
}

// call sends a request through the gateway.
func call(t *testing.T, method, path, key, contentType, body string, headers ...string) apiResponse {
	t.Helper()
	req, err := http.NewRequest(method, stack.Gateway.URL()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := apiResponse{Status: resp.StatusCode, Header: resp.Header, Raw: string(raw)}
	_ = json.Unmarshal(raw, &r.Body)
	return r
}

// seed creates a fresh tenant for a test.
func seed(t *testing.T) Tenant {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tn, err := stack.Seed(ctx, t.Name())
	if err != nil {
		t.Fatal(err)
	}
	return tn
}
