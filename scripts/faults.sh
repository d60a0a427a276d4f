#!/usr/bin/env bash
# npm run test:faults: the fault suite against its OWN broker (other ports, its own KAFKA_HOME, so
# stopping and restarting it never touches a broker on 9092) and the real engine and model.
# Prints one JSON summary line (prefixed "FAULTS ") and exits non-zero when a target is missed.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
# free ports unless set: two fault runs at once (two clones' CI) each get their own broker
export EVALGAP_KAFKA_PORT="${EVALGAP_FAULTS_KAFKA_PORT:-$(free_port)}"
export EVALGAP_KAFKA_CONTROLLER_PORT="${EVALGAP_FAULTS_CONTROLLER_PORT:-$(free_port)}"
[ "$EVALGAP_KAFKA_PORT" != "$EVALGAP_KAFKA_CONTROLLER_PORT" ] || EVALGAP_KAFKA_CONTROLLER_PORT=$(free_port)
[ "$EVALGAP_KAFKA_PORT" != 9092 ] || die "the fault suite must not use port 9092"
export EVALGAP_KAFKA_HOME="$(mktemp -d "${TMPDIR:-/tmp}/evalgap-faults-kafka.XXXXXX")"
export EVALGAP_KAFKA_BROKERS="127.0.0.1:$EVALGAP_KAFKA_PORT"
export EVALGAP_KAFKA_HEAP="${EVALGAP_KAFKA_HEAP:-384m}"
if port_open "$EVALGAP_KAFKA_PORT"; then die "127.0.0.1:$EVALGAP_KAFKA_PORT is in use; set EVALGAP_FAULTS_KAFKA_PORT"; fi
cleanup() { bash scripts/kafka.sh stop || true; rm -rf "$EVALGAP_KAFKA_HOME"; }
trap cleanup EXIT
npx tsc -p tsconfig.json
bash scripts/kafka.sh start
npx vitest run --config test/faults/vitest.config.ts "$@"
