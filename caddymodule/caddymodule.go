// Package caddymodule bundles the Gatehouse Caddy modules: importing it
// registers every module and Caddyfile directive. xcaddy builds take this
// package path from xcaddy.json; cmd/gateway imports it for plain go build.
//
// Directive order (registered by each module, no `order` option needed):
// request_id runs first (after tracing), api_key sits in Caddy's
// authentication slot before basic_auth, and api_error is a terminal
// handler like respond.
package caddymodule

import (
	// One package per module.
	_ "github.com/gatehouse/gatehouse/caddymodule/apikey"
	_ "github.com/gatehouse/gatehouse/caddymodule/requestid"
	_ "github.com/gatehouse/gatehouse/caddymodule/staticerror"
)
