#!/usr/bin/env bash
# A single-node Apache Kafka broker (KRaft) built from Maven Central jars, without Docker.
#   scripts/kafka.sh install   fetch the jars into the cache (idempotent)
#   scripts/kafka.sh start     install if needed, format storage once, start, wait until ready
#   scripts/kafka.sh stop      stop the broker started by start
#   scripts/kafka.sh status    exit 0 and print "running" when the broker answers on its port
#   scripts/kafka.sh reset     stop and delete the broker's data (topics, offsets)
#   scripts/kafka.sh acquire P start the broker if needed and record process P as one of its users
#   scripts/kafka.sh release P forget user P; stop the broker when no live user is left and a user
#                              started it (a broker started by hand is never stopped by release)
# acquire/release let several test runs (other clones, other terminals) share the one broker this
# cache holds: a run that ends or is killed no longer stops the broker under another run.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PIDFILE="$KAFKA_HOME/broker.pid"
LOGFILE="$KAFKA_HOME/broker.log"
DATA="$KAFKA_HOME/data"
PROPS="$KAFKA_HOME/server.properties"
CP="$KAFKA_JARS/*"
JAVA_LOG="-Dlog4j.configuration=file:$ROOT/scripts/kafka/log4j.properties"

install() {
  if [ -f "$KAFKA_JARS/.complete" ]; then return 0; fi
  command -v java >/dev/null || die "java is required (OpenJDK 17+)"
  command -v mvn >/dev/null || die "mvn is required to fetch the Kafka jars from Maven Central"
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central into $KAFKA_JARS"
  mkdir -p "$KAFKA_JARS"
  mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_JARS" -DincludeScope=runtime >&2 || die "mvn could not fetch the Kafka jars"
  ls "$KAFKA_JARS"/kafka_2.13-"$KAFKA_VERSION".jar >/dev/null || die "kafka_2.13-$KAFKA_VERSION.jar missing after mvn"
  touch "$KAFKA_JARS/.complete"
}

running_pid() {
  [ -f "$PIDFILE" ] || return 1
  local pid; pid=$(cat "$PIDFILE")
  kill -0 "$pid" 2>/dev/null && echo "$pid"
}

write_props() {
  mkdir -p "$KAFKA_HOME"
  cat > "$PROPS" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
PROPS
}

start() {
  if pid=$(running_pid) && port_open "$KAFKA_PORT"; then log "Kafka already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"; return 0; fi
  if port_open "$KAFKA_PORT"; then log "something already listens on 127.0.0.1:$KAFKA_PORT; using it as the broker"; return 0; fi
  install
  write_props
  if [ ! -f "$DATA/meta.properties" ]; then
    # a random cluster id (base64url of 16 bytes), not starting with '-' (the format tool would
    # read it as an option; Kafka's own generator avoids those too)
    local id="-"
    while [ "${id:0:1}" = "-" ]; do id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '='); done
    log "formatting KRaft storage in $DATA (cluster $id)"
    java $JAVA_LOG -cp "$CP" kafka.tools.StorageTool format -t "$id" -c "$PROPS" >"$KAFKA_HOME/format.log" 2>&1 \
      || { cat "$KAFKA_HOME/format.log" >&2; die "could not format Kafka storage"; }
  fi
  log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (log: $LOGFILE)"
  setsid nohup java -Xms256m -Xmx${EVALGAP_KAFKA_HEAP:-512m} -XX:+UseG1GC $JAVA_LOG -cp "$CP" kafka.Kafka "$PROPS" \
    >"$LOGFILE" 2>&1 < /dev/null 9>&- &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + ${EVALGAP_KAFKA_START_TIMEOUT:-120}))
  until port_open "$KAFKA_PORT" && grep -q "Kafka Server started\|KafkaRaftServer.*started\|\[KafkaRaftServer nodeId=1\] Kafka Server started" "$LOGFILE"; do
    if ! running_pid >/dev/null; then tail -30 "$LOGFILE" >&2; die "Kafka exited during start-up (see $LOGFILE)"; fi
    if [ $SECONDS -ge $deadline ]; then tail -30 "$LOGFILE" >&2; die "Kafka did not become ready within ${EVALGAP_KAFKA_START_TIMEOUT:-120}s"; fi
    sleep 0.5
  done
  log "Kafka ready on 127.0.0.1:$KAFKA_PORT"
}

stop() {
  local pid
  if ! pid=$(running_pid); then log "Kafka is not running"; rm -f "$PIDFILE"; return 0; fi
  log "stopping Kafka (pid $pid)"
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || { rm -f "$PIDFILE"; return 0; }; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
}

status() {
  if port_open "$KAFKA_PORT"; then echo "running on 127.0.0.1:$KAFKA_PORT$(pid=$(running_pid) && echo " (pid $pid)")"; return 0; fi
  echo "stopped"; return 1
}

LEASES="$KAFKA_HOME/leases"
STARTED_BY_LEASE="$KAFKA_HOME/started-by-lease"

# run "$@" holding the lease lock (one acquire/release at a time, across processes)
with_lock() {
  mkdir -p "$LEASES"
  exec 9>"$KAFKA_HOME/leases.lock"
  flock 9
  "$@"
  local rc=$?
  flock -u 9
  return $rc
}

live_leases() {
  local f pid n=0
  for f in "$LEASES"/*; do
    [ -e "$f" ] || continue
    pid=${f##*/}
    if kill -0 "$pid" 2>/dev/null; then n=$((n + 1)); else rm -f "$f"; fi
  done
  echo "$n"
}

acquire_locked() {
  local user="$1"
  if ! port_open "$KAFKA_PORT"; then
    start
    touch "$STARTED_BY_LEASE"
  else
    log "Kafka already running on 127.0.0.1:$KAFKA_PORT; sharing it"
  fi
  touch "$LEASES/$user"
}

release_locked() {
  local user="$1" n
  rm -f "$LEASES/$user"
  n=$(live_leases)
  if [ "$n" -gt 0 ]; then log "Kafka left running: $n other run(s) still use it"; return 0; fi
  if [ -f "$STARTED_BY_LEASE" ]; then rm -f "$STARTED_BY_LEASE"; stop; fi
}

case "${1:-}" in
  acquire) [[ "${2:-}" =~ ^[0-9]+$ ]] || die "usage: $0 acquire PID"; with_lock acquire_locked "$2" ;;
  release) [[ "${2:-}" =~ ^[0-9]+$ ]] || die "usage: $0 release PID"; with_lock release_locked "$2" ;;
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  reset) stop; rm -rf "$DATA"; log "broker data removed" ;;
  *) echo "usage: $0 install|start|stop|status|reset|acquire PID|release PID" >&2; exit 2 ;;
esac
