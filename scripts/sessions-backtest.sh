#!/usr/bin/env bash
# The no-false-alarm check of docs/monitor.md on a realistic low-volume session stream:
# tools/sessions_stream.py (in the shared folder next to the project) writes an eval set of 60
# Banking77 intents and DAYS days of session traffic (~0.08 requests/s); this fits the eval set,
# publishes the stream to a fresh topic, runs the consumer until every row is stored, then replays
# the stored traffic through `evalgap monitor --backtest` at defaults and prints the notifications
# per rule and severity. Needs the broker (scripts/kafka.sh) and a build (dist/).
#   usage: scripts/sessions-backtest.sh [SHARED=../shared] [OUT=a new temp folder] [DAYS=7] [SEED=7]
set -euo pipefail
SHARED=${1:-../shared}
OUT=${2:-$(mktemp -d)}
DAYS=${3:-7}
SEED=${4:-7}
cd "$(dirname "$0")/.."
python3 "$SHARED/tools/sessions_stream.py" "$SHARED" "$OUT" "$DAYS" "$SEED"
export EVALGAP_DATA_DIR="$OUT/chdb" EVALGAP_RETENTION_DAYS=3650 EVALGAP_LOG_LEVEL=warn
export EVALGAP_TOPIC="evalgap.sessions.$$.$RANDOM" EVALGAP_GROUP="evalgap-sessions-$$-$RANDOM"
export EVALGAP_DLQ_TOPIC="$EVALGAP_TOPIC.dlq"
node dist/cli/main.js fit "$OUT/eval.jsonl" --out "$OUT/model" > "$OUT/fit.txt"
node dist/cli/main.js produce "$OUT/stream.jsonl"
N=$(wc -l < "$OUT/stream.jsonl")
PORT=$((20000 + RANDOM % 20000))
node dist/cli/main.js run --model "$OUT/model" --metrics-port "$PORT" &
RUN=$!
trap 'kill $RUN 2>/dev/null || true' EXIT
stored=0
until [ "$stored" -ge "$N" ]; do
  sleep 10
  kill -0 "$RUN" 2>/dev/null || { echo "evalgap run exited before storing every row" >&2; exit 1; }
  # the metrics endpoint may not listen yet (a slow or loaded machine): count that as 0 stored
  stored=$({ curl -s "http://127.0.0.1:$PORT/metrics" || true; } | awk '/^evalgap_rows_stored_total/ {s += $2} END {print int(s)}')
  echo "stored $stored of $N" >&2
done
kill -TERM $RUN
wait $RUN || true
trap - EXIT
FROM=$(head -c 200 "$OUT/stream.jsonl" | python3 -c 'import sys,json,datetime;t=json.loads(sys.stdin.readline())["ts"];print(datetime.datetime.fromtimestamp(t//1000//3600*3600,datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))')
TO=$(python3 -c "import datetime;print((datetime.datetime.fromisoformat('${FROM%Z}')+datetime.timedelta(days=$DAYS,hours=2)).strftime('%Y-%m-%dT%H:%M:%SZ'))")
node dist/cli/main.js monitor --model "$OUT/model" --backtest --from "$FROM" --to "$TO" --json > "$OUT/backtest.json"
python3 - "$OUT/backtest.json" <<'PY'
import json, sys, collections
d = json.load(open(sys.argv[1]))
n = [x for x in d['notifications'] if x['kind'] == 'firing']
c = collections.Counter((x['alert']['rule'], x['alert']['severity']) for x in n)
print(json.dumps({'windows': d['windows'], 'evaluated': d['evaluated'], 'firing': {f'{r} ({s})': k for (r, s), k in sorted(c.items())},
                  'summaries': [f"{x['alert']['onset']} {x['alert']['rule']} {x['alert']['agent']}: {x['alert']['summary']}" for x in n][:20]}, indent=2))
PY
