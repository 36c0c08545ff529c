package apikey

import (
	"testing"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/gatehouse/gatehouse/caddymodule/internal/adapttest"
	_ "github.com/gatehouse/gatehouse/caddymodule/requestid"
	_ "github.com/gatehouse/gatehouse/caddymodule/staticerror"
)

func TestCaddyfileGolden(t *testing.T) { adapttest.Golden(t, "testdata") }

func TestCaddyfileRejects(t *testing.T) {
	site := func(block string) string { return ":8080 {\n\tapi_key {\n\t\t" + block + "\n\t}\n}" }
	adapttest.Rejects(t, map[string]struct{ Caddyfile, Want string }{
		"unknown subdirective": {site("cache 5m"), "unrecognized api_key subdirective 'cache'"},
		"argument":             {":8080 {\n\tapi_key sk_test_x\n}", "api_key takes no arguments besides a matcher"},
		"unknown scope":        {site("scope customer:read GET /v1/customers*"), `unknown scope "customer:read"; scopes are customers:read`},
		"unknown method":       {site("scope customers:read FETCH /v1/customers*"), `unknown method "FETCH"`},
		"methods missing":      {site("scope customers:read /v1/customers* /v1/x"), "expected methods (e.g. GET,HEAD or *) before the paths"},
		"too few scope args":   {site("scope customers:read GET"), "scope needs <scope> <methods> <paths...>"},
		"relative path":        {site("scope customers:read GET v1/customers"), `path pattern "v1/customers" must start with /`},
		"bad duration":         {site("cache_ttl soon"), "parsing cache_ttl"},
		"zero duration":        {site("query_timeout 0s"), "query_timeout must be positive"},
		"bad cache size":       {site("cache_size -1"), "cache_size must be a positive number"},
		"missing value":        {site("database_url"), "wrong argument count"},
		"zero unknown limit":   {site("unknown_key_limit 0"), "unknown_key_limit must be a positive number"},
		"word unknown limit":   {site("unknown_key_limit many"), "or off; got 'many'"},
		"setting twice":        {site("cache_ttl 5m\n\t\tcache_ttl 1m"), "api_key: cache_ttl given twice"},
		"database twice":       {site("database_url postgres://a\n\t\tdatabase_url postgres://b"), "api_key: database_url given twice"},
	})
}
