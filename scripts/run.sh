#!/usr/bin/env bash
# make run: services → migrations → the four processes → a seeded demo
# organisation in .data/dev.env. Ctrl-C stops the processes (the services keep
# running; `make services-stop` stops them). Running it twice is harmless:
# running services and processes are reused, the demo org is kept.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DATA_DIR="${DATA_DIR:-$ROOT/.data}"
LOGS="$DATA_DIR/logs"
mkdir -p "$LOGS"

export DATABASE_URL="${DATABASE_URL:-postgres://gatehouse:gatehouse@127.0.0.1:5432/gatehouse?sslmode=disable}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/0}"
export KAFKA_BROKERS="${KAFKA_BROKERS:-127.0.0.1:9092}"
export GATEWAY_PORT="${GATEWAY_PORT:-8080}"
export CONTROLPLANE_ADDR="${CONTROLPLANE_ADDR:-:8081}"
export SAMPLEAPI_ADDR="${SAMPLEAPI_ADDR:-:8082}"
export DELIVERER_ADDR="${DELIVERER_ADDR:-:8083}"
export SAMPLEAPI_URL="${SAMPLEAPI_URL:-http://127.0.0.1:8082}"
export CONTROLPLANE_URL="${CONTROLPLANE_URL:-http://127.0.0.1:8081}"
export CADDY_ADMIN="${CADDY_ADMIN:-localhost:2019}"
export DATA_DIR
# The local demo delivers webhooks to receivers on this machine.
export WEBHOOK_ALLOW_CIDRS="${WEBHOOK_ALLOW_CIDRS:-127.0.0.0/8,::1/128}"
# Secrets: generated once per checkout and kept in .data, never committed.
SECRETS="$DATA_DIR/secrets.env"
if [[ ! -f "$SECRETS" ]]; then
  umask 077
  {
    echo "IDENTITY_SECRET=$(head -c 32 /dev/urandom | base64 | tr -d '=+/')"
    echo "MASTER_KEY=$(head -c 32 /dev/urandom | base64)"
  } >"$SECRETS"
fi
set -a; source "$SECRETS"; set +a

step() { printf '==> %s\n' "$*"; }
started=$(date +%s)

# Tools this script needs beyond the services' own (which services.sh
# installs): curl for the health checks, python3 to read the CLI's JSON.
for tool in curl python3; do
  command -v "$tool" >/dev/null 2>&1 && continue
  if [[ $EUID -eq 0 && ${GATEHOUSE_NO_INSTALL:-0} != 1 ]] && command -v apt-get >/dev/null 2>&1; then
    step "installing $tool with apt-get"
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "$tool"; } >&2 ||
      { echo "apt-get install $tool failed" >&2; exit 1; }
  else
    echo "make run needs $tool (Debian: apt-get install $tool)" >&2
    exit 1
  fi
done

step "services"
# Without the secrets: a database superuser could read them back from the
# server's environment (/proc/<postmaster>/environ).
env -u IDENTITY_SECRET -u MASTER_KEY -u MASTER_KEY_PREVIOUS "$ROOT/scripts/services.sh" start

step "migrations"
"$ROOT/bin/controlplane" migrate

port_of() { echo "${1##*:}"; }
healthy() { curl -fsS -m 2 "http://127.0.0.1:$(port_of "$1")/healthz" >/dev/null 2>&1; }

pids=()
cleanup() {
  trap - INT TERM EXIT
  if ((${#pids[@]})); then
    step "stopping ${#pids[@]} processes"
    kill "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT   # not on to "a process exited" below
trap 'cleanup; exit 143' TERM

start() { # name addr args...
  local name=$1 addr=$2; shift 2
  if healthy "$addr"; then
    step "$name: already running on $addr (reused)"
    return
  fi
  "$ROOT/bin/$name" "$@" >>"$LOGS/$name.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 300); do
    healthy "$addr" && { step "$name: up on $addr"; return; }
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "$name exited; last log lines:" >&2; tail -n 30 "$LOGS/$name.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$name did not become healthy in 30s; see $LOGS/$name.log" >&2
  exit 1
}

start sampleapi "$SAMPLEAPI_ADDR"
start controlplane "$CONTROLPLANE_ADDR" serve
start deliverer "$DELIVERER_ADDR"
start gateway ":$GATEWAY_PORT" run --config "$ROOT/Caddyfile" --adapter caddyfile

DEV_ENV="$DATA_DIR/dev.env"
org_exists() { # asked of the CLI, which reads DATABASE_URL as the servers do (psql refuses pgx's parameters)
  [[ -f "$DEV_ENV" ]] || return 1
  local org; org=$(sed -n 's/^DEV_ORG=//p' "$DEV_ENV")
  [[ -n "$org" ]] || return 1
  local list; list=$("$ROOT/bin/controlplane" orgs list --json) || { echo "listing organisations failed" >&2; exit 1; }
  ORG="$org" python3 -c 'import json,os,sys; sys.exit(0 if any(o.get("id") == os.environ["ORG"] for o in json.load(sys.stdin)["data"]) else 1)' <<<"$list"
}
if org_exists; then
  step "demo organisation: reused ($DEV_ENV)"
else
  step "seeding the demo organisation"
  cp="$ROOT/bin/controlplane"
  json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
  org=$("$cp" orgs create --name "Demo" --json | json id)
  email="dev@example.com"
  password="$(head -c 18 /dev/urandom | base64 | tr -d '=+/')"
  # From standard input: an argument would show the password in the process list.
  printf '%s\n' "$password" | "$cp" users create --org "$org" --email "$email" --password-stdin --role owner --json >/dev/null
  sk=$("$cp" keys create --org "$org" --env sandbox --name "Demo sandbox key" --json | json key)
  lk=$("$cp" keys create --org "$org" --env live --name "Demo live key" --json | json key)
  umask 077
  cat >"$DEV_ENV" <<ENV
DEV_ORG=$org
DEV_EMAIL=$email
DEV_PASSWORD=$password
DEV_SANDBOX_KEY=$sk
DEV_LIVE_KEY=$lk
ENV
fi
source "$DEV_ENV"

cat <<MSG

Gatehouse is running ($(( $(date +%s) - started ))s).
  API gateway     http://localhost:$GATEWAY_PORT        (try the curl below)
  Dashboard       http://localhost:$(port_of "$CONTROLPLANE_ADDR")        login $DEV_EMAIL / see $DEV_ENV
  Sample API      http://localhost:$(port_of "$SAMPLEAPI_ADDR")        (only accepts gateway-signed requests)
  Deliverer       http://localhost:$(port_of "$DELIVERER_ADDR")/metrics
  Caddy metrics   http://$CADDY_ADMIN/metrics
  Credentials     $DEV_ENV
  Logs            $LOGS/

  source $DEV_ENV
  curl -s http://localhost:$GATEWAY_PORT/v1/customers -u "\$DEV_SANDBOX_KEY:" -d email=ada@example.com

Ctrl-C stops the processes; \`make services-stop\` stops Postgres, Redis and Kafka.
MSG

if ((${#pids[@]} == 0)); then
  trap - INT TERM EXIT
  exit 0
fi
wait -n "${pids[@]}" || true
echo "a process exited; stopping the rest (logs in $LOGS)" >&2
exit 1
