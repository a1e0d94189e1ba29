#!/usr/bin/env bash
# scripts/chaos.sh: the long chaos run (local only, not in CI; scripts/test.sh runs the short
# one). A simulated stream of about 300,000 events is published over 2 minutes while
# `kpiflow process` members and `kpiflow sink` are SIGKILLed in turn at random moments (40
# kills: 20 of a processor, 20 of the sink), the broker is stopped for 3 s and restarted, and a
# second processor joins the group (a rebalance). Then the same stream runs uninterrupted, and
# the test compares: every KPI key and value, the sink's kpi_latest and kpi_values against the
# topic, the breach transitions (one (breach_id, state) pair each), and the independent oracle
# (tests/oracle) over every KPI. It prints a table and exits non-zero on any difference.
#
#   scripts/chaos.sh                      # the long run (debug build, as scripts/test.sh)
#   KPIFLOW_CHAOS_KILLS=60 scripts/chaos.sh
#
# Environment (all optional):
#   KPIFLOW_CHAOS_KILLS    kills in all, processor and sink in turn (default 40)
#   KPIFLOW_CHAOS_SHOPS    simulated shops (default 8)
#   KPIFLOW_CHAOS_DAYS     simulated days (default 14)
#   KPIFLOW_CHAOS_ORDERS   orders per shop and day (default 630: ~300k events in all)
#   KPIFLOW_CHAOS_SECONDS  how long publishing the stream takes, the kills fall in it (default 120)
#   KPIFLOW_RESTART_TEST_PORT  port of the private broker the run starts and restarts (default 29692, below the
#                          ephemeral port range: see tests/e2e/crash.rs)
#   KPIFLOW_CHAOS_PROFILE  cargo profile of the test and the kpiflow binary (default dev; release
#                          builds ~30 min cold)
#   CARGO_TARGET_DIR       build cache (default: $HOME/.cache/kpiflow/target)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${HOME:?HOME is not set}/.cache/kpiflow/target}"
export KPIFLOW_CHAOS_KILLS="${KPIFLOW_CHAOS_KILLS:-40}"
export KPIFLOW_CHAOS_SHOPS="${KPIFLOW_CHAOS_SHOPS:-8}"
export KPIFLOW_CHAOS_DAYS="${KPIFLOW_CHAOS_DAYS:-14}"
export KPIFLOW_CHAOS_ORDERS="${KPIFLOW_CHAOS_ORDERS:-630}"
export KPIFLOW_CHAOS_SECONDS="${KPIFLOW_CHAOS_SECONDS:-120}"
log="${TMPDIR:-/tmp}/kpiflow-chaos-$$.log"
echo "chaos.sh: building and running; full log: $log" >&2
status=0
cargo test --profile "${KPIFLOW_CHAOS_PROFILE:-dev}" -p kpiflow --test e2e -- --exact \
    chaos::chaos_kills_a_broker_restart_and_a_rebalance_lose_and_double_nothing \
    --nocapture >"$log" 2>&1 || status=$?
# The table, the oracle's per-KPI summary and the verdict.
grep -E '^\| |^(events:|kpi  |TOTAL)|^test result|panicked' "$log" || true
if ((status)); then
    echo "chaos.sh: FAILED (exit code $status); see $log" >&2
fi
exit "$status"
