#!/usr/bin/env bash
# Runs the benchmarks that print tables: the engine alone (processor/benches/engine.rs) and
# the pipeline over a real broker (benches/pipeline.rs), which this script starts on its own
# port and stops afterwards. Extra arguments go to both benchmarks, e.g.
#   scripts/bench.sh --shops 40 --days 14 --rate 2000 --seconds 30
set -euo pipefail
cd "$(dirname "$0")/.."
port="${KPIFLOW_BENCH_PORT:-39392}"
export KPIFLOW_KAFKA_PORT="$port"
bootstrap="$(deploy/local/kafka.sh start)"
trap 'KPIFLOW_KAFKA_PORT=$port deploy/local/kafka.sh stop >/dev/null 2>&1 || true' EXIT
export KPIFLOW_TEST_BOOTSTRAP="$bootstrap"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
# One cargo invocation for both benches: features are resolved once for the whole workspace,
# so DataFusion is built once (two `-p` runs resolved different feature sets and built it
# twice, 25+ minutes before the first figure).
cargo bench --workspace --bench engine --bench pipeline -- "$@"
