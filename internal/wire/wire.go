// Package wire defines the JSON values carried on the platform's Kafka topics
// (DESIGN §7). Producers and consumers share these types so the contract is
// in one place; every value has a "v" schema version so consumers can accept
// old and new producers during a rolling upgrade.
package wire

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Topic names (binding).
const (
	TopicRequestLogs = "gateway.request-logs.v1"
	TopicEvents      = "platform.events.v1"
	TopicDeadLetter  = "webhooks.dead-letter.v1"
)

// CheckTopic refuses a name Kafka would refuse as a topic (1 to 249 of
// a-z, A-Z, 0-9, '.', '_' and '-'; not "." or ".."): a producer configured
// with one would retry its sends forever, holding up everything queued
// behind them.
func CheckTopic(name string) error {
	if name == "" || len(name) > 249 || name == "." || name == ".." ||
		strings.IndexFunc(name, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-')
		}) >= 0 {
		return fmt.Errorf("topic %q is not a Kafka topic name (1 to 249 of letters, digits, '.', '_' and '-')", name)
	}
	return nil
}

// RequestLog is one request through the gateway, already redacted: nothing
// secret leaves the gateway. Keyed by organisation id.
type RequestLog struct {
	V              int    `json:"v"` // 1
	RequestID      string `json:"request_id"`
	Time           int64  `json:"time_us"` // unix microseconds, start of the request
	OrganizationID string `json:"organization_id,omitempty"`
	Livemode       bool   `json:"livemode"`
	APIKeyID       string `json:"api_key_id,omitempty"`
	Method         string `json:"method"`
	Route          string `json:"route,omitempty"` // route template, e.g. /v1/customers/{id}
	Path           string `json:"path"`            // raw path with redacted query values
	Status         int    `json:"status"`
	DurationUS     int64  `json:"duration_us"`
	UpstreamUS     int64  `json:"upstream_us,omitempty"`
	BytesIn        int64  `json:"bytes_in"`
	BytesOut       int64  `json:"bytes_out"`
	ClientIP       string `json:"client_ip,omitempty"`
	UserAgent      string `json:"user_agent,omitempty"`
	APIVersion     string `json:"api_version,omitempty"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	Replayed       bool   `json:"idempotent_replayed,omitempty"`
	RateLimit      string `json:"rate_limit,omitempty"` // outcome, e.g. "allowed", "limited:per-key"
	ErrorType      string `json:"error_type,omitempty"`
	ErrorCode      string `json:"error_code,omitempty"`
	ErrorMessage   string `json:"error_message,omitempty"`
	ErrorParam     string `json:"error_param,omitempty"`
	// AuthRefused: api_key identified the key (the organisation and key
	// are set) and then refused the request: expired, outside its IP
	// allowlist, a scope or an API version it lacks. Logged under the
	// organisation, not metered: no request was authenticated.
	AuthRefused bool `json:"auth_refused,omitempty"`
	// Allowlisted, redacted headers.
	RequestHeaders  map[string]string `json:"request_headers,omitempty"`
	ResponseHeaders map[string]string `json:"response_headers,omitempty"`
	// Bodies only when the organisation enabled capture; redacted and capped.
	RequestBody  string `json:"request_body,omitempty"`
	ResponseBody string `json:"response_body,omitempty"`
}

// Event is a platform event (DESIGN §8), as produced by the gateway's
// emit_events and the control plane's POST /v1/events. Keyed by
// organisation id.
type Event struct {
	V              int             `json:"v"` // 1
	ID             string          `json:"id"`
	OrganizationID string          `json:"organization_id"`
	Livemode       bool            `json:"livemode"`
	Type           string          `json:"type"`
	Created        int64           `json:"created"` // unix seconds
	APIVersion     string          `json:"api_version"`
	Data           json.RawMessage `json:"data"` // {"object": {...}}
	RequestID      string          `json:"request_id,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
}

// DeadLetter records a delivery that exhausted its retries. Keyed by endpoint id.
type DeadLetter struct {
	V              int    `json:"v"` // 1
	DeliveryID     string `json:"delivery_id"`
	EventID        string `json:"event_id"`
	EndpointID     string `json:"endpoint_id"`
	OrganizationID string `json:"organization_id"`
	Livemode       bool   `json:"livemode"`
	Attempts       int    `json:"attempts"`
	LastStatusCode int    `json:"last_status_code,omitempty"`
	LastError      string `json:"last_error,omitempty"`
	Time           int64  `json:"time"` // unix seconds
}
