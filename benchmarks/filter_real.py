"""What the filter does to real digits: the control for rejection sampling (`reject_below`).

If redrawing what the filter reads poorly only removed illegible digits, then real digits
filtered the same way should stay as close to real ones as before (MNIST-FID at its floor)
while the judge reads them better. It also counts how often the two readers err together:
they share training data, so some overlap is expected; the less, the less the filter
optimises for the judge itself.

    python benchmarks/filter_real.py  # results/filter_real.json

Real training digits (not the judge's test split) stand in for samples: of 8,000 shuffled
ones, the first 2,000 a threshold keeps are scored against the test split, as the quality
map scores samples; "kept" is the fraction of the 8,000 it keeps.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from diffumnist.classifier import classify, filter_confidence, load_classifier
from diffumnist.data import load_split, to_unit
from diffumnist.evaluate import score_samples

THRESHOLDS = (0.9, 0.97, 0.99)
N = 2000
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    judge, _ = load_classifier()
    reader, _ = load_classifier(role="filter")
    test_images, test_labels = load_split("test")
    judge_says, _ = classify(judge, test_images)
    filter_says, _ = classify(reader, test_images)
    judge_wrong, filter_wrong = judge_says != test_labels, filter_says != test_labels
    result: dict[str, object] = {
        "test_errors": {
            "judge": int(judge_wrong.sum()),
            "filter": int(filter_wrong.sum()),
            "both": int((judge_wrong & filter_wrong).sum()),
        }
    }
    train_images, train_labels = load_split("train")
    order = torch.randperm(len(train_images), generator=torch.Generator().manual_seed(0))
    images, labels = train_images[order], train_labels[order]
    legibility = filter_confidence(to_unit(images[: 4 * N]), labels[: 4 * N])
    rows = []
    for threshold in (None, *THRESHOLDS):
        kept = torch.ones_like(legibility, dtype=torch.bool)
        if threshold is not None:
            kept = legibility >= threshold
        chosen = kept.nonzero().flatten()[:N]
        scores = score_samples(images[chosen], labels[chosen])
        rows.append({
            "reject_below": threshold,
            "kept": kept.double().mean().item(),
            "mnist_fid": scores["mnist_fid"],
            "mnist_fid_floor": scores["mnist_fid_floor"],
            "precision": scores["precision"],
            "recall": scores["recall"],
            "guided_accuracy": scores["guided_accuracy"]["overall"],
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    result["real_training_digits_n2000"] = rows
    (RESULTS / "filter_real.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["test_errors"]))


if __name__ == "__main__":
    main()
