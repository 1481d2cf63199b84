"""The shipped models still sample the images they sampled before the redesign.

tests/data/reference_samples.npz was written by tests/make_reference_samples.py (its
docstring says when and why). On the CPU kind that wrote it every image must match bit for
bit; oneDNN picks other kernels on other CPUs, so there the fp32 images may differ by float
rounding only (1e-4; a changed computation moves pixels by far more).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from make_reference_samples import machine_key, make  # tests/ is on sys.path

REFERENCE = Path(__file__).parent / "data" / "reference_samples.npz"


@pytest.mark.slow
def test_shipped_models_sample_the_reference_images():
    with np.load(REFERENCE) as data:
        reference = {name: data[name] for name in data.files}
    produced = make()
    assert set(produced) == set(reference) - {"machine"}
    same_machine = str(reference["machine"]) == machine_key()
    for name, images in produced.items():
        if same_machine:
            assert np.array_equal(images, reference[name]), name
        elif images.dtype == np.uint8:
            assert np.abs(images.astype(int) - reference[name]).max() <= 1, name
        else:
            np.testing.assert_allclose(images, reference[name], atol=1e-4, err_msg=name)
