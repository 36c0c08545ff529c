#!/usr/bin/env bash
# make gateway: build the custom Caddy with xcaddy from xcaddy.json
# ({"caddy_version": "...", "modules": ["github.com/gatehouse/gatehouse/caddymodule"]}).
# Our module is replaced by this checkout so local changes are built.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${1:-$ROOT/bin/gateway-xcaddy}"
read -r version modules < <(python3 - "$ROOT/xcaddy.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(m["caddy_version"], " ".join(m["modules"]))
PY
)
args=()
for mod in $modules; do
  if [[ "$mod" == github.com/gatehouse/gatehouse* ]]; then
    args+=(--with "github.com/gatehouse/gatehouse=$ROOT")
  else
    args+=(--with "$mod")
  fi
done
mkdir -p "$(dirname "$OUT")"
XCADDY_SKIP_CLEANUP=0 go run github.com/caddyserver/xcaddy/cmd/xcaddy@v0.4.5 build "$version" "${args[@]}" --output "$OUT"
"$OUT" list-modules | grep -E 'http.handlers.(api_key|request_id)' >/dev/null || { echo "built binary lacks our modules" >&2; exit 1; }
echo "built $OUT"
