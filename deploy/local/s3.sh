#!/usr/bin/env bash
# s3.sh: a local S3-compatible server for kpiflow's tests and demo: moto's server mode
# (Apache-2.0, from PyPI; the S3 engine LocalStack is built on and object_store's own CI
# tests against). It speaks the S3 REST API with SigV4 signing over HTTP, keeps objects in
# memory, and accepts any credentials. No Docker and no download outside PyPI: moto is
# installed into a virtualenv in the cache, outside the repository.
#
# Usage: deploy/local/s3.sh <fetch|start|stop|status|help>
#
#   fetch   install moto into the cache (start does it when missing)
#   start   start the server in the background, create the bucket, print the endpoint URL
#   stop    stop it (its objects are gone: they live in memory)
#
# Environment (all optional):
#   KPIFLOW_CACHE        cache root (default: $HOME/.cache/kpiflow)
#   KPIFLOW_S3_PORT      port on 127.0.0.1 (default: 9000)
#   KPIFLOW_S3_BUCKET    bucket created at start (default: kpiflow-test)
#
# Informational messages go to stderr; `start` prints only the endpoint
# (http://127.0.0.1:<port>) on stdout, so `ENDPOINT=$(deploy/local/s3.sh start)` works.
# Clients need some credentials to sign with, e.g. AWS_ACCESS_KEY_ID=kpiflow
# AWS_SECRET_ACCESS_KEY=kpiflow AWS_REGION=us-east-1, and `allow_http = "true"`.
set -euo pipefail

MOTO_VERSION=5.2.5
KPIFLOW_CACHE="${KPIFLOW_CACHE:-${HOME:?HOME is not set}/.cache/kpiflow}"
PORT="${KPIFLOW_S3_PORT:-9000}"
BUCKET="${KPIFLOW_S3_BUCKET:-kpiflow-test}"
VENV="$KPIFLOW_CACHE/moto-$MOTO_VERSION"
DATA="$KPIFLOW_CACHE/s3-$PORT"
PID_FILE="$DATA/server.pid"
LOG_FILE="$DATA/server.log"
ENDPOINT="http://127.0.0.1:$PORT"

log() { printf 's3.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

fetch() {
    # The marker is written last, so a half-finished install is redone, not trusted.
    if [[ -f $VENV/.installed ]]; then
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || die "python3 not found"
    log "installing moto[server]==$MOTO_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (Debian: apt-get install python3-venv)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" \
        || die "pip could not install moto[server]==$MOTO_VERSION from PyPI"
    touch "$VENV/.installed"
}

running() { [[ -f $PID_FILE ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

# HTTP `method` on `url`; prints the status code (000 when nothing answers).
http() {
    python3 - "$1" "$2" <<'EOF'
import sys, urllib.request, urllib.error
req = urllib.request.Request(sys.argv[2], method=sys.argv[1])
try:
    print(urllib.request.urlopen(req, timeout=2).status)
except urllib.error.HTTPError as e:
    print(e.code)
except Exception:
    print("000")
EOF
}

start() {
    fetch
    mkdir -p "$DATA"
    if running; then
        log "already running (pid $(cat "$PID_FILE")) on $ENDPOINT"
    else
        [[ $(http GET "$ENDPOINT/") == 000 ]] || die "port $PORT is taken by another program"
        [[ -f $LOG_FILE ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
        nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$LOG_FILE" 2>&1 &
        echo $! >"$PID_FILE"
        local deadline=$((SECONDS + 60))
        until [[ $(http GET "$ENDPOINT/") == 200 ]]; do
            running || die "the server exited; see $LOG_FILE"
            ((SECONDS < deadline)) || die "no answer on $ENDPOINT within 60 s; see $LOG_FILE"
            sleep 0.2
        done
        log "started (pid $(cat "$PID_FILE")) on $ENDPOINT"
    fi
    local code
    code=$(http PUT "$ENDPOINT/$BUCKET")
    [[ $code == 200 ]] || die "creating bucket $BUCKET: HTTP $code"
    echo "$ENDPOINT"
}

stop() {
    if ! running; then
        log "not running"
        rm -f "$PID_FILE"
        return 0
    fi
    local pid
    pid=$(cat "$PID_FILE")
    kill "$pid"
    local deadline=$((SECONDS + 15))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || { kill -9 "$pid" 2>/dev/null || true; break; }
        sleep 0.2
    done
    rm -f "$PID_FILE"
    log "stopped"
}

case "${1:-help}" in
    fetch) fetch ;;
    start) start ;;
    stop) stop ;;
    status) if running; then echo "running on $ENDPOINT"; else echo "stopped"; exit 1; fi ;;
    help | -h | --help) usage ;;
    *) usage; exit 2 ;;
esac
