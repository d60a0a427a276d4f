#!/usr/bin/env bash
# npm test: install what is missing, start the services the integration tests use, run vitest.
# A broker this script starts is stopped again at the end; one that was already running is left alone.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bash scripts/setup.sh
started=0
if ! bash scripts/kafka.sh status >/dev/null 2>&1; then bash scripts/kafka.sh start; started=1; fi
cleanup() { if [ "$started" = 1 ]; then bash scripts/kafka.sh stop; fi; }
trap cleanup EXIT
# the tests and benchmarks are TypeScript too: type-check them with the sources (strict, no output)
npx tsc -p tsconfig.check.json
npx vitest run --config test/vitest.config.ts "$@"
# the fault suite (~5 min) on a broker of its own; skipped when vitest was given arguments or
# EVALGAP_SKIP_FAULTS=1
if [ $# -eq 0 ] && [ "${EVALGAP_SKIP_FAULTS:-0}" != 1 ]; then bash scripts/faults.sh; fi
