#!/usr/bin/env bash
# The one command to run on a machine with one GPU; finishes within 8 minutes in all.
#   benchmarks/device.sh                      # then: python -m benchmarks.make_results
#   DEVICE_SMOKE=1 benchmarks/device.sh       # the same steps at tiny sizes, CPU, < 3 min
# Writes JSON lines (each with pairs_per_sec, or its own numbers, and the configuration) to
# $OUT/device.jsonl (OUT default benchmarks/results/device/, for the smoke run
# benchmarks/results/device_smoke/, which make_results ignores), logs to $OUT/logs/:
#   1. environment: nvidia-smi, TensorFlow / Keras / CUDA / cuDNN versions, the GPU;
#   2. speed: the ResNet-18 CIFAR step table (benchmarks.train_step --table=device): batch 512
#      and 256, queue 4096 and 65536, float32/bf16 x XLA off/on x augmentation host/device,
#      25 steps per execution (and 1, once), the target configuration first;
#   3. learning: 5 epochs of ASCL on the full CIFAR-10 (a folder of JPEGs, --input=memory,
#      bf16 + XLA + device augmentation, batch 512): kNN top-1, pairs/s and the projected
#      time of 200 epochs;
#   4. data: the input pipeline's images/s and pairs/s (benchmarks.input_pipeline).
# Each step runs under a time limit taken from what is left of the budget (DEVICE_BUDGET_S,
# default 470 s; 170 s with DEVICE_SMOKE=1), writes its records as it goes, and a "step"
# line with its exit status (124: stopped at its limit; its finished records are kept).
# PYTHON: the interpreter (default .venv/bin/python, else python); DEVICE_DATA: the CIFAR-10
# folder (default ../shared/datasets/cifar10; the smoke run falls back to digits).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
SMOKE="${DEVICE_SMOKE:-0}"
if [ "$SMOKE" = 1 ]; then OUT="${OUT:-benchmarks/results/device_smoke}"; fi
OUT="${OUT:-benchmarks/results/device}"
DATA="${DEVICE_DATA:-../shared/datasets/cifar10}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
mkdir -p "$OUT/logs"
JSONL="$OUT/device.jsonl"
: >"$JSONL"
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

if [ "$SMOKE" = 1 ]; then
  BUDGET="${DEVICE_BUDGET_S:-170}"
  # Tiny: width 4, 16 px, batch 16 (8), queue 64 (1024); 2 steps per execution; no XLA
  # (compiling takes minutes on a shared CPU; tests/test_compiled_step.py checks it).
  MODEL=(--backbone_width=4 --image_size=16 --batch_size=16 --queue_size=64)
  TABLE=(--steps=2 --windows=1 --steps_per_execution=2 --limit=3)
  JIT=(--no-jit_compile --nojit_compile)
  if [ -d "$DATA/train" ]; then DATASET="$DATA"; else DATASET=digits; fi
  # 80 images: 5 steps an epoch, 2 per execution (the last execution of an epoch runs 1); no
  # kNN pass of the untrained encoder (its 10,000 test images cost the smoke budget's data step).
  LEARN=(--dataset="$DATASET" --epochs=5 --max_train_examples=80 --knn_bank_size=128
         --image_size=16 --backbone_width=4 --projector_dims=32,16 --batch_size=16
         --queue_size=64 --log_every=2 --checkpoint_every=4 --steps_per_execution=2
         --warmup_epochs=0 --knn_k=20 --noknn_at_start)
  PIPELINE=(--max_examples=256 --batch_size=16 --image_size=16 --batches=2)
  [ "$DATASET" = digits ] && PIPELINE+=(--data=digits) || PIPELINE+=(--data="$DATASET")
  CAPS=(30 70 60 30)
else
  BUDGET="${DEVICE_BUDGET_S:-470}"
  MODEL=(--backbone_width=64 --image_size=32 --batch_size=512 --queue_size=4096)
  TABLE=(--steps=50 --windows=3 --steps_per_execution=25)
  JIT=(--jit_compile --jit_compile)  # as benchmarks.train_step, then as tfascl-train spells it
  LEARN=(--dataset="$DATA" --epochs=5 --batch_size=512 --learning_rate=0.06
         --warmup_epochs=1)
  PIPELINE=(--data="$DATA" --max_examples=10000 --batches=20)
  CAPS=(30 210 190 45)
fi
START=$(date +%s)

# run_step NAME CAP COMMAND...: runs COMMAND under min(CAP, what is left) seconds.
run_step() {
  local name=$1 cap=$2 left status began
  shift 2
  left=$((BUDGET - ($(date +%s) - START)))
  ((left < cap)) && cap=$left
  began=$(date +%s)
  if ((cap < 5)); then
    status=125  # no time left: not started
  else
    echo "$(date -u +%T) $name (limit ${cap}s)"
    timeout --kill-after=10 "$cap" "$@" >"$OUT/logs/$name.log" 2>&1
    status=$?
  fi
  "$PYTHON" -m benchmarks.device_report step "$JSONL" "$name" "$status" "$(($(date +%s) - began))"
}

run_step environment "${CAPS[0]}" "$PYTHON" -m benchmarks.device_report environment "$JSONL"

run_step speed "${CAPS[1]}" "$PYTHON" -m benchmarks.train_step --table=device "${MODEL[@]}" \
  --precision=mixed_bfloat16 "${JIT[0]}" --augment_on=device "${TABLE[@]}" \
  --append_jsonl="$JSONL"

EPOCHS=$(grep -o -- '--epochs=[0-9]*' <<<"${LEARN[*]}" | cut -d= -f2)
run_step learning "${CAPS[2]}" "$PYTHON" -m tfascl.train --flagfile=flags/cifar10_ascl.flags \
  "${LEARN[@]}" --input=memory --precision=mixed_bfloat16 "${JIT[1]}" --augment_on=device \
  --knn_every=0 --noexport --noprogress_bar --model_dir="$SCRATCH/ascl"
if [ -f "$SCRATCH/ascl/summary.json" ]; then
  "$PYTHON" -m benchmarks.device_report learning "$JSONL" "$SCRATCH/ascl" "$EPOCHS" 200
fi

# benchmarks.input_pipeline prints one JSON object a line among its other output.
run_step data "${CAPS[3]}" "$PYTHON" -m benchmarks.input_pipeline "${PIPELINE[@]}"
grep '^{' "$OUT/logs/data.log" | sed 's/^{/{"kind": "data_pipeline", /' >>"$JSONL"

echo "$(date -u +%T) done in $(($(date +%s) - START)) s: $JSONL"
