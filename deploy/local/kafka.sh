#!/usr/bin/env bash
# kafka.sh: a local single-node Apache Kafka broker (KRaft, broker+controller in one JVM)
# for kpiflow's tests and demo. No Docker and no Kafka download: the broker's jars come
# from Maven Central through ./pom.xml and are cached outside the repository.
#
# Usage: deploy/local/kafka.sh <fetch|start|run|stop|status|reset|help>
#
# Environment (all optional):
#   KPIFLOW_CACHE                  cache root for jars and broker data
#                                  (default: $HOME/.cache/kpiflow)
#   KPIFLOW_KAFKA_PORT             client (PLAINTEXT) port on 127.0.0.1 (default: 9092)
#   KPIFLOW_KAFKA_CONTROLLER_PORT  KRaft controller port on 127.0.0.1
#                                  (default: KPIFLOW_KAFKA_PORT + 1)
#   KPIFLOW_KAFKA_DATA             broker data dir: server.properties, log4j2.properties,
#                                  broker.log, broker.pid and the partition data
#                                  (default: $KPIFLOW_CACHE/broker-<port>)
#   KPIFLOW_KAFKA_HEAP             JVM heap options, word-split
#                                  (default: "-Xms256m -Xmx1g")
#   KPIFLOW_KAFKA_START_TIMEOUT    seconds `start` waits for the broker to answer
#                                  (default: 120)
#
# Files:
#   $KPIFLOW_CACHE/kafka-<version>/libs   the broker's jars (<version> is pom.xml's
#                                          kafka.version); Maven's own repository stays
#                                          where Maven keeps it (~/.m2 by default)
#   <data>/broker.log                     the broker's log (INFO); the previous run's
#                                          log is kept as broker.log.1
#
# Informational messages go to stderr; `start` prints only the bootstrap address
# (127.0.0.1:<port>) on stdout, so `BOOTSTRAP=$(deploy/local/kafka.sh start)` works.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$SCRIPT_DIR/pom.xml"
# Pinned so that every Maven version resolves the same plugin.
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

KPIFLOW_CACHE="${KPIFLOW_CACHE:-${HOME:?HOME is not set}/.cache/kpiflow}"
PORT="${KPIFLOW_KAFKA_PORT:-9092}"
if [[ -n ${KPIFLOW_KAFKA_CONTROLLER_PORT:-} ]]; then
    CONTROLLER_PORT="$KPIFLOW_KAFKA_CONTROLLER_PORT"
