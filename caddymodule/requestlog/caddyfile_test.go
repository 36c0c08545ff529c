package requestlog

import (
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/gatehouse/gatehouse/caddymodule/internal/adapttest"
	_ "github.com/gatehouse/gatehouse/caddymodule/requestid"
)

func TestCaddyfileGolden(t *testing.T) { adapttest.Golden(t, "testdata") }

func TestCaddyfileRejects(t *testing.T) {
	block := func(lines string) string {
		return ":8080 {\n\trequest_log {\n\t\tbrokers 127.0.0.1:9092\n" + lines + "\n\t}\n}"
	}
	adapttest.Rejects(t, map[string]struct{ Caddyfile, Want string }{
		"unknown subdirective": {block("\t\tbroker 127.0.0.1:9092"), "unrecognized request_log subdirective 'broker'"},
		"argument":             {":8080 {\n\trequest_log 127.0.0.1:9092\n}", "request_log takes no arguments"},
		"bad spool size":       {block("\t\tspool_limit lots"), "spool_limit: invalid size 'lots'"},
		"zero spool size":      {block("\t\tspool_limit 0"), "spool_limit: invalid size '0'"},
		"bad body size":        {block("\t\tmax_body_capture 8 KB"), "takes exactly one value"},
		"body size too large":  {block("\t\tmax_body_capture 2MiB"), "at most 1MiB"},
		"bad memory limit":     {block("\t\tmemory_limit -5"), "memory_limit: '-5' is not a positive number"},
		"two topics":           {block("\t\ttopic a b"), "topic takes exactly one value, got 2"},
		"empty value":          {block("\t\theaders"), "request_log headers: missing value"},
		"bad route":            {block("\t\troute v1/customers"), "must start with /"},
		"partial parameter":    {block("\t\troute /v1/customers/cus_{id}"), "must be a literal or a whole {param}"},
		"spool limit twice":    {block("\t\tspool_limit 1GiB\n\t\tspool_limit 2GiB"), "request_log: spool_limit given twice"},
		"topic twice":          {block("\t\ttopic a\n\t\ttopic b"), "request_log: topic given twice"},
		"messages neither":     {block("\t\tupstream_error_messages no"), "upstream_error_messages: 'no' is neither on nor off"},
		"messages twice":       {block("\t\tupstream_error_messages on\n\t\tupstream_error_messages off"), "request_log: upstream_error_messages given twice"},
	})
}
