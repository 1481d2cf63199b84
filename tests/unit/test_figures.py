"""`diffumnist figures`: every figure is drawn from the kept runs and the shipped weights."""

from __future__ import annotations

from pathlib import Path

from diffumnist.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_figures_command_draws_every_figure(tmp_path, data_dir, capsys):
    """With a 5-step solver so the test stays fast; the README's figures use the recipe's."""
    out = tmp_path / "docs"
    argv = ["figures", "--out", str(out), "--runs", str(REPO / "training"),
            "--data-dir", str(data_dir), "--sampler", "dpmpp", "--steps", "5"]  # fmt: skip
    assert main(argv) == 0
    expected = {
        "noising.png", "denoiser_loss.png", "denoiser_epochs.png", "denoiser_ood.png",
        "ddpm_loss.png", "time_samples_epochs.png", "class_samples_epochs.png",
        "class_epochs.gif", "time_final.png", "time_process.gif", "class_final.png",
        "class_process.gif", "guidance_strip.png",
    }  # fmt: skip
    assert {p.name for p in out.iterdir()} == expected
    for path in out.iterdir():
        assert path.stat().st_size > 1000, path.name
    assert len(capsys.readouterr().out.splitlines()) == len(expected)


def test_figures_need_the_run_folders(tmp_path, capsys):
    code = main(["figures", "--out", str(tmp_path / "d"), "--runs", str(tmp_path / "none")])
    assert code == 2 and "loss.jsonl is missing" in capsys.readouterr().err
