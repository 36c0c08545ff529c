// Package caddymodule bundles the Gatehouse Caddy modules: importing it
// registers every module and Caddyfile directive. xcaddy builds take this
// package path from xcaddy.json; cmd/gateway imports it for plain go build.
//
// Directive order (registered by each module, no `order` option needed):
//
//	reload_drain before tracing: a replaced config's responses say Connection: close
//	request_id   after tracing: every later failure becomes an error object
//	request_log  before map: sees every outcome, refusals included
//	api_key      before basic_auth (Caddy's authentication slot)
//	rate_limit   before request_header
//	idempotency  before invoke, so refusals above are never recorded
//	emit_events  after invoke, next to the upstream
//	api_error    before respond: a terminal handler
//
// logredact is no handler but a log field filter (gatehouse_redact) for
// Caddy's own logs.
package caddymodule

import (
	// One package per module.
	_ "github.com/gatehouse/gatehouse/caddymodule/apikey"
	_ "github.com/gatehouse/gatehouse/caddymodule/drain"
	_ "github.com/gatehouse/gatehouse/caddymodule/events"
	_ "github.com/gatehouse/gatehouse/caddymodule/idempotency"
	_ "github.com/gatehouse/gatehouse/caddymodule/logredact"
	_ "github.com/gatehouse/gatehouse/caddymodule/ratelimit"
	_ "github.com/gatehouse/gatehouse/caddymodule/requestid"
	_ "github.com/gatehouse/gatehouse/caddymodule/requestlog"
	_ "github.com/gatehouse/gatehouse/caddymodule/staticerror"
)
