#!/usr/bin/env bash
# scripts/test.sh: THE test command. Runs kpiflow's whole test suite against a real Kafka
# broker:
#
#   python3 -m unittest discover -s tests/oracle   (the KPI oracle's unit tests)
#   cargo test --workspace --all-targets --no-fail-fast "$@"
#   cargo test --workspace --doc
#
# Arguments are passed to the first cargo command, e.g. `scripts/test.sh -p kpiflow-core`
# or `scripts/test.sh -- --nocapture`. The exit code is cargo's (the first failing one).
#
# Broker:
#   - If KPIFLOW_TEST_BOOTSTRAP is set (host:port), the tests use that broker as it is.
#   - Otherwise a private broker is started with deploy/local/kafka.sh on a test port, in
#     its own data dir that is wiped before and after the run; it is always stopped when
#     this script exits (also on Ctrl-C / SIGTERM).
#
# S3 (the object-storage tests of checkpoints and Parquet tables):
#   - If KPIFLOW_TEST_S3_ENDPOINT is set, the tests use that S3-compatible server as it is
#     (bucket KPIFLOW_TEST_S3_BUCKET, default kpiflow-test, must exist; credentials from
#     AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY).
#   - Otherwise deploy/local/s3.sh starts moto's S3 server on a test port (installing moto
#     from PyPI into the cache the first time) and stops it when this script exits.
#
# Environment (all optional):
#   KPIFLOW_TEST_BOOTSTRAP  use this broker instead of starting one
#   KPIFLOW_TEST_S3_ENDPOINT  use this S3 endpoint instead of starting one
#   KPIFLOW_S3_PORT         port of the private S3 server (default: 39500)
#   KPIFLOW_KAFKA_PORT      client port of the private broker (default: 39092; the
#                           controller takes the next port, see deploy/local/kafka.sh)
#   KPIFLOW_KAFKA_DATA      data dir of the private broker
#                           (default: $KPIFLOW_CACHE/test-broker-<port>)
#   KPIFLOW_CACHE           cache root (default: $HOME/.cache/kpiflow)
#   KPIFLOW_TEST_DRY_RUN    if 1, start and stop the broker but only print the cargo
#                           commands instead of running them
#   The other KPIFLOW_KAFKA_* variables of deploy/local/kafka.sh apply too.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
KAFKA_SH="$ROOT/deploy/local/kafka.sh"

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
esac

log() { printf 'test.sh: %s\n' "$*" >&2; }

command -v cargo >/dev/null 2>&1 || { log "error: 'cargo' not found (install Rust with rustup)"; exit 1; }

started_broker=0
started_s3=0
# shellcheck disable=SC2317 # invoked by the EXIT trap
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if ((started_s3)); then
        "$ROOT/deploy/local/s3.sh" stop || log "warning: could not stop the test S3 server"
    fi
    if ((started_broker)); then
        log "stopping the test broker and deleting its data"
        "$KAFKA_SH" reset || log "warning: could not reset the test broker ($KPIFLOW_KAFKA_DATA)"
    fi
    exit "$status"
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [[ -n ${KPIFLOW_TEST_BOOTSTRAP:-} ]]; then
    log "using the broker at KPIFLOW_TEST_BOOTSTRAP=$KPIFLOW_TEST_BOOTSTRAP"
else
    export KPIFLOW_CACHE="${KPIFLOW_CACHE:-${HOME:?HOME is not set}/.cache/kpiflow}"
    export KPIFLOW_KAFKA_PORT="${KPIFLOW_KAFKA_PORT:-39092}"
    export KPIFLOW_KAFKA_DATA="${KPIFLOW_KAFKA_DATA:-$KPIFLOW_CACHE/test-broker-$KPIFLOW_KAFKA_PORT}"
    started_broker=1
    # A broker left over from a killed run would carry old topics: start from scratch.
    "$KAFKA_SH" reset
    KPIFLOW_TEST_BOOTSTRAP="$("$KAFKA_SH" start)"
    export KPIFLOW_TEST_BOOTSTRAP
    log "test broker: KPIFLOW_TEST_BOOTSTRAP=$KPIFLOW_TEST_BOOTSTRAP"
fi

if [[ -n ${KPIFLOW_TEST_S3_ENDPOINT:-} ]]; then
    log "using the S3 server at KPIFLOW_TEST_S3_ENDPOINT=$KPIFLOW_TEST_S3_ENDPOINT"
else
    export KPIFLOW_S3_PORT="${KPIFLOW_S3_PORT:-39500}"
    export KPIFLOW_TEST_S3_BUCKET="${KPIFLOW_TEST_S3_BUCKET:-kpiflow-test}"
    export KPIFLOW_S3_BUCKET="$KPIFLOW_TEST_S3_BUCKET"
    started_s3=1
    KPIFLOW_TEST_S3_ENDPOINT="$("$ROOT/deploy/local/s3.sh" start)"
    export KPIFLOW_TEST_S3_ENDPOINT
    # moto accepts any credentials; SigV4 still needs some to sign with.
    export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-kpiflow-test}"
    export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-kpiflow-test}"
    log "test S3 server: KPIFLOW_TEST_S3_ENDPOINT=$KPIFLOW_TEST_S3_ENDPOINT"
fi

run() {
    if [[ ${KPIFLOW_TEST_DRY_RUN:-0} == 1 ]]; then
        printf 'dry run:'
        printf ' %q' "$@"
        printf '\n'
        return 0
    fi
    "$@"
}

status=0
# The independent KPI oracle's own unit tests (Python standard library only); the
# end-to-end test runs the oracle itself.
run python3 -m unittest discover -s tests/oracle -t tests/oracle || status=$?
run cargo test --workspace --all-targets --no-fail-fast "$@" || { rc=$?; ((status)) || status=$rc; }
# The doc tests run even if the first command failed, so one run reports every failure.
run cargo test --workspace --doc || { rc=$?; ((status)) || status=$rc; }
if ((status)); then
    log "tests failed (exit code $status)"
fi
exit "$status"
