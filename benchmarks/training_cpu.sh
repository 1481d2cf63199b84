#!/usr/bin/env bash
# Every training figure in the README ("How long does training take?"), on the CPU this
# runs on: each training run by time_to_quality.py, which scores it at its end (n = 2,000,
# sampling seed 0) and writes its JSONL under results/; the other sampling seeds, the
# twin-guided rows and the shipped models by `diffumnist eval`, which prints its scores.
# About 3.5 hours of training and 1 hour of scoring on a 2-core CPU. Run one job at a time:
# the minutes count images trained at a fixed rate, and a busy machine only slows the clock.
# From the repository root, with the package installed and $DIFFUMNIST_DATA set:
#   bash benchmarks/training_cpu.sh
set -eu
cd "$(dirname "$0")"
python time_to_quality.py run --kind class --preset recipe --set '{"preview_every": 0}' --rate 204 \
    --marks 10,20,30,40,50,60,70,80,90,100 --run-dir ../runs/ttq_class_recipe \
    --keep ../runs/class_recipe.safetensors --out results/time_to_quality_class_recipe_cpu.jsonl
python time_to_quality.py run --kind class --preset fast --set '{"batch_size": 32, "preview_every": 0}' \
    --rate 204 --marks 10,15,100 --keep ../runs/class_fast_b32.safetensors \
    --out results/time_to_quality_class_fast_b32_cpu.jsonl   # the plot counts its minutes at 169/s
python time_to_quality.py run --kind class --preset fast --set '{"epochs": 3, "preview_every": 0}' \
    --rate 169 --marks 10,15,100 --keep ../runs/class_fast_b32_e3.safetensors \
    --out results/time_to_quality_class_fast_b32_e3_cpu.jsonl
cd .. && for r in recipe fast_b32 fast_b32_e3; do for s in 1 2; do   # seed 0: the runs' own scores
  diffumnist eval runs/class_$r.safetensors --n 2000 --preset fast --seed $s; done; done
for s in 0 1 2; do diffumnist eval class --n 2000 --preset fast --seed $s; done   # shipped
cd benchmarks && for e in 3 4; do   # the runs' twins: the same runs to the end of epoch 1
  python time_to_quality.py run --kind class --preset fast --set "{\"epochs\": $e, \"preview_every\": 0}" \
      --rate 169 --marks 5.917 --final-n 500 --run-dir ../runs/ttq_class_b32_e${e}_twin --out /tmp/e$e.jsonl; done
python time_to_quality.py run --kind class --preset fast --set '{"max_steps": 6337, "preview_every": 0}' \
    --rate 169 --marks 100 --final-n 2000 --run-dir ../runs/ttq_class_b32_20min \
    --keep ../runs/class_fast_b32_20min.safetensors --out results/time_to_quality_class_fast_b32_20min_cpu.jsonl
cd .. && for s in 1 2; do diffumnist eval runs/class_fast_b32_20min.safetensors --n 2000 --preset fast --seed $s; done
for s in 0 1 2; do for r in b32_e3:e3 b32:e4; do
  diffumnist eval runs/class_fast_${r%:*}.safetensors --n 2000 --preset fast --seed $s --guidance-scale 1.5 \
      --guidance-interval 100,300 --guide runs/ttq_class_b32_${r#*:}_twin/run/twin.safetensors; done; done
cd benchmarks && python time_to_quality.py run --kind time --preset fast --set '{"preview_every": 0}' \
    --rate 169 --marks 5.917,10,20,100 --run-dir ../runs/ttq_time_b32_lr3e-3 \
    --keep ../runs/time_fast_b32_lr3e-3.safetensors --out results/time_to_quality_time_fast_b32_lr3e-3_twin_cpu.jsonl
cd .. && for s in 0 1 2; do for p in fast best; do
  diffumnist eval runs/time_fast_b32_lr3e-3.safetensors --n 2000 --preset $p --seed $s \
      --guide runs/ttq_time_b32_lr3e-3/run/twin.safetensors; done
  diffumnist eval time --n 2000 --preset fast --seed $s; done   # shipped
diffumnist export runs/time_fast_b32_lr3e-3.safetensors --raw --out runs/time_fast_b32_lr3e-3_raw.safetensors
for s in 0 1 2; do   # the time run's raw weights, guided by its twin
  diffumnist eval runs/time_fast_b32_lr3e-3_raw.safetensors --n 2000 --preset fast --seed $s \
      --guide runs/ttq_time_b32_lr3e-3/run/twin.safetensors; done
cd benchmarks && python time_to_quality.py run --kind class --preset fast \
    --set '{"max_steps": 800, "preview_every": 0, "twin_epoch": 0}' --rate 169 --marks 100 --n 300 \
    --final-n 300 --keep ../runs/class_fast_b32_800steps.safetensors \
    --out results/time_to_quality_class_fast_b32_800steps_cpu.jsonl   # the shortest legible run
cd .. && diffumnist eval runs/class_fast_b32_800steps.safetensors --n 300 --preset fast --reject-below none
