#!/usr/bin/env bash
# Private test services on loopback: a ZooKeeper server and a nisshi Kafka-protocol broker,
# each on a free port, with their data in a temporary directory (docs/kafka-brokers.md,
# docs/infra.md). scripts/install-deps.sh installs both.
#
#   scripts/services.sh start [all|zookeeper|kafka]   start (what is not already running)
#   scripts/services.sh stop                          stop what start started, remove its data
#   scripts/services.sh env                           print the export lines
#   scripts/services.sh status
#
# `start` writes the export lines to $SLUICE_SERVICES_DIR/services.env (default
# .tmp/services/services.env) and prints them:
#   export SLUICE_ZOOKEEPER=127.0.0.1:PORT
#   export SLUICE_KAFKA_BROKERS=127.0.0.1:PORT
# so `eval "$(scripts/services.sh start)"` or `. .tmp/services/services.env` sets them.
# Every wait is bounded; logs stay in the services directory for a failed start.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR="${SLUICE_SERVICES_DIR:-$PWD/.tmp/services}"
ENV_FILE="$DIR/services.env"
BIN_DIR="${CARGO_HOME:-$HOME/.cargo}/bin"
ZK_CP="/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar"
START_TIMEOUT="${SLUICE_SERVICES_TIMEOUT:-60}"   # seconds, per service

log() { echo "services: $*" >&2; }
die() { log "$*"; exit 1; }

nisshi_bin() {
    if command -v nisshi >/dev/null 2>&1; then command -v nisshi
    elif [ -x "$BIN_DIR/nisshi" ]; then echo "$BIN_DIR/nisshi"
    else return 1
    fi
}

# True when something accepts connections on 127.0.0.1:$1.
port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# A port nothing listens on (the service's own start confirms it got it).
free_port() {
    local p i
    for i in $(seq 1 50); do
        p=$(( 20000 + (RANDOM * 32768 + RANDOM) % 40000 ))
        if ! port_open "$p"; then echo "$p"; return 0; fi
    done
    die "no free port found"
}

# The PID in $1's pid file when that process is alive and is the expected program ($2).
alive_pid() {
    local f="$DIR/$1.pid" pid
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$2" || return 1
    echo "$pid"
}

