#!/usr/bin/env bash
# npm run bench: install what is missing, start Kafka, run the benchmarks, print one JSON document
# (also saved under bench-results/). Pass --quick for one draw of the coverage benchmark.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
bash scripts/setup.sh
bash scripts/kafka.sh start >&2
draws=5
[ "${1:-}" = "--quick" ] && draws=1
mkdir -p bench-results
out="bench-results/bench-$(date -u +%Y%m%dT%H%M%SZ).json"
run() { npx vite-node "test/bench/$1.ts" -- "${@:2}" 2>/dev/null | sed -n '/^{/,$p'; }
{
  echo '{"machine":'"$(node -e 'const os=require("os"),fs=require("fs");let f="";try{f=fs.readFileSync("/proc/cpuinfo","utf8")}catch{};const flags=["avx2","avx512f","avx512_vnni","avx_vnni"].filter((x)=>new RegExp("\\b"+x+"\\b").test(f));console.log(JSON.stringify({cpus:os.cpus().length,model:os.cpus()[0].model,flags,cpuClass:flags.includes("avx512_vnni")?"AVX-512 VNNI":flags.includes("avx2")?"AVX2 only (embeds several times slower)":"unknown",memGB:Math.round(os.totalmem()/2**30),node:process.version}))')"','
  echo '"embedSweep":'; run embed-sweep; echo ','
  echo '"embedQuality":'; run embed-quality; echo ','
  echo '"coverage":'; run coverage "--draws=$draws"; echo ','
  echo '"ingest":'; run ingest; echo ','
  echo '"gaps":'; run gaps "--draws=$([ "$draws" = 1 ] && echo 1 || echo 6)"; echo ','
  echo '"monitor":'; run monitor; echo ','
  echo '"traces":'; run traces; echo ','
  echo '"estimate":'; run estimate "--draws=$([ "$draws" = 1 ] && echo 20 || echo 100)"; echo ','
  echo '"compare":'; run compare
  echo '}'
} > "$out.tmp"
node -e 'const fs=require("fs");const j=JSON.parse(fs.readFileSync(process.argv[1],"utf8"));fs.writeFileSync(process.argv[2],JSON.stringify(j,null,2)+"\n");console.log(JSON.stringify(j,null,2))' "$out.tmp" "$out"
rm -f "$out.tmp"
log "saved $out"
