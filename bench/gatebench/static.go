package main

import (
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"time"
)

// staticUpstream is a trivial backend answering every request with the same
// customer JSON, so that the gateway's own cost is not hidden behind the
// sample API's database round trip.
type staticUpstream struct {
	addr string
	srv  *http.Server
}

const staticBody = `{"id":"cus_0bench0static0upstream0","object":"customer","created":1795000000,"livemode":true,"email":"bench@example.com","name":"Bench Customer","description":"benchmark fixture","phone":null,"metadata":{}}`

func startStatic() (*staticUpstream, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	body := []byte(staticBody)
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(body)
		}),
	}
	go func() { _ = srv.Serve(l) }()
	return &staticUpstream{addr: l.Addr().String(), srv: srv}, nil
}

func (s *staticUpstream) close() { _ = s.srv.Close() }

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return strings.TrimSpace(string(out)), err
}
