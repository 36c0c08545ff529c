// Command gateway is Caddy with the Gatehouse modules compiled in, for
// builds without xcaddy; `make gateway` builds the same from xcaddy.json.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules, as in the official distribution.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/gatehouse/gatehouse/caddymodule"
)

func main() {
	caddycmd.Main()
}
