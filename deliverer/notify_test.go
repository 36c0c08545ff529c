package deliverer_test

import (
	"context"
	"net"
	"net/textproto"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gatehouse/gatehouse/deliverer"
)

// smtpSink is a minimal SMTP server: it speaks the protocol net/smtp needs
// (no STARTTLS, no AUTH) and keeps the envelope and data of each message.
type smtpSink struct {
	ln   net.Listener
	msgs chan smtpMsg
}

type smtpMsg struct {
	from string
	to   []string
	data string
}

func newSMTPSink(t *testing.T) *smtpSink {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpSink{ln: ln, msgs: make(chan smtpMsg, 10)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *smtpSink) serve(c net.Conn) {
	defer c.Close()
	tp := textproto.NewConn(c)
	_ = tp.PrintfLine("220 sink ESMTP")
	var m smtpMsg
	for {
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.SplitN(line, " ", 2)[0])
		switch {
		case cmd == "EHLO" || cmd == "HELO":
			_ = tp.PrintfLine("250 sink")
		case strings.HasPrefix(strings.ToUpper(line), "MAIL FROM:"):
			m = smtpMsg{from: strings.Trim(line[10:], "<> ")}
			_ = tp.PrintfLine("250 ok")
		case strings.HasPrefix(strings.ToUpper(line), "RCPT TO:"):
			m.to = append(m.to, strings.Trim(line[8:], "<> "))
			_ = tp.PrintfLine("250 ok")
		case cmd == "DATA":
			_ = tp.PrintfLine("354 go on")
			b, err := tp.ReadDotBytes()
			if err != nil {
				return
			}
			m.data = string(b)
			s.msgs <- m
			_ = tp.PrintfLine("250 queued")
		case cmd == "QUIT":
			_ = tp.PrintfLine("221 bye")
			return
		default:
			_ = tp.PrintfLine("250 ok")
		}
	}
}

