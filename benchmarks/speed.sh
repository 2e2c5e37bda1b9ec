#!/usr/bin/env bash
# The speed tables of docs/RESULTS.md, one after the other (never two at once: they would
# share the cores). Raw results: benchmarks/results/speed_*.json; logs: benchmarks/results/logs/.
#   benchmarks/speed.sh                    # every table
#   benchmarks/speed.sh overhead queue     # some of them
# TORCH_PYTHON: a Python with torch for the comparison (not a tfascl dependency); ROUNDS: how
# many TF-then-torch rounds it alternates (default 3).
# The CPU settings below are what a 2-core machine can time in minutes; on a GPU use the
# defaults (width 64, batch 256), e.g. SWEEP="" benchmarks/speed.sh batch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
TORCH_PYTHON="${TORCH_PYTHON:-/work/torchvenv/bin/python}"
# Sweeps at width 16, batch 128 (queue 1024) on CPU: width 64 takes ~6 s a step here.
SWEEP="${SWEEP---backbone_width=16 --batch_size=128 --queue_size=1024}"
# Timed steps: 1 warm-up window, then 3 windows of 1 step on CPU (a width-64 step takes up to
# a minute on a busy 2-core machine); on a GPU use e.g. TIMING="--steps=50 --windows=5".
TIMING="${TIMING---steps=1 --windows=3}"
R=benchmarks/results
mkdir -p "$R/logs"
tables=("$@")
[ ${#tables[@]} -eq 0 ] && tables=(torch overhead loss_head queue precision batch split_bn data)
for table in "${tables[@]}"; do
  echo "$(date -u +%T) $table"
  case "$table" in
    torch)
      # shellcheck disable=SC2086
      PYTHONPATH=. "$PYTHON" -m benchmarks.compare_torch --torch_python="$TORCH_PYTHON" \
        --rounds="${ROUNDS:-3}" $TIMING --output="$R/speed_torch_vs_tf.json" >"$R/logs/compare_torch.log" 2>&1 ;;
    overhead)
      # shellcheck disable=SC2086
      # The paper's setting: width 64, batch 256, queue 4096 and 65536.
      PYTHONPATH=. "$PYTHON" -m benchmarks.train_step --table=overhead $TIMING \
        --output="$R/speed_overhead.json" >"$R/logs/speed_overhead.log" 2>&1 ;;
    batch)
      # shellcheck disable=SC2086
      PYTHONPATH=. "$PYTHON" -m benchmarks.train_step --table=batch $SWEEP $TIMING \
        --output="$R/speed_batch.json" >"$R/logs/speed_batch.log" 2>&1 ;;
    queue|precision)
      # shellcheck disable=SC2086
      PYTHONPATH=. "$PYTHON" -m benchmarks.train_step --table="$table" $SWEEP $TIMING \
        --output="$R/speed_$table.json" >"$R/logs/speed_$table.log" 2>&1 ;;
    loss_head)
      # Seconds: only the loss head (logits, targets, cross-entropy, its gradient) per method.
      PYTHONPATH=. "$PYTHON" -m benchmarks.train_step --table=loss_head \
        --output="$R/speed_loss_head.json" >"$R/logs/speed_loss_head.log" 2>&1 ;;
    split_bn)
      PYTHONPATH=. "$PYTHON" -m benchmarks.split_bn >"$R/logs/split_bn.log" 2>&1
      grep '^{' "$R/logs/split_bn.log" >"$R/split_bn.jsonl" ;;
    data)
      # benchmarks.input_pipeline does not repeat the data: 3 warm-up + 20 batches need 23·256 images.
      PYTHONPATH=. "$PYTHON" -m benchmarks.input_pipeline --max_examples=10000 --batches=20 \
        >"$R/logs/data_pipeline.log" 2>&1
      grep '^{' "$R/logs/data_pipeline.log" >"$R/data_pipeline.jsonl" ;;
    *) echo "unknown table $table" >&2; exit 2 ;;
  esac
done
echo "$(date -u +%T) done"
