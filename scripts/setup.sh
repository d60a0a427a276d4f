#!/usr/bin/env bash
# Installs what evalgap needs and is missing; safe to run again (each step skips what is there):
#   npm packages (node_modules), the TypeScript build (dist/), the Kafka broker's jars
#   (~/.cache/evalgap), the embedding model (models/all-MiniLM-L6-v2).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
command -v node >/dev/null || die "Node.js 20+ is required"
if [ ! -f node_modules/.evalgap-lock ] || ! cmp -s package-lock.json node_modules/.evalgap-lock; then
  log "installing npm packages"
  # npm install, not npm ci: npm 11 writes chdb's optional per-platform packages only for this
  # platform into the lock, and npm ci then refuses the lock as out of sync
  # onnxruntime-node's postinstall would fetch CUDA libraries from NuGet on Linux x64: skip it
  # (the CPU runtime ships inside the npm package)
  ONNXRUNTIME_NODE_INSTALL=skip npm install --no-audit --no-fund --loglevel=error >&2
  cp package-lock.json node_modules/.evalgap-lock
fi
if [ ! -f dist/.build-stamp ] || [ -n "$(find src tsconfig.json package.json -newer dist/.build-stamp -print -quit)" ]; then
  log "building (tsc)"
  npx tsc -p tsconfig.json
  touch dist/.build-stamp
fi
bash scripts/kafka.sh install
bash scripts/install-model.sh
# the OpenTelemetry Collector for the trace tests (Go modules from the module proxy; cached)
if command -v go >/dev/null 2>&1; then
  bash scripts/otelcol.sh install
else
  log "go is missing: the OpenTelemetry Collector test will be skipped (install Go 1.26+ to run it)"
fi
# headless Chromium for the report's browser test (Debian's package; playwright-core never downloads one)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing chromium (Debian) for the report's browser test"
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
  else
    log "chromium is missing and this is not root: the report's browser test will be skipped (install Debian's chromium to run it)"
  fi
fi
