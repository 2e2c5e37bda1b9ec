#!/usr/bin/env bash
# Runs the reduced learning protocol: random init, MoCo v2 and ASCL for each seed, one process
# per run, each logged to benchmarks/results/logs/. Results: benchmarks/results/learning_*.json.
#   nohup benchmarks/learning.sh > benchmarks/results/logs/learning.out 2>&1 &
#   SEEDS="0 1 2" benchmarks/learning.sh   # more seeds
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
SEEDS="${SEEDS:-0 1}"
mkdir -p benchmarks/results/logs
# Untrained backbones first (cheap), then the trained runs paired by seed, so that a protocol
# cut short still holds complete MoCo/ASCL pairs.
for seed in $SEEDS; do
  runs+=("random $seed")
done
for seed in $SEEDS; do
  runs+=("moco $seed" "ascl $seed")
done
for run in "${runs[@]}"; do
  read -r method seed <<<"$run"
  log="benchmarks/results/logs/learning_${method}_seed${seed}.log"
  echo "$(date -u +%T) ${method} seed ${seed} -> ${log}"
  PYTHONPATH=. "$PYTHON" -m benchmarks.learning --flagfile=benchmarks/learning.flags \
    --method="$method" --seed="$seed" "$@" >"$log" 2>&1
done
echo "$(date -u +%T) done"
