#!/usr/bin/env bash
# Soak: repeats the SIGKILL crash test N times (default 20) with M kills each (default 10)
# against a private broker, and prints the tally. Not run in CI.
#   scripts/soak.sh [runs] [kills-per-run]
set -uo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
kills="${2:-10}"
port="${KPIFLOW_SOAK_PORT:-39592}"
export KPIFLOW_KAFKA_PORT="$port"
bootstrap="$(deploy/local/kafka.sh start)" || exit 1
trap 'KPIFLOW_KAFKA_PORT=$port deploy/local/kafka.sh stop >/dev/null 2>&1 || true' EXIT
export KPIFLOW_TEST_BOOTSTRAP="$bootstrap" KPIFLOW_CRASH_KILLS="$kills"
cargo test -q --test e2e --no-run >/dev/null || exit 1
passed=0
failed=0
for i in $(seq 1 "$runs"); do
  if cargo test -q --test e2e crash -- --nocapture >"/tmp/kpiflow-soak-$i.log" 2>&1; then
    passed=$((passed + 1)); echo "run $i: ok"
  else
    failed=$((failed + 1)); echo "run $i: FAILED (log: /tmp/kpiflow-soak-$i.log)"
  fi
done
echo "soak: $passed passed, $failed failed, $runs runs x $kills kills"
[ "$failed" -eq 0 ]
