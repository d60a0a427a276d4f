# Shared settings for evalgap's scripts (sourced, not run).
# Everything downloaded lives in a cache outside the repo so that a fresh clone
# re-uses it and `git clean` never throws away 100 MB of jars.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EVALGAP_CACHE="${EVALGAP_CACHE:-$HOME/.cache/evalgap}"
KAFKA_VERSION="3.9.1"
KAFKA_JARS="$EVALGAP_CACHE/kafka-$KAFKA_VERSION-jars"
KAFKA_HOME="${EVALGAP_KAFKA_HOME:-$EVALGAP_CACHE/kafka-broker}"
KAFKA_PORT="${EVALGAP_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${EVALGAP_KAFKA_CONTROLLER_PORT:-9093}"
log() { printf '[evalgap] %s\n' "$*" >&2; }
die() { printf '[evalgap] error: %s\n' "$*" >&2; exit 1; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# free_port: a TCP port on 127.0.0.1 that nothing listens on now (the kernel's choice for port 0)
free_port() { node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