elif [[ $PORT =~ ^[0-9]{1,5}$ ]]; then
    CONTROLLER_PORT=$((10#$PORT + 1))
else
    CONTROLLER_PORT="(port + 1)"
fi
DATA="$(realpath -m "${KPIFLOW_KAFKA_DATA:-$KPIFLOW_CACHE/broker-$PORT}")"
HEAP="${KPIFLOW_KAFKA_HEAP:--Xms256m -Xmx1g}"
START_TIMEOUT="${KPIFLOW_KAFKA_START_TIMEOUT:-120}"
STOP_TIMEOUT=30
HOST=127.0.0.1
BOOTSTRAP="$HOST:$PORT"

PID_FILE="$DATA/broker.pid"
LOG_FILE="$DATA/broker.log"
PROPS="$DATA/server.properties"
LOG4J="$DATA/log4j2.properties"
LOG_DIRS="$DATA/kafka-logs"
MARKER="$DATA/.kpiflow-broker"
# Kafka 4 logs this (from KafkaRaftServer) once the broker is unfenced and serving.
READY_TEXT="Kafka Server started"

usage() {
    cat <<EOF
Usage: ${0##*/} <command>

A local single-node Kafka broker (KRaft) on $HOST, for kpiflow's tests and demo.

Commands:
  fetch    download the broker's jars with Maven (once) into \$KPIFLOW_CACHE
  start    start the broker in the background and wait until it answers;
           prints the bootstrap address; does nothing if it is already running
  run      run the broker in the foreground (exec java), e.g. under a supervisor
  stop     stop the broker (SIGTERM, SIGKILL after ${STOP_TIMEOUT}s)
  status   print running/stopped; exit 0 if running, 1 otherwise
  reset    stop the broker and delete its data dir (keeps the jar cache)
  help     show this text

Environment:
  KPIFLOW_CACHE                  cache root             (now: $KPIFLOW_CACHE)
  KPIFLOW_KAFKA_PORT             client port            (now: $PORT)
  KPIFLOW_KAFKA_CONTROLLER_PORT  controller port        (now: $CONTROLLER_PORT)
  KPIFLOW_KAFKA_DATA             data dir               (now: $DATA)
  KPIFLOW_KAFKA_HEAP             JVM heap options       (now: $HEAP)
  KPIFLOW_KAFKA_START_TIMEOUT    start timeout, seconds (now: $START_TIMEOUT)
EOF
}

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() { printf 'kafka.sh: error: %s\n' "$*" >&2; exit 1; }

# --- prerequisites -----------------------------------------------------------------------

valid_port() { [[ $1 =~ ^[1-9][0-9]{0,4}$ ]] && (($1 <= 65535)); }

check_settings() {
    valid_port "$PORT" || die "KPIFLOW_KAFKA_PORT must be a port number, got '$PORT'"
    valid_port "$CONTROLLER_PORT" \
        || die "the controller port must be a port number, got '$CONTROLLER_PORT' (KPIFLOW_KAFKA_CONTROLLER_PORT)"
    [[ $PORT != "$CONTROLLER_PORT" ]] || die "client and controller ports are both $PORT"
    [[ $START_TIMEOUT =~ ^[0-9]+$ ]] \
        || die "KPIFLOW_KAFKA_START_TIMEOUT must be a number of seconds, got '$START_TIMEOUT'"
}

require_java() {
    command -v java >/dev/null 2>&1 \
        || die "'java' not found: Kafka needs a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)"
    local version major
    version="$(java -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1)"
    major="${version%%.*}"
    if [[ $major =~ ^[0-9]+$ ]] && ((major < 17)); then
        die "'java' is version $version; Kafka 4 needs Java 17+ (Debian: apt-get install openjdk-17-jre-headless)"
    fi
}

require_mvn() {
    command -v mvn >/dev/null 2>&1 \
        || die "'mvn' not found: it fetches Kafka's jars (Debian: apt-get install maven)"
}

kafka_version() {
    local v
    v="$(sed -n 's:.*<kafka\.version>[[:space:]]*\([^<[:space:]]*\)[[:space:]]*</kafka\.version>.*:\1:p' "$POM" | head -n 1)"
    [[ -n $v ]] || die "no <kafka.version> property in $POM"
    printf '%s\n' "$v"
}

KAFKA_VERSION="$(kafka_version)"
KAFKA_HOME="$KPIFLOW_CACHE/kafka-$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
STAMP="$LIBS/.pom.sha256"

# --- fetch -------------------------------------------------------------------------------

pom_hash() { sha256sum "$POM" | cut -d' ' -f1; }

# The cache is complete when the stamp (written last, before the atomic rename) matches
# the current pom.xml.
cache_ok() {
    [[ -f $STAMP ]] && [[ "$(cat "$STAMP")" == "$(pom_hash)" ]] \
        && compgen -G "$LIBS/kafka_2.13-*.jar" >/dev/null
}

fetch() {
    if ! cache_ok; then
        require_mvn
        mkdir -p "$KAFKA_HOME"
        # The lock serializes concurrent fetches; the subshell keeps fd 9 (and the lock)
        # away from the broker JVM started later.
        (
            flock 9
            if cache_ok; then exit 0; fi
            rm -rf "$KAFKA_HOME"/.libs.tmp.* "$KAFKA_HOME"/.work.tmp.* "$LIBS.old"
            tmp="$(mktemp -d "$KAFKA_HOME/.libs.tmp.XXXXXX")"
            work="$(mktemp -d "$KAFKA_HOME/.work.tmp.XXXXXX")"
            trap 'rm -rf "$tmp" "$work"' EXIT
            # Maven runs on a copy of the pom so that nothing (target/) lands in the repo.
            cp "$POM" "$work/pom.xml"
            log "fetching Kafka $KAFKA_VERSION jars with Maven (first time only) ..."
            # (Debian's Maven 3.8 prints colour resets even in batch mode: strip them.)
            (cd "$work" && mvn -B -Dstyle.color=never "$DEP_PLUGIN:copy-dependencies" \
                -DoutputDirectory="$tmp" -DincludeScope=runtime) 2>&1 \
                | sed -u 's/\x1b\[[0-9;]*m//g' >&2 \
                || die "Maven could not fetch the Kafka jars (see its output above)"
            compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null \
                || die "Maven finished but no kafka_2.13 jar was copied"
            pom_hash >"$tmp/.pom.sha256"
            if [[ -e $LIBS ]]; then mv "$LIBS" "$LIBS.old"; fi
            mv "$tmp" "$LIBS"
            rm -rf "$LIBS.old" "$work"
            trap - EXIT
        ) 9>"$KAFKA_HOME/.fetch.lock"
        cache_ok || die "the jar cache $LIBS is still incomplete"
    fi
    log "Kafka $KAFKA_VERSION jars: $LIBS"
}

# --- process helpers ---------------------------------------------------------------------

port_open() {
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$HOST" "$1" 2>/dev/null
}

# Alive and not a zombie.
pid_alive() {
    local pid="$1" state
    kill -0 "$pid" 2>/dev/null || return 1
    state="$(sed -n 's/^[0-9]* (.*) \([A-Za-z]\) .*/\1/p' "/proc/$pid/stat" 2>/dev/null || true)"
    [[ $state != Z ]]
}

# Prints the broker's pid if the pid file names a live process that is this broker
# (a JVM running kafka.Kafka with this data dir's server.properties).
broker_pid() {
    [[ -f $PID_FILE ]] || return 1
    local pid cmdline
    pid="$(tr -dc '0-9' <"$PID_FILE")"
    [[ -n $pid ]] && pid_alive "$pid" || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ $cmdline == *kafka.Kafka*"$PROPS"* ]] || return 1
    printf '%s\n' "$pid"
}

broker_ready() {
    port_open "$PORT" && [[ -f $LOG_FILE ]] && grep -qF "$READY_TEXT" "$LOG_FILE"
}

show_log_tail() {
    if [[ -f $LOG_FILE ]]; then
        log "last 50 lines of $LOG_FILE:"
        tail -n 50 "$LOG_FILE" >&2
    else
        log "no log file at $LOG_FILE"
    fi
}

# Waits until the broker answers. $1 = pid, $2 = "stop-on-timeout" to stop it on failure.
wait_ready() {
    local pid="$1" on_timeout="${2:-}" deadline=$((SECONDS + START_TIMEOUT))
    while ! broker_ready; do
        if ! pid_alive "$pid"; then
            show_log_tail
            rm -f "$PID_FILE"
            die "the broker (pid $pid) exited during startup"
        fi
        if ((SECONDS >= deadline)); then
            show_log_tail
            if [[ $on_timeout == stop-on-timeout ]]; then
                log "stopping the broker that did not come up"
                stop_broker || true
            fi
            die "the broker did not answer on $BOOTSTRAP within ${START_TIMEOUT}s (KPIFLOW_KAFKA_START_TIMEOUT)"
        fi
        sleep 0.5
    done
}

# --- configuration -----------------------------------------------------------------------

write_config() {
    mkdir -p "$DATA" "$LOG_DIRS"
    touch "$MARKER"
    cat >"$PROPS" <<EOF
# Generated by deploy/local/kafka.sh; rewritten on every start.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$HOST:$CONTROLLER_PORT
listeners=PLAINTEXT://$HOST:$PORT,CONTROLLER://$HOST:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$LOG_DIRS
num.partitions=3
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
    cat >"$LOG4J" <<EOF
# Generated by deploy/local/kafka.sh: everything to broker.log, nothing to the console.
status = warn
name = kpiflow-local-kafka
# Log4j's own shutdown hook would stop logging before Kafka's shutdown hook has finished;
# with it disabled the whole controlled shutdown reaches the (unbuffered) file.
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $LOG_FILE
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.requestchannel.name = kafka.network.RequestChannel\$
logger.requestchannel.level = WARN
EOF
}

java_base() {
    local heap
    read -r -a heap <<<"$HEAP"
    JAVA_CMD=(java "${heap[@]}" -XX:+UseG1GC -XX:MaxGCPauseMillis=20
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
        "-Dlog4j2.configurationFile=$LOG4J" "-Dkafka.logs.dir=$DATA"
        -cp "$LIBS/*")
}

format_if_needed() {
    [[ -f $LOG_DIRS/meta.properties ]] && return 0
    local cluster_id out
    java_base
    cluster_id="$("${JAVA_CMD[@]}" kafka.tools.StorageTool random-uuid 2>>"$LOG_FILE" | tail -n 1)"
    [[ -n $cluster_id ]] || { show_log_tail; die "could not generate a cluster id"; }
    if ! out="$("${JAVA_CMD[@]}" kafka.tools.StorageTool format -t "$cluster_id" -c "$PROPS" 2>&1)"; then
        printf '%s\n' "$out" >&2
        die "formatting $LOG_DIRS failed"
    fi
    log "formatted $LOG_DIRS (cluster id $cluster_id)"
}

# Common checks and preparation for start/run; the caller has checked that this broker
# is not running.
prepare() {
    require_java
    if port_open "$PORT"; then
        die "port $HOST:$PORT is already in use by another process (not the broker of $DATA)"
    fi
    if port_open "$CONTROLLER_PORT"; then
        die "controller port $HOST:$CONTROLLER_PORT is already in use by another process"
    fi
    fetch
    rm -f "$PID_FILE"
    write_config
    if [[ -f $LOG_FILE ]]; then mv -f "$LOG_FILE" "$LOG_FILE.1"; fi
    : >"$LOG_FILE"
    format_if_needed
    java_base
    JAVA_CMD+=(kafka.Kafka "$PROPS")
}

# --- commands ----------------------------------------------------------------------------

cmd_start() {
    local pid
    if pid="$(broker_pid)"; then
        if broker_ready; then
            log "already running (pid $pid) on $BOOTSTRAP"
        else
            log "already starting (pid $pid); waiting until it answers on $BOOTSTRAP ..."
            wait_ready "$pid"
            log "broker (pid $pid) is up"
        fi
        printf '%s\n' "$BOOTSTRAP"
        return 0
    fi
    prepare
    log "starting Kafka $KAFKA_VERSION on $BOOTSTRAP (data: $DATA, log: $LOG_FILE)"
    local started=$SECONDS
    # setsid: its own session, so the terminal's Ctrl-C or hang-up do not reach it.
    setsid "${JAVA_CMD[@]}" </dev/null >>"$LOG_FILE" 2>&1 &
    pid=$!
    printf '%s\n' "$pid" >"$PID_FILE"
    wait_ready "$pid" stop-on-timeout
    log "broker (pid $pid) is up after $((SECONDS - started))s"
    printf '%s\n' "$BOOTSTRAP"
}

cmd_run() {
    local pid
    if pid="$(broker_pid)"; then
        die "a broker is already running (pid $pid) on $BOOTSTRAP; stop it first"
    fi
    prepare
    log "running Kafka $KAFKA_VERSION in the foreground on $BOOTSTRAP (data: $DATA, log: $LOG_FILE)"
    printf '%s\n' "$$" >"$PID_FILE"
    exec "${JAVA_CMD[@]}"
}

stop_broker() {
    local pid waited=0
    if ! pid="$(broker_pid)"; then
        rm -f "$PID_FILE"
        log "not running ($DATA)"
        return 0
    fi
    log "stopping broker (pid $pid) ..."
    kill -TERM "$pid" 2>/dev/null || true
    while pid_alive "$pid" && ((waited < STOP_TIMEOUT * 10)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if pid_alive "$pid"; then
        log "still running after ${STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        waited=0
        while pid_alive "$pid" && ((waited < 100)); do
            sleep 0.1
            waited=$((waited + 1))
        done
        pid_alive "$pid" && die "broker (pid $pid) survived SIGKILL"
    fi
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_status() {
    local pid
    if pid="$(broker_pid)"; then
        if broker_ready; then
            echo "running (pid $pid) on $BOOTSTRAP"
            return 0
        fi
        echo "starting or unresponsive (pid $pid): $BOOTSTRAP does not answer yet"
        return 1
    fi
    echo "stopped ($DATA)"
    return 1
}

cmd_reset() {
    stop_broker
    if [[ ! -e $DATA ]]; then
        log "nothing to delete: $DATA does not exist"
        return 0
    fi
    local real
    real="$(realpath -m "$DATA")"
    case "$real" in
        / | "$(realpath -m "$HOME")" | "$(realpath -m "$KPIFLOW_CACHE")" | "$(realpath -m "$KAFKA_HOME")")
            die "refusing to delete $real" ;;
    esac
    [[ -f $MARKER ]] || die "refusing to delete $DATA: it is not a kafka.sh data dir (no $MARKER)"
    rm -rf "$DATA"
    log "deleted $DATA"
}

main() {
    local cmd="${1:-}"
    case "$cmd" in
        -h | --help | help) usage; return 0 ;;
        "") usage >&2; return 2 ;;
    esac
    [[ $# -eq 1 ]] || { usage >&2; die "'$cmd' takes no arguments"; }
    check_settings
    case "$cmd" in
        fetch) fetch ;;
        start) cmd_start ;;
        run) cmd_run ;;
        stop) stop_broker ;;
        status) cmd_status ;;
        reset) cmd_reset ;;
        *) usage >&2; die "unknown command '$cmd'" ;;
    esac
}

main "$@"
