package staticerror

import (
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/gatehouse/gatehouse/caddymodule/internal/adapttest"
)

func TestCaddyfileGolden(t *testing.T) { adapttest.Golden(t, "testdata") }

func TestCaddyfileRejects(t *testing.T) {
	adapttest.Rejects(t, map[string]struct{ Caddyfile, Want string }{
		"no code":      {":8080 {\n\tapi_error 404\n}", "needs an error code after the status"},
		"unknown code": {":8080 {\n\tapi_error 404 not_a_code\n}", "unknown error code 'not_a_code'"},
		"status 200":   {":8080 {\n\tapi_error 200 route_missing\n}", "not an error status"},
		"no args":      {":8080 {\n\tapi_error\n}", "api_error takes [<status>] <code> [<message>]"},
		"too many":     {":8080 {\n\tapi_error 404 route_missing no such route\n}", "quote a message with spaces"},
		"block":        {":8080 {\n\tapi_error 404 route_missing {\n\t\tmessage x\n\t}\n}", "api_error has no block"},
		"wrong type":   {":8080 {\n\tapi_error 503 route_missing\n}", "status 503 does not fit route_missing, of type invalid_request_error"},
		"not a 429":    {":8080 {\n\tapi_error 400 rate_limited\n}", "status 400 does not fit rate_limited"},
	})
}
