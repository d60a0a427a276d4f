#!/usr/bin/env bash
# npm run demo: install what is missing, start Kafka, and run evalgap end to end on bundled sample data.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bash scripts/setup.sh
bash scripts/kafka.sh start
node dist/cli/main.js demo "$@"
