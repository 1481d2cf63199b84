"""The classifiers: the shipped filter (the reader that rejection sampling asks) and the
judge are two different readers, and training the filter takes only its own flags."""

from __future__ import annotations

import pytest

from diffumnist.checkpoint import shipped_weights
from diffumnist.classifier import (
    FilterClassifier,
    MNISTClassifier,
    accuracy_on_test_split,
    load_classifier,
)
from diffumnist.cli import main
from diffumnist.config import ConfigError


@pytest.mark.slow
def test_the_shipped_filter_is_not_the_judge_and_reaches_its_stated_accuracy(data_dir):
    net, meta = load_classifier(role="filter")
    judge, _ = load_classifier()
    assert isinstance(net, FilterClassifier) and isinstance(judge, MNISTClassifier)
    assert meta["filter"] and not meta.get("judge") and meta["test_accuracy"] >= 0.99
    assert accuracy_on_test_split(net, data_dir) == pytest.approx(meta["test_accuracy"])
    with pytest.raises(ConfigError, match="is not a filter checkpoint"):
        load_classifier(shipped_weights("classifier"), role="filter")


def test_train_filter_takes_only_its_flags(capsys):
    assert main(["train", "filter", "--batch-size", "64"]) == 2
    assert "train filter takes only --out, --epochs, --seed" in capsys.readouterr().err
