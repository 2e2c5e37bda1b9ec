#!/usr/bin/env bash
# Runs the reduced learning protocol: random init and every method for each seed, one process
# per run, each logged to benchmarks/results/logs/. Results: benchmarks/results/learning_*.json.
#   nohup benchmarks/learning.sh > benchmarks/results/logs/learning.out 2>&1 &
#   SEEDS="0 1 2" benchmarks/learning.sh   # more seeds
#   SEEDS="0 1 2" METHODS="simclr nnclr" benchmarks/learning.sh   # some methods only
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
SEEDS="${SEEDS:-0 1}"
# The trained methods, paired by seed (random init is scored first, for every seed).
METHODS="${METHODS:-moco ascl simclr dcl nnclr msf co2 moco_dcl}"
mkdir -p benchmarks/results/logs
# Untrained backbones first (cheap), then the trained runs paired by seed, so that a protocol
# cut short still holds complete MoCo/ASCL pairs.
for seed in $SEEDS; do
  runs+=("random $seed")
done
for seed in $SEEDS; do
  for method in $METHODS; do
    runs+=("$method $seed")
  done
done
for run in "${runs[@]}"; do
  read -r method seed <<<"$run"
  log="benchmarks/results/logs/learning_${method}_seed${seed}.log"
  # SimCLR, DCL and NNCLR are published with two strong views; the others with a weak key.
  case "$method" in simclr | dcl | nnclr) key=strong ;; *) key=weak ;; esac
  echo "$(date -u +%T) ${method} seed ${seed} -> ${log}"
  PYTHONPATH=. "$PYTHON" -m benchmarks.learning --flagfile=benchmarks/learning.flags \
    --method="$method" --seed="$seed" --key_augment="$key" "$@" >"$log" 2>&1
done
echo "$(date -u +%T) done"
