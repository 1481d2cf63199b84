"""The walkthrough notebook: committed without outputs, in sync with its builder, and runnable.

The run uses the shipped models only (no training) and takes about a minute on two CPU
cores, so it is marked slow. The kernel is this interpreter's ipykernel, through a
kernelspec written to a temporary JUPYTER_PATH, so a user-level "python3" kernelspec that
points elsewhere cannot hijack it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"
BUILDER = REPO / "notebooks" / "build_walkthrough.py"
KERNEL_NAME = "diffumnist-test-python"


def _read() -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK, as_version=4)


def test_notebook_is_committed_without_outputs():
    notebook = _read()
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], "clear the outputs before committing"
            assert cell.execution_count is None


def test_notebook_matches_its_builder():
    spec = importlib.util.spec_from_file_location("build_walkthrough", BUILDER)
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    built = builder.build()
    committed = _read()
    assert [(c.cell_type, c.source) for c in committed.cells] == [
        (c.cell_type, c.source) for c in built.cells
    ], "run `python notebooks/build_walkthrough.py` after editing it"


def _write_kernelspec(root: Path) -> None:
    kernel_dir = root / "kernels" / KERNEL_NAME
    kernel_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "DiffuMNIST test kernel",
        "language": "python",
    }
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))


def _text_outputs(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output and "text/plain" in output.data:
            parts.append(output.data["text/plain"])
    return "".join(parts)


@pytest.mark.slow
def test_walkthrough_notebook_runs(tmp_path, monkeypatch, data_dir):
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    _write_kernelspec(tmp_path)
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))
    monkeypatch.setenv("DIFFUMNIST_DATA", str(data_dir))  # the kernel inherits the environment
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))

    notebook = _read()
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name=KERNEL_NAME,
        resources={"metadata": {"path": str(REPO)}},
    )
    client.execute()  # raises CellExecutionError on the first failing cell

    code_cells = [c for c in notebook.cells if c.cell_type == "code"]
    text = "\n".join(_text_outputs(c) for c in code_cells)
    figures = sum("image/png" in output.get("data", {}) for c in code_cells for output in c.outputs)
    assert "MNIST-FID" in text
    assert "guided accuracy" in text
    assert "samples (10, 1, 28, 28)" in text
    assert "animation (21, 10, 28, 28) torch.uint8" in text
    assert figures >= 9, f"expected the walkthrough's figures, got {figures}"
