#!/usr/bin/env bash
# npm test: install what is missing, start the services the integration tests use, run vitest.
# The broker is shared: this run records itself as a user (kafka.sh acquire) and, at the end or
# when killed, releases it; the broker is stopped only when no other run uses it and a run (not a
# person) started it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bash scripts/setup.sh
bash scripts/kafka.sh acquire $$
cleanup() { bash scripts/kafka.sh release $$; }
trap cleanup EXIT
# the tests and benchmarks are TypeScript too: type-check them with the sources (strict, no output)
npx tsc -p tsconfig.check.json
npx vitest run --config test/vitest.config.ts "$@"
# the fault suite (~5 min) on a broker of its own; skipped when vitest was given arguments or
# EVALGAP_SKIP_FAULTS=1
if [ $# -eq 0 ] && [ "${EVALGAP_SKIP_FAULTS:-0}" != 1 ]; then bash scripts/faults.sh; fi