# True while the process of pid file $1 exists and has not exited (a zombie counts as exited).
running() {
    local pid state
    pid=$(cat "$DIR/$1.pid" 2>/dev/null) && [ -n "$pid" ] || return 1
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

zk_ruok() {
    local reply
    reply=$(timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1; printf ruok >&3; cat <&3" 2>/dev/null || true)
    [ "$reply" = imok ]
}

write_env() {
    mkdir -p "$DIR"
    {
        if [ -f "$DIR/zookeeper.port" ] && alive_pid zookeeper ZooKeeperServerMain >/dev/null; then
            echo "export SLUICE_ZOOKEEPER=127.0.0.1:$(cat "$DIR/zookeeper.port")"
        fi
        if [ -f "$DIR/kafka.port" ] && alive_pid kafka nisshi >/dev/null; then
            echo "export SLUICE_KAFKA_BROKERS=127.0.0.1:$(cat "$DIR/kafka.port")"
        fi
    } >"$ENV_FILE.partial"
    mv "$ENV_FILE.partial" "$ENV_FILE"
}

start_zookeeper() {
    if alive_pid zookeeper ZooKeeperServerMain >/dev/null; then
        log "zookeeper already running on port $(cat "$DIR/zookeeper.port")"
        return 0
    fi
    command -v java >/dev/null && [ -f /usr/share/java/zookeeper.jar ] ||
        die "ZooKeeper is not installed: run scripts/install-deps.sh"
    local attempt port data t0
    for attempt in 1 2 3; do
        port=$(free_port)
        data="$DIR/zookeeper-data"
        rm -rf "$data"
        mkdir -p "$data"
        cat >"$DIR/zoo.cfg" <<EOF
tickTime=200
dataDir=$data
clientPort=$port
clientPortAddress=127.0.0.1
minSessionTimeout=400
maxSessionTimeout=30000
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
EOF
        nohup java -Xmx256m -cp "$ZK_CP" org.apache.zookeeper.server.ZooKeeperServerMain \
            "$DIR/zoo.cfg" >"$DIR/zookeeper.log" 2>&1 </dev/null &
        echo $! >"$DIR/zookeeper.pid"
        echo "$port" >"$DIR/zookeeper.port"
        t0=$SECONDS
        while [ $((SECONDS - t0)) -lt "$START_TIMEOUT" ]; do
            if ! running zookeeper; then
                log "zookeeper exited (attempt $attempt, port $port); log: $DIR/zookeeper.log"
                tail -5 "$DIR/zookeeper.log" >&2 || true
                break
            fi
            if zk_ruok "$port"; then
                log "zookeeper ready on 127.0.0.1:$port (pid $(cat "$DIR/zookeeper.pid"), $((SECONDS - t0)) s)"
                return 0
            fi
            sleep 0.2   # polling interval of a bounded readiness loop
        done
        stop_one zookeeper ZooKeeperServerMain
    done
    die "zookeeper did not become ready; see $DIR/zookeeper.log"
}

start_kafka() {
    if alive_pid kafka nisshi >/dev/null; then
        log "nisshi already running on port $(cat "$DIR/kafka.port")"
        return 0
    fi
    local bin attempt port t0
    bin=$(nisshi_bin) || die "nisshi is not installed: run scripts/install-deps.sh"
    for attempt in 1 2 3; do
        port=$(free_port)
        mkdir -p "$DIR/kafka-data"
        # The memory engine keeps nothing on disk (and applies no retention; DeleteRecords works).
        # (In a subshell for the working directory: a sqlite engine's file is relative to it.)
        (
            cd "$DIR/kafka-data"
            nohup "$bin" broker \
                --listener-url "tcp://127.0.0.1:$port" \
                --advertised-listener-url "tcp://127.0.0.1:$port" \
                --storage-engine "${SLUICE_NISSHI_STORAGE:-memory://nisshi/}" \
                --group-initial-rebalance-delay 0s \
                >"$DIR/kafka.log" 2>&1 </dev/null &
            echo $! >"$DIR/kafka.pid"
        )
        echo "$port" >"$DIR/kafka.port"
        t0=$SECONDS
        while [ $((SECONDS - t0)) -lt "$START_TIMEOUT" ]; do
            if ! running kafka; then
                log "nisshi exited (attempt $attempt, port $port); log: $DIR/kafka.log"
                tail -5 "$DIR/kafka.log" >&2 || true
                break
            fi
            if timeout 5 "$bin" topic list --broker "tcp://127.0.0.1:$port" >/dev/null 2>&1; then
                log "nisshi ready on 127.0.0.1:$port (pid $(cat "$DIR/kafka.pid"), $((SECONDS - t0)) s)"
                return 0
            fi
            sleep 0.2   # polling interval of a bounded readiness loop
        done
        stop_one kafka nisshi
    done
    die "nisshi did not become ready; see $DIR/kafka.log"
}

# Stops the process of pid file $1 if it is still the program $2: TERM, up to 10 s, then KILL.
stop_one() {
    local pid i
    if pid=$(alive_pid "$1" "$2"); then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 50); do
            [ -d "/proc/$pid" ] || break
            sleep 0.2   # bounded wait for exit
        done
        if [ -d "/proc/$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
        log "stopped $1 (pid $pid)"
    fi
    rm -f "$DIR/$1.pid" "$DIR/$1.port"
}

cmd="${1:-}"
what="${2:-all}"
case "$cmd" in
    start)
        mkdir -p "$DIR"
        case "$what" in
            all) start_zookeeper; start_kafka ;;
            zookeeper) start_zookeeper ;;
            kafka) start_kafka ;;
            *) die "start what? all, zookeeper or kafka" ;;
        esac
        write_env
        cat "$ENV_FILE"
        ;;
    stop)
        stop_one kafka nisshi
        stop_one zookeeper ZooKeeperServerMain
        rm -rf "$DIR/zookeeper-data" "$DIR/kafka-data" "$ENV_FILE"
        ;;
    env)
        [ -f "$ENV_FILE" ] || die "not started: scripts/services.sh start"
        cat "$ENV_FILE"
        ;;
    status)
        for s in "zookeeper ZooKeeperServerMain" "kafka nisshi"; do
            set -- $s
            if pid=$(alive_pid "$1" "$2"); then
                echo "$1: running, pid $pid, port $(cat "$DIR/$1.port")"
            else
                echo "$1: not running"
            fi
        done
        ;;
    *)
        echo "usage: scripts/services.sh start [all|zookeeper|kafka] | stop | env | status" >&2
        exit 2
        ;;
esac
