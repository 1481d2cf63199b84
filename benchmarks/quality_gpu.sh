#!/usr/bin/env bash
# Issue 12's GPU part in one device call (about 10 minutes on an H100): the retrain of both
# models with the recipe and the EMA BatchNorm fix, the headline quality settings at
# n = 10,000 on three sample seeds, raw against EMA for the retrains, then the full
# quality maps for as long as the call lasts. Every quality row is appended to its
# benchmarks/results/ file as it finishes and copied to $OUT, so a cut-off keeps what ran.
#
# On the device (the MNIST files travel gzipped in the ignored gpu/ folder):
#   mkdir -p gpu/data/MNIST/raw && cp ../shared/data/MNIST/raw/*.gz gpu/data/MNIST/raw/
#   run: bash benchmarks/quality_gpu.sh   (carry: gpu)
# A dry run on the CPU (tiny n, two training steps):
#   N=20 TRAIN_FLAGS="--max-steps 2" RUNS=/tmp/gpuruns OUT=/tmp/gpuout bash benchmarks/quality_gpu.sh
set -u
export PYTHONPATH=$PWD/src DIFFUMNIST_DATA=${DIFFUMNIST_DATA:-$PWD/gpu/data}
N=${N:-10000}
TRAIN_FLAGS=${TRAIN_FLAGS:-}
RUNS=${RUNS:-/root/runs}
OUT=${OUT:?set OUT to the folder that comes back}
mkdir -p "$RUNS" "$OUT"
start=$(date +%s)
say() { echo "[$(($(date +%s) - start)) s] $*"; }
keep() {
  cp benchmarks/results/quality_map_*_n"$N".jsonl benchmarks/results/quality_map_*_n"$N"_seed*.jsonl \
    "$OUT"/ 2>/dev/null || true
}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"

say "retraining time and class in the background"
for kind in time class; do
  # shellcheck disable=SC2086  # TRAIN_FLAGS is a list of flags
  python -m diffumnist train "$kind" --out "$RUNS/${kind}_v2" --seed 0 --ema-decay 0.999 \
    $TRAIN_FLAGS > "$RUNS/${kind}_v2.log" 2>&1 &
done

for seed in 0 1 2; do
  for model in class time; do
    say "shipped $model, headline settings, seed $seed"
    python benchmarks/quality_map.py --model "$model" --n "$N" --settings headline --seed "$seed"
    keep
  done
done

wait
say "retraining done"
for kind in time class; do
  tail -c 400 "$RUNS/${kind}_v2.log" | tr '\r' '\n' | tail -n 2
  cp "$RUNS/${kind}_v2/loss.jsonl" "$OUT/${kind}_v2_loss.jsonl"
  for copy in ema raw; do
    flag=$([ "$copy" = raw ] && echo --raw || true)
    # shellcheck disable=SC2086  # flag is empty or --raw
    python -m diffumnist export "$RUNS/${kind}_v2/last.safetensors" $flag --fp16 \
      --out "$OUT/${kind}_v2_${copy}.safetensors"
    say "${kind}_v2 $copy, headline settings"
    # shellcheck disable=SC2086
    python benchmarks/quality_map.py --weights "$RUNS/${kind}_v2/last.safetensors" $flag \
      --label "${kind}_v2_${copy}" --n "$N" --settings headline
    keep
  done
done

for model in class time; do
  say "shipped $model, the full map"
  python benchmarks/quality_map.py --model "$model" --n "$N"
  keep
done
say "done"
