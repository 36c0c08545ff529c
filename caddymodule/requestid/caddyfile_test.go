package requestid

import (
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/gatehouse/gatehouse/caddymodule/internal/adapttest"
)

func TestCaddyfileGolden(t *testing.T) { adapttest.Golden(t, "testdata") }

func TestCaddyfileRejects(t *testing.T) {
	adapttest.Rejects(t, map[string]struct{ Caddyfile, Want string }{
		"argument": {":8080 {\n\trequest_id req_fixed\n}", "request_id takes no arguments"},
		"block":    {":8080 {\n\trequest_id {\n\t\theader X-Request-Id\n\t}\n}", "unrecognized request_id subdirective 'header'"},
	})
}
