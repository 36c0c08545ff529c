package events

import (
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/gatehouse/gatehouse/caddymodule/internal/adapttest"
)

func TestCaddyfileGolden(t *testing.T) { adapttest.Golden(t, "testdata") }

func TestCaddyfileRejects(t *testing.T) {
	site := func(block string) string {
		return ":8080 {\n\temit_events {\n" + block + "\n\t}\n\treverse_proxy 127.0.0.1:9\n}"
	}
	adapttest.Rejects(t, map[string]struct{ Caddyfile, Want string }{
		"argument":          {":8080 {\n\temit_events customer.created\n}", "emit_events takes no arguments"},
		"no rules":          {site("brokers 127.0.0.1:9092"), "needs at least one rule"},
		"unknown option":    {site("topics a\non POST /v1/x a.b"), "unrecognized emit_events subdirective 'topics'"},
		"too few args":      {site("on POST customer.created"), "got 2 arguments"},
		"too many args":     {site("on POST /v1/x 2xx a.b extra"), "got 5 arguments"},
		"lower-case method": {site("on post /v1/x a.b"), `method "post": use one of POST, PUT, PATCH, DELETE, GET`},
		"unknown method":    {site("on PURGE /v1/x a.b"), `method "PURGE"`},
		"relative path":     {site("on POST v1/x a.b"), `path "v1/x" must start with /`},
		"trailing slash":    {site("on POST /v1/x/ a.b"), "empty segment"},
		"dot segment":       {site("on POST /v1/../x a.b"), "has a .. segment: requests are matched cleaned"},
		"partial wildcard":  {site("on POST /v1/x_{id} a.b"), "must be a whole {name}"},
		"glob":              {site("on POST /v1/* a.b"), "use {name} for a variable segment"},
		"repeated name":     {site("on POST /v1/{id}/{id} a.b"), "names {id} twice"},
		"error status":      {site("on POST /v1/x 404 a.b"), "status 404 is not a success"},
		"status class":      {site("on POST /v1/x 4xx a.b"), `status "4xx": use 2xx or a success code`},
		"no content":        {site("on DELETE /v1/x/{id} 204 a.b"), "status 204 has no body"},
		"reset content":     {site("on POST /v1/x 205 a.b"), "status 205 has no body"},
		"bad type":          {site("on POST /v1/x Customer.Created"), `event type "Customer.Created"`},
		"one-word type":     {site("on POST /v1/x created"), `event type "created"`},
		"duplicate rule":    {site("on POST /v1/x/{id} a.b\non POST /v1/x/{other} 2xx c.d"), "repeats rule 1"},
		"repeated option":   {site("topic a\ntopic b\non POST /v1/x a.b"), "topic given twice"},
		"size too large":    {site("max_response_size 2MB\non POST /v1/x a.b"), "over the limit of 1MB"},
		"finish zero":       {site("finish_timeout 0\non POST /v1/x a.b"), `finish_timeout "0": want a positive duration`},
		"finish garbage":    {site("finish_timeout soon\non POST /v1/x a.b"), `finish_timeout "soon"`},
		"size garbage":      {site("max_response_size lots\non POST /v1/x a.b"), `max_response_size "lots"`},
		"brokers empty":     {site("brokers\non POST /v1/x a.b"), "brokers needs at least one"},
	})
}
