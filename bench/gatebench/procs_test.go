package main

import (
	"net"
	"os"
	"testing"
)

// The bench finds Kafka and Postgres by the port they listen on, whoever
// started them.
func TestListenerPID(t *testing.T) {
	for network, addr := range map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"} {
		ln, err := net.Listen(network, addr)
		if err != nil && network == "tcp6" {
			t.Logf("no IPv6 loopback here: %v", err)
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		port := portOf(ln.Addr().String())
		if got := listenerPID(port); got != os.Getpid() {
			t.Errorf("%s listener on %s: pid %d, want this process (%d)", network, port, got, os.Getpid())
		}
		ln.Close()
		if got := listenerPID(port); got != 0 {
			t.Errorf("%s: closed listener on %s still found: pid %d", network, port, got)
		}
	}
	if got := listenerPID("not a port"); got != 0 {
		t.Errorf("bad port: pid %d", got)
	}
}
