#!/usr/bin/env bash
# The GPU quality measurements in one call (under 10 minutes on an H100): the retrain of both
# models with the recipe and the EMA BatchNorm fix, the headline quality settings at
# n = 10,000 on three sample seeds, raw against EMA for the retrains, then the full quality
# maps until the time budget is spent. Each quality row is appended to its
# benchmarks/results/ file as it finishes and every step is packed into $OUT/results.tgz,
# so a cut-off keeps what ran. The shipped-weights rows run while the retrains share the
# GPU: their "seconds" are not speed figures.
#
# On the device the MNIST files travel gzipped (11 MB) in the ignored gpu/ folder:
#   mkdir -p gpu/data/MNIST/raw
#   for f in ../shared/data/MNIST/raw/*; do gzip -c "$f" > gpu/data/MNIST/raw/"$(basename "$f")".gz; done
#   run: bash benchmarks/quality_gpu.sh   (carry: gpu; timeout_s 600)
# $OUT gets log.txt, results.tgz (quality rows, loss logs, training logs) and the four
# retrained weights files (fp16, EMA and raw). A dry run on the CPU (tiny n, two steps):
#   N=20 TRAIN_FLAGS="--max-steps 2" RUNS=/tmp/gpuruns OUT=/tmp/gpuout \
#     DIFFUMNIST_DATA=../shared/data bash benchmarks/quality_gpu.sh
set -u
export PYTHONPATH=$PWD/src DIFFUMNIST_DATA=${DIFFUMNIST_DATA:-$PWD/gpu/data}
N=${N:-10000}
TRAIN_FLAGS=${TRAIN_FLAGS:-}
RUNS=${RUNS:-/root/runs}
OUT=${OUT:?set OUT to the folder that comes back}
BUDGET=${BUDGET:-560}  # seconds; the device allows 600 a call
mkdir -p "$RUNS" "$OUT"
exec > >(tee "$OUT/log.txt") 2>&1
start=$(date +%s)
deadline=$((start + BUDGET))
say() { echo "[$(($(date +%s) - start)) s] $*"; }
left() { echo $((deadline - $(date +%s))); }
pack() {  # everything but the weights, in one file: $OUT brings back at most 8
  tar czf "$OUT/results.tmp" -C benchmarks/results $(cd benchmarks/results && ls \
    quality_map_*_n"$N".jsonl quality_map_*_n"$N"_seed*.jsonl 2>/dev/null) \
    -C "$RUNS" $(cd "$RUNS" && ls ./*.log ./*/loss.jsonl 2>/dev/null) &&
    mv "$OUT/results.tmp" "$OUT/results.tgz"
}
quality() {  # one quality_map.py call, stopped at the deadline (its finished rows stay)
  [ "$(left)" -gt 10 ] || { say "out of time: skipped quality_map.py $*"; return; }
  timeout "$(left)" python benchmarks/quality_map.py "$@" --n "$N"
  pack
}
if [ "$(find "$DIFFUMNIST_DATA/MNIST/raw" -name '*-ubyte*' 2>/dev/null | wc -l)" -lt 4 ]; then
  echo "no MNIST files under $DIFFUMNIST_DATA/MNIST/raw (see the header)"; exit 2
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no GPU"
python -c "import torch; print('torch', torch.__version__)"

declare -A trainer
for kind in time class; do
  say "retraining $kind in the background"
  # shellcheck disable=SC2086  # TRAIN_FLAGS is a list of flags
  python -m diffumnist train "$kind" --out "$RUNS/${kind}_v2" --seed 0 --ema-decay 0.999 \
    $TRAIN_FLAGS > "$RUNS/${kind}_v2.log" 2>&1 &
  trainer[$kind]=$!
done

for seed in 0 1 2; do
  for model in class time; do
    say "shipped $model, headline settings, seed $seed"
    quality --model "$model" --settings headline --seed "$seed"
  done
done

for kind in time class; do
  if ! wait "${trainer[$kind]}"; then
    say "retraining $kind failed:"; tail -c 600 "$RUNS/${kind}_v2.log"; continue
  fi
  say "retraining $kind done"
  tail -c 300 "$RUNS/${kind}_v2.log" | tr '\r' '\n' | tail -n 1
  for copy in ema raw; do
    flag=$([ "$copy" = raw ] && echo --raw || true)
    # shellcheck disable=SC2086  # flag is empty or --raw
    python -m diffumnist export "$RUNS/${kind}_v2/last.safetensors" $flag --fp16 \
      --out "$OUT/${kind}_v2_${copy}.safetensors"
    say "${kind}_v2 $copy, headline settings"
    # shellcheck disable=SC2086
    quality --weights "$RUNS/${kind}_v2/last.safetensors" $flag --label "${kind}_v2_${copy}" \
      --settings headline
  done
done

for model in class time; do
  say "shipped $model, the full map"
  quality --model "$model"
done
pack
say "done"
