package deliverer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"strings"
	"time"

	"go.uber.org/zap"
)

// AlertKind says what went wrong with an endpoint.
type AlertKind string

// Alert kinds.
const (
	// AlertDeliveriesDying: a delivery exhausted its retries (at most one
	// alert per endpoint per DeadAlertEvery).
	AlertDeliveriesDying AlertKind = "deliveries_dying"
	// AlertFailing: the endpoint has been failing continuously for longer
	// than a threshold (FailingThresholds).
	AlertFailing AlertKind = "endpoint_failing"
	// AlertDisabled: the platform disabled the endpoint (410 Gone, or
	// failing for DisableAfter).
	AlertDisabled AlertKind = "endpoint_disabled"
)

// Alert is one notification about an endpoint.
type Alert struct {
	Kind           AlertKind
	OrganizationID string
	Livemode       bool
	EndpointID     string
	URL            string // scheme, host and path only (redact.EndpointURL): alerts are logged and mailed
	Message        string
	Time           time.Time
}

// Notifier tells people about endpoints in trouble. Notify is called off
// the delivery path, with a deadline; its errors are logged, never retried.
type Notifier interface {
	Notify(ctx context.Context, a Alert) error
}

// LogNotifier writes alerts to the log.
type LogNotifier struct{ Logger *zap.Logger }

// Notify logs a at warning level.
func (n LogNotifier) Notify(_ context.Context, a Alert) error {
	n.Logger.Warn("webhook alert", zap.String("kind", string(a.Kind)), zap.String("organization_id", a.OrganizationID),
		zap.Bool("livemode", a.Livemode), zap.String("endpoint_id", a.EndpointID), zap.String("url", a.URL),
		zap.String("message", a.Message))
	return nil
}

// Notifiers sends every alert to each notifier in turn.
type Notifiers []Notifier

// Notify calls every notifier and returns the first error.
func (ns Notifiers) Notify(ctx context.Context, a Alert) error {
	var first error
	for _, n := range ns {
		if err := n.Notify(ctx, a); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// SMTPConfig configures mail alerts (SMTP_ADDR, SMTP_USERNAME,
// SMTP_PASSWORD, SMTP_FROM, SMTP_TO).
type SMTPConfig struct {
	// Addr is host:port of the mail server; empty turns mail alerts off.
	Addr     string
	Username string
	Password string
	From     string
	// To receives every alert (operators); the organisation's owners and
	// admins are added by Recipients.
	To []string
}

// Enabled reports whether mail alerts are configured.
func (c SMTPConfig) Enabled() bool { return c.Addr != "" && c.From != "" }

// SMTPNotifier mails alerts with net/smtp (STARTTLS when the server offers
// it; PLAIN auth when a username is set, which net/smtp allows only over
// TLS or to localhost).
type SMTPNotifier struct {
	Config SMTPConfig
	// Recipients returns the addresses to alert for an organisation (its
	// owners and admins); nil means only Config.To.
	Recipients func(ctx context.Context, org string) ([]string, error)
}

// Notify sends one mail.
func (n *SMTPNotifier) Notify(ctx context.Context, a Alert) error {
	to := append([]string(nil), n.Config.To...)
	if n.Recipients != nil {
		more, err := n.Recipients(ctx, a.OrganizationID)
		if err != nil {
			return fmt.Errorf("finding alert recipients: %w", err)
		}
		to = append(to, more...)
	}
	to = cleanAddrs(to)
	if len(to) == 0 {
		return nil
	}
	mode := "test"
	if a.Livemode {
		mode = "live"
	}
	subject := fmt.Sprintf("[Gatehouse] Webhook endpoint %s: %s", a.EndpointID, strings.ReplaceAll(string(a.Kind), "_", " "))
	body := fmt.Sprintf("%s\r\n\r\nEndpoint: %s (%s mode)\r\nURL: %s\r\nOrganization: %s\r\nTime: %s\r\n",
		a.Message, a.EndpointID, mode, a.URL, a.OrganizationID, a.Time.UTC().Format(time.RFC1123Z))
	msg := "From: " + n.Config.From + "\r\n" +
		"To: " + strings.Join(to, ", ") + "\r\n" +
		"Subject: " + subject + "\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body
	var auth smtp.Auth
	if n.Config.Username != "" {
		host, _, _ := net.SplitHostPort(n.Config.Addr)
		auth = smtp.PlainAuth("", n.Config.Username, n.Config.Password, host)
	}
	if err := sendMail(ctx, n.Config.Addr, auth, n.Config.From, to, []byte(msg)); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("sending alert mail: %w", err)
	}
	return nil
}

// sendMail is smtp.SendMail on a connection that ctx bounds: when ctx ends,
// the connection is closed, so a hung server keeps neither it nor the
// goroutine talking on it.
func sendMail(ctx context.Context, addr string, auth smtp.Auth, from string, to []string, msg []byte) error {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	host, _, _ := net.SplitHostPort(addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		return err
	}
	defer c.Close()
	if ok, _ := c.Extension("STARTTLS"); ok {
		if err := c.StartTLS(&tls.Config{ServerName: host}); err != nil {
			return err
		}
	}
	if auth != nil {
		if ok, _ := c.Extension("AUTH"); !ok {
			return errors.New("smtp: server doesn't support AUTH")
		}
		if err := c.Auth(auth); err != nil {
			return err
		}
	}
	if err := c.Mail(from); err != nil {
		return err
	}
	for _, addr := range to {
		if err := c.Rcpt(addr); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// cleanAddrs drops duplicates and anything that could inject headers.
func cleanAddrs(in []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range in {
		a = strings.TrimSpace(a)
		if a == "" || strings.ContainsAny(a, "\r\n,<>") || seen[strings.ToLower(a)] {
			continue
		}
		seen[strings.ToLower(a)] = true
		out = append(out, a)
	}
	return out
}
