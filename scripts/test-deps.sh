#!/usr/bin/env bash
# Tools beyond Go and the services: headless Chromium for the dashboard's
# browser tests (`test`, the default), wrk for the benchmarks (`bench`).
# Installed from Debian's packages when missing and running as root;
# otherwise a clear message and a failure (CI must never skip the browser
# tests, and a benchmark without its load generator measures nothing).
set -euo pipefail

apt_updated=
# need CMD WHY PACKAGE...: installs the packages unless CMD is on the PATH.
need() {
  local cmd=$1 why=$2
  shift 2
  command -v "$cmd" >/dev/null 2>&1 && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing $* for $why" >&2
    [[ -n $apt_updated ]] || { apt-get update -qq >/dev/null; apt_updated=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    return 0
  fi
  echo "$cmd is missing ($why): install Debian's '$1' package" >&2
  exit 1
}

case ${1:-test} in
  test)
    if [[ -n "${CHROMIUM:-}" && -x "${CHROMIUM:-}" ]]; then exit 0; fi
    need chromium "the dashboard's browser tests (or set CHROMIUM=/path/to/chrome)" chromium fonts-dejavu-core ;;
  bench)
    need wrk "the benchmarks' load" wrk ;;
  *)
    echo "usage: $0 [test|bench]" >&2
    exit 2 ;;
esac