func TestSMTPNotifier(t *testing.T) {
	sink := newSMTPSink(t)
	n := &deliverer.SMTPNotifier{
		Config: deliverer.SMTPConfig{Addr: sink.ln.Addr().String(), From: "alerts@gatehouse.test", To: []string{"ops@gatehouse.test"}},
		Recipients: func(ctx context.Context, org string) ([]string, error) {
			return []string{"owner@customer.test", "OPS@gatehouse.test", "evil@x.test\r\nBcc: all@x.test"}, nil
		},
	}
	err := n.Notify(context.Background(), deliverer.Alert{Kind: deliverer.AlertDisabled, OrganizationID: "org_1", Livemode: true,
		EndpointID: "we_1", URL: "https://hooks.customer.test/x", Message: "This webhook endpoint was disabled.", Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-sink.msgs:
		if m.from != "alerts@gatehouse.test" || strings.Join(m.to, ",") != "ops@gatehouse.test,owner@customer.test" {
			t.Fatalf("envelope from %s to %v", m.from, m.to)
		}
		for _, want := range []string{"Subject: [Gatehouse] Webhook endpoint we_1: endpoint disabled", "This webhook endpoint was disabled.",
			"https://hooks.customer.test/x", "live mode"} {
			if !strings.Contains(m.data, want) {
				t.Errorf("mail lacks %q:\n%s", want, m.data)
			}
		}
		if strings.Contains(m.data, "Bcc") {
			t.Error("header injection through a recipient")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no mail")
	}
	if (deliverer.SMTPConfig{}).Enabled() {
		t.Error("SMTP enabled without configuration")
	}
}

func TestFromEnv(t *testing.T) {
	t.Setenv("WEBHOOK_ALLOW_CIDRS", "loopback,10.0.0.0/8")
	t.Setenv("DELIVERY_SCHEDULE_LIVE", "1s,2s")
	t.Setenv("DELIVERY_CONCURRENCY", "7")
	t.Setenv("DELIVERY_TIMEOUT", "3s")
	t.Setenv("DELIVERY_ORG_CONCURRENCY", "5")
	t.Setenv("DELIVERY_DISABLE_AFTER", "off")
	t.Setenv("SMTP_ADDR", "mail:25")
	t.Setenv("SMTP_FROM", "a@b.test")
	t.Setenv("SMTP_TO", "x@b.test, y@b.test")
	t.Setenv("DATA_DIR", "/var/lib/gatehouse")
	e, err := deliverer.FromEnv()
	if err != nil {
		t.Fatal(err)
	}
	w := e.Worker
	if len(w.Policy.Allow) != 3 || w.LiveSchedule.String() != "1s,2s" || w.SandboxSchedule.String() != deliverer.DefaultSandboxSchedule.String() ||
		w.Concurrency != 7 || w.EndpointConcurrency != 10 || w.OrgConcurrency != 5 || w.DisableAfter >= 0 || w.Timeout != 3*time.Second || w.Lease != 30*time.Second ||
		w.SpoolDir != "/var/lib/gatehouse/deliverer-spool" || !e.SMTP.Enabled() || len(e.SMTP.To) != 2 || e.Addr != ":8083" {
		t.Fatalf("FromEnv = %+v", e)
	}
	// A typo or a value out of range is refused naming the variable; it
	// used to become the default silently (and -1s crashed the worker).
	for name, bad := range map[string]string{"WEBHOOK_ALLOW_CIDRS": "10.0.0.0/99", "DELIVERY_SCHEDULE_SANDBOX": "5s,never",
		"DELIVERY_TIMEOUT": "20", "DELIVERY_CONCURRENCY": "128x", "DELIVERY_ENDPOINT_CONCURRENCY": "5.5",
		"DELIVERY_LEASE": "1 m", "DELIVERY_POLL_INTERVAL": "-1s", "DELIVERY_DISABLE_AFTER": "5d", "DELIVERY_ORG_CONCURRENCY": "0"} {
		t.Run(name, func(t *testing.T) {
			old, had := os.LookupEnv(name)
			t.Setenv(name, bad)
			if _, err := deliverer.FromEnv(); err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("FromEnv with %s=%s: %v", name, bad, err)
			}
			if had {
				t.Setenv(name, old)
			}
		})
	}
}

// A mail server that accepts connections and never answers (hung, or a
// tarpit): an alert gives up at its deadline, and must let go of the
// connection and of the goroutine talking on it. Otherwise every alert
// while the server hangs keeps one socket and one goroutine for the life
// of the deliverer: the notifier's semaphore is released at the deadline,
// so the next alerts pile up more.
func TestSMTPNotifierLetsGoOfAHungServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { // never greets; notes when the client hangs up
				defer c.Close()
				_, _ = c.Read(make([]byte, 1))
				closed <- struct{}{}
			}()
		}
	}()
	n := &deliverer.SMTPNotifier{Config: deliverer.SMTPConfig{Addr: ln.Addr().String(), From: "alerts@gatehouse.test", To: []string{"ops@gatehouse.test"}}}
	const alerts = 3
	for range alerts {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		err := n.Notify(ctx, deliverer.Alert{Kind: deliverer.AlertDisabled, OrganizationID: "org_1", EndpointID: "we_1", Time: time.Now()})
		cancel()
		if err == nil {
			t.Fatal("a hung mail server accepted the alert")
		}
	}
	timeout := time.After(5 * time.Second)
	for i := range alerts {
		select {
		case <-closed:
		case <-timeout:
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			var left []string
			for _, g := range strings.Split(string(buf), "\n\n") {
				if strings.Contains(g, "net/smtp") {
					left = append(left, g)
				}
			}
			t.Fatalf("%d of %d connections to the hung mail server still open 5 s after their alerts gave up; %d goroutines still in net/smtp:\n%s",
				alerts-i, alerts, len(left), strings.Join(left, "\n\n"))
		}
	}
}
