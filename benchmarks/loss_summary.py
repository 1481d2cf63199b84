"""Loss figures quoted in the README and MODEL_CARD, read from kept run folders.

    python benchmarks/loss_summary.py training

Prints, per run: steps, the mean loss over epoch 1, over its last 100 steps, and over the
final epoch (the recipe's plateau).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def summarise(run_dir: Path) -> str:
    entries = [json.loads(line) for line in (run_dir / "loss.jsonl").read_text().splitlines()]
    first = [e["loss"] for e in entries if e["epoch"] == 1]
    final = [e["loss"] for e in entries if e["epoch"] == entries[-1]["epoch"]]
    return (
        f"{run_dir.name:9} steps {entries[-1]['step']:5}"
        f"  epoch-1 mean {sum(first) / len(first):.4f}"
        f"  epoch-1 last 100 {sum(first[-100:]) / len(first[-100:]):.4f}"
        f"  final-epoch mean {sum(final) / len(final):.4f}"
    )


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "training")
    for kind in ("denoiser", "time", "class"):
        print(summarise(root / kind))
