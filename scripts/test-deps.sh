#!/usr/bin/env bash
# Tools the test suite needs beyond Go and the services: headless Chromium
# for the dashboard's browser tests. Installed from Debian's packages when
# missing and running as root; otherwise a clear message and a failure (CI
# must never skip the browser tests).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [[ -n "${CHROMIUM:-}" && -x "${CHROMIUM:-}" ]]; then
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
  echo "==> installing chromium for the dashboard's browser tests" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
  exit 0
fi
echo "chromium is missing: install Debian's 'chromium' package (or set CHROMIUM=/path/to/chrome)" >&2
exit 1
