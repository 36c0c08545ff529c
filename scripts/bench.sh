#!/usr/bin/env bash
# make bench: the benchmarks of the issues, never part of `make test`.
#
# Starts Postgres, Redis and Kafka if needed (idempotent), builds the four
# binaries and the driver, installs vegeta into bin/ if missing, runs the
# suites and writes bench/results/<UTC date-time>.json; a summary table goes
# to stdout, progress to stderr. A default full run takes about 25 minutes
# on a 2-core machine.
#
# Knobs (environment; each maps to a gatebench flag, `go run ./bench/gatebench -h`):
#   BENCH_SUITES        ingest,deliverer,overhead,accuracy,ipmem (default: all, run in this order)
#   BENCH_UPSTREAMS     sampleapi,static (default: both)
#   BENCH_DURATION      length of each overhead run (default 3s)
#   BENCH_ROUNDS        interleaved overhead rounds (default 6; even, so each pair runs in each order as often)
#   BENCH_CONNS         wrk connections (default 32)
#   BENCH_ACCURACY_DURATION  rate-limit accuracy run (default 20s)
#   BENCH_IP_REQUESTS   requests from distinct IPs (default 1000000)
#   BENCH_IP_MAX_TIME   time bound of that run (default 150s)
#   INGEST_BENCH_N      entries of the ingestion benchmark (default 200000)
#   GATEHOUSE_BENCH_EVENTS  deliverer bench burst size (default: its own)
# Extra arguments are passed to gatebench, e.g.
#   scripts/bench.sh -suites overhead -upstreams static -rounds 5
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-bin}
VEGETA_VERSION=v12.13.0

scripts/services.sh start >/dev/null

echo "==> building" >&2
go build -o "$BIN/" ./cmd/gateway ./cmd/controlplane ./cmd/sampleapi ./cmd/deliverer
go build -o "$BIN/gatebench" ./bench/gatebench

scripts/test-deps.sh bench
# `go install` leaves vegeta's own -version empty; the module version is in the binary.
if ! go version -m "$BIN/vegeta" 2>/dev/null | grep -qE "^\s+mod\s+github.com/tsenart/vegeta/v12\s+$VEGETA_VERSION\b"; then
  echo "==> installing vegeta $VEGETA_VERSION into $BIN/" >&2
  # `go install pkg@version` builds outside this module: go.mod is untouched.
  GOBIN="$PWD/$BIN" go install "github.com/tsenart/vegeta/v12@$VEGETA_VERSION"
fi

args=(-bin "$BIN" -out bench/results)
[[ -n "${BENCH_SUITES:-}" ]] && args+=(-suites "$BENCH_SUITES")
[[ -n "${BENCH_UPSTREAMS:-}" ]] && args+=(-upstreams "$BENCH_UPSTREAMS")
[[ -n "${BENCH_DURATION:-}" ]] && args+=(-duration "$BENCH_DURATION")
[[ -n "${BENCH_ROUNDS:-}" ]] && args+=(-rounds "$BENCH_ROUNDS")
[[ -n "${BENCH_CONNS:-}" ]] && args+=(-conns "$BENCH_CONNS")
[[ -n "${BENCH_ACCURACY_DURATION:-}" ]] && args+=(-accuracy-duration "$BENCH_ACCURACY_DURATION")
[[ -n "${BENCH_IP_REQUESTS:-}" ]] && args+=(-ip-requests "$BENCH_IP_REQUESTS")
[[ -n "${BENCH_IP_MAX_TIME:-}" ]] && args+=(-ip-max-time "$BENCH_IP_MAX_TIME")
[[ -n "${INGEST_BENCH_N:-}" ]] && args+=(-ingest-n "$INGEST_BENCH_N")
[[ -n "${GATEHOUSE_BENCH_EVENTS:-}" ]] && args+=(-deliverer-events "$GATEHOUSE_BENCH_EVENTS")

exec "$BIN/gatebench" "${args[@]}" "$@"
