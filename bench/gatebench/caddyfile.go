package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
)

// Features are the directives a variant toggles. Everything else in the
// generated Caddyfile — global options, timeouts, the health route, the
// request_body limit, the handle blocks and the proxy transport — is the
// same for every variant, so that two variants differ only in the toggled
// directives. The template follows the repository's Caddyfile.
type Features struct {
	RequestID   bool `json:"request_id"`
	APIKey      bool `json:"api_key"`
	RateLimit   bool `json:"rate_limit"`
	Idempotency bool `json:"idempotency"`
	RequestLog  bool `json:"request_log"`
	EmitEvents  bool `json:"emit_events"`
	// TrustLocal trusts X-Forwarded-For from 127.0.0.1 (the IP-memory suite).
	TrustLocal bool `json:"trusted_proxies_local,omitempty"`
}

// Ours reports whether any Gatehouse directive is on; without one the
// catch-all 404 uses Caddy's respond instead of our api_error.
func (f Features) Ours() bool {
	return f.RequestID || f.APIKey || f.RateLimit || f.Idempotency || f.RequestLog || f.EmitEvents
}

// Variant is one gateway configuration.
type Variant struct {
	Name     string   `json:"name"`
	About    string   `json:"about"`
	Features Features `json:"features"`
}

// caddyTemplate is the repository Caddyfile with each Gatehouse directive
// behind a toggle. Differences from the repository file that apply to every
// variant alike: the upstream address; Kafka topics and Redis key prefixes
// of this run, so that nothing else consumes the bench's logs and events
// and its Redis state can be counted and removed; idempotency records kept
// 15 minutes instead of 24 hours so a run does not leave Redis full.
const caddyTemplate = `{
	admin {{.Admin}}
	metrics
	auto_https off
	servers {
		timeouts {
			read_header 10s
			read_body 30s
			write 60s
			idle 2m
		}
		max_header_size 64KB
{{- if .F.TrustLocal}}
		trusted_proxies static 127.0.0.1/32
{{- end}}
	}
}

http://{{.Addr}} {
	@health {
		method GET HEAD
		path /healthz
	}
	handle @health {
		header Content-Type application/json
		respond ` + "`" + `{"status":"ok"}` + "`" + ` 200
	}
{{- if .F.Ours}}

	reload_drain
{{- end}}
{{- if .F.RequestID}}

	request_id
{{- end}}

	request_body {
		max_size 1MB
	}
{{- if .F.RequestLog}}

	request_log {
		topic {{.LogTopic}}
		route /v1/customers/{id} /v1/events/{id} /v1/webhook-endpoints/{id} /v1/webhook-endpoints/{id}/rotate-secret /v1/webhook-endpoints/{id}/recover /v1/webhook-endpoints/{id}/test /v1/webhook-deliveries/{id} /v1/webhook-deliveries/{id}/retry /v1/request-logs/{id}
	}
{{- end}}
{{- if .F.APIKey}}

	api_key /v1/* {
		database_url {env.DATABASE_URL}
		identity_secret {env.IDENTITY_SECRET}

		scope customers:read GET,HEAD /v1/customers*
		scope customers:write POST,PUT,PATCH,DELETE /v1/customers*
		scope events:read GET,HEAD /v1/events*
		scope events:write POST,PUT,PATCH,DELETE /v1/events*
		scope webhooks:read GET,HEAD /v1/webhook-endpoints* /v1/webhook-deliveries*
		scope webhooks:write POST,PUT,PATCH,DELETE /v1/webhook-endpoints* /v1/webhook-deliveries*
		scope logs:read GET,HEAD /v1/request-logs*
		scope usage:read GET,HEAD /v1/usage*
	}
{{- end}}
{{- if .F.RateLimit}}

	rate_limit /v1/* {
		redis {env.REDIS_URL}
		key_prefix {{.Prefix}}
		fail_open
		policy per-key {
			key {http.auth.api_key.key_id}
			rate {$RATE_LIMIT_LIVE:100} 1s
			sandbox_rate {$RATE_LIMIT_SANDBOX:25} 1s
		}
		policy per-org {
			key {http.auth.api_key.org_id}
			rate {$RATE_LIMIT_ORG_LIVE:1000} 1s
			sandbox_rate {$RATE_LIMIT_ORG_SANDBOX:250} 1s
		}
		policy per-ip {
			key {client_ip}
			rate {$RATE_LIMIT_IP:200} 1s
		}
		quota monthly {
			key {http.auth.api_key.org_id}
			limit 10000000
			sandbox_limit 1000000
			period month
		}
	}
{{- end}}
{{- if .F.Idempotency}}

	idempotency /v1/* {
		redis {env.REDIS_URL}
		ttl 15m
		lock_ttl 60s
		key_prefix {{.Prefix}}idempotency:
	}
{{- end}}
{{- if .F.EmitEvents}}

	emit_events {
		brokers {env.KAFKA_BROKERS}
		topic {{.EventTopic}}
		on POST /v1/customers 2xx customer.created
		on POST /v1/customers/{id} 2xx customer.updated
		on DELETE /v1/customers/{id} 2xx customer.deleted
	}
{{- end}}

	handle /v1/customers* {
		reverse_proxy {{.Upstream}} {
			transport http {
				dial_timeout 2s
				response_header_timeout 30s
			}
		}
	}

	@platform path /v1/events* /v1/webhook-endpoints* /v1/webhook-deliveries* /v1/request-logs* /v1/usage*
	handle @platform {
		reverse_proxy {{.ControlPlane}} {
			transport http {
				dial_timeout 2s
				# Longer than the control plane lets a request run (30 s), so its
				# 503 request_timeout reaches the client rather than a 504.
				response_header_timeout 35s
			}
		}
	}

	handle {
{{- if .F.Ours}}
		api_error 404 route_missing "Unrecognized request URL ({method} {path}). See the API reference for the available endpoints."
{{- else}}
		respond 404
{{- end}}
	}
}
`

var caddyTmpl = template.Must(template.New("Caddyfile").Parse(caddyTemplate))

// caddyParams fill the template.
type caddyParams struct {
	F            Features
	Admin        string // Caddy admin address
	Addr         string // listen address host:port
	Upstream     string // host:port
	ControlPlane string // host:port
	LogTopic     string
	EventTopic   string
	Prefix       string // Redis key prefix of this run
}

// writeCaddyfile renders the variant's Caddyfile into dir and returns its path.
func writeCaddyfile(dir, name string, p caddyParams) (string, error) {
	var b bytes.Buffer
	if err := caddyTmpl.Execute(&b, p); err != nil {
		return "", fmt.Errorf("rendering the %s Caddyfile: %w", name, err)
	}
	path := filepath.Join(dir, name+".Caddyfile")
	return path, os.WriteFile(path, b.Bytes(), 0o644)
}
