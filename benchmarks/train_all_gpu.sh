#!/usr/bin/env bash
# How the shipped time- and class-conditioned models were trained on one H100 (the
# denoiser the same way, `train denoiser --seed 0`). Trains both in parallel, then
# pack weights-only checkpoints, loss logs and previews into <=15 MB chunks under $OUT.
set -u
export PYTHONPATH=$PWD/src DIFFUMNIST_DATA=$PWD/gpu/data
RUNS=/root/runs; mkdir -p $RUNS
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python -c "import torch, torchvision; print('torch', torch.__version__, torchvision.__version__)"
start=$(date +%s)
python -m diffumnist train time --out $RUNS/time --seed 0 --ema-decay 0.999 > $RUNS/time.log 2>&1 &
python -m diffumnist train class --out $RUNS/class --seed 0 --ema-decay 0.999 > $RUNS/class.log 2>&1 &
wait
echo "wall seconds: $(( $(date +%s) - start ))"
for k in time class; do echo "== $k"; tail -c 600 $RUNS/$k.log; echo; done
python - <<'PY'
import dataclasses
from pathlib import Path
from diffumnist.checkpoint import load_checkpoint, save_checkpoint
for kind in ("time", "class"):
    run = Path("/root/runs") / kind
    try:
        ckpt = load_checkpoint(run / "last.safetensors")
    except Exception as exc:
        print(kind, "FAILED", exc)
        continue
    print(kind, ckpt.meta["epoch"], ckpt.meta["step"])
    slim = dataclasses.replace(ckpt, optimizer=None, scheduler=None, rng_state=None)
    save_checkpoint(run / "weights.safetensors", slim)
    (run / "last.safetensors").unlink()
PY
cd /root && tar czf runs.tgz runs && ls -la runs.tgz && split -b 15M runs.tgz $OUT/runs.tgz.part- && ls -la $OUT
