"""One rank of the data-parallel training test, started by torchrun (not a test module).

Trains the configuration given as JSON into the run folder, then writes this rank's
weights, EMA weights and BatchNorm statistics to OUT/rank{R}.safetensors, so the test can
compare the ranks with each other and with a single-process run.

    torchrun --standalone --nproc_per_node=2 tests/ddp_rank.py RUN_DIR OUT_DIR CONFIG_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

from diffumnist.config import TrainConfig
from diffumnist.distributed import process_group
from diffumnist.train import Trainer

run_dir, out_dir, config_json = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
config = TrainConfig(**json.loads(config_json))
with process_group(config.device) as world:
    seen = {}  # the run's TrainState, through the public hook (the same object to the end)
    Trainer(config, run_dir, before_step=lambda state: seen.setdefault("state", state)).run()
    tensors = {f"net.{k}": v for k, v in seen["state"].net.state_dict().items()}
    tensors |= {f"ema.{k}": v for k, v in seen["state"].ema.state_dict().items()}
    save_file(
        {k: v.contiguous() for k, v in tensors.items()}, out_dir / f"rank{world.rank}.safetensors"
    )
