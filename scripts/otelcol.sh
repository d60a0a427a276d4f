#!/usr/bin/env bash
# The OpenTelemetry Collector used by the trace tests: an OTLP receiver and the contrib Kafka
# exporter (scripts/otelcol/main.go, modules pinned in scripts/otelcol/go.sum), built with Go from
# the Go module proxy and cached like the Kafka jars. Test tooling only: evalgap never runs it.
#   scripts/otelcol.sh install   build once into the cache (idempotent; ~5 min with downloads)
#   scripts/otelcol.sh path      print the binary's path (exit 1 when not built)
set -euo pipefail
source "$(dirname "$0")/lib.sh"
OTELCOL_VERSION="0.165.0"
SRC="$ROOT/scripts/otelcol"
STAMP=$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-12)
BIN="$EVALGAP_CACHE/otelcol-$OTELCOL_VERSION-$STAMP/evalgap-otelcol"

case "${1:-install}" in
  install)
    if [ -x "$BIN" ]; then exit 0; fi
    command -v go >/dev/null || die "go is required to build the OpenTelemetry Collector for the trace tests"
    log "building the OpenTelemetry Collector $OTELCOL_VERSION (OTLP receiver + Kafka exporter) into $(dirname "$BIN")"
    mkdir -p "$(dirname "$BIN")"
    (cd "$SRC" && GOFLAGS=-mod=readonly go build -trimpath -ldflags="-s -w" -o "$BIN.tmp" .) >&2 \
      || die "go build of the collector failed"
    mv "$BIN.tmp" "$BIN"
    ;;
  path)
    [ -x "$BIN" ] || exit 1
    echo "$BIN"
    ;;
  *) die "usage: scripts/otelcol.sh install|path" ;;
esac
