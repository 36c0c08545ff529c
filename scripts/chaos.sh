#!/usr/bin/env bash
# make chaos: scripted faults under steady load, each with invariants checked
# (issue 9 item 3; the proofs of issues 6 and 7). Prints PASS/FAIL per
# scenario, writes bench/results/chaos-<UTC date-time>.json and exits
# non-zero when any scenario fails.
#
# The scenarios stop Postgres, Redis and Kafka, so they run against services
# of their own — never the shared ones on the default ports that `make
# services`, tests and benchmarks use: a separate DATA_DIR and ports, started
# here through scripts/services.sh and stopped again at the end. The driver
# checks with ss, before every stop, that the port is served by the pid in
# our own pid file.
#
# Knobs (environment):
#   CHAOS_DATA_DIR       services' data (default .data/chaos)
#   CHAOS_PGPORT CHAOS_REDIS_PORT CHAOS_KAFKA_PORT CHAOS_KAFKA_CONTROLLER_PORT
#                        (25432 26379 29092 29093; the defaults 5432/6379/9092/9093 are refused)
#   CHAOS_RATE           steady load per scenario, requests/s (100)
#   CHAOS_SCENARIOS      comma-separated subset, e.g. kafka-outage,gateway-reload (all)
#   CHAOS_KEEP_SERVICES=1  leave the chaos services running afterwards
#   CHAOS_FRESH=1        wipe CHAOS_DATA_DIR (not the Kafka jars) before starting
# Extra arguments go to the driver (`go run ./chaos -h`).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

die() {
  echo "chaos: $*" >&2
  exit 2
}

export DATA_DIR
DATA_DIR=$(realpath -m "${CHAOS_DATA_DIR:-$REPO/.data/chaos}")
export PGPORT=${CHAOS_PGPORT:-25432}
export REDIS_PORT=${CHAOS_REDIS_PORT:-26379}
export KAFKA_PORT=${CHAOS_KAFKA_PORT:-29092}
export KAFKA_CONTROLLER_PORT=${CHAOS_KAFKA_CONTROLLER_PORT:-29093}

[[ $DATA_DIR != "$(realpath -m "$REPO/.data")" ]] || die "CHAOS_DATA_DIR must not be the shared .data"
for p in "$PGPORT" "$REDIS_PORT" "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; do
  case $p in
    5432 | 6379 | 9092 | 9093) die "port $p belongs to the shared services; chaos stops its services and needs its own ports" ;;
  esac
done

if [[ ${CHAOS_FRESH:-0} == 1 && -d $DATA_DIR ]]; then
  scripts/services.sh stop >&2 || true
  echo "==> wiping $DATA_DIR (keeping the Kafka jars)" >&2
  find "$DATA_DIR" -mindepth 1 -maxdepth 1 ! -name kafka -exec rm -rf {} +
  if [[ -d $DATA_DIR/kafka ]]; then
    find "$DATA_DIR/kafka" -mindepth 1 -maxdepth 1 ! -name libs -exec rm -rf {} +
  fi
  # A relocated Postgres cluster (root, unreachable DATA_DIR) lives elsewhere; services.sh recreates it.
fi

# The Kafka jars come from Maven once; reuse the shared checkout's (hard links, same pom.xml).
if [[ ! -f $DATA_DIR/kafka/libs/.complete && -f $REPO/.data/kafka/libs/.complete ]]; then
  mkdir -p "$DATA_DIR/kafka"
  rm -rf "$DATA_DIR/kafka/libs"
  cp -al "$REPO/.data/kafka/libs" "$DATA_DIR/kafka/libs" 2>/dev/null || cp -a "$REPO/.data/kafka/libs" "$DATA_DIR/kafka/libs"
fi

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
  local rc=$?
  if [[ ${CHAOS_KEEP_SERVICES:-0} != 1 ]]; then
    echo "==> stopping the chaos services ($DATA_DIR)" >&2
    scripts/services.sh stop >&2 || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> chaos services in $DATA_DIR on ports $PGPORT/$REDIS_PORT/$KAFKA_PORT/$KAFKA_CONTROLLER_PORT" >&2
set -a
eval "$(scripts/services.sh start)"
set +a

echo "==> building" >&2
go build -o bin/ ./cmd/gateway ./cmd/controlplane ./cmd/sampleapi ./cmd/deliverer
go build -o bin/gatechaos ./chaos

args=(-bin bin -out bench/results -services scripts/services.sh)
[[ -n ${CHAOS_RATE:-} ]] && args+=(-rate "$CHAOS_RATE")
[[ -n ${CHAOS_SCENARIOS:-} ]] && args+=(-scenarios "$CHAOS_SCENARIOS")

start=$(date +%s)
set +e
bin/gatechaos "${args[@]}" "$@"
rc=$?
set -e
echo "==> make chaos took $(($(date +%s) - start)) s (driver exit $rc)" >&2
exit "$rc"
