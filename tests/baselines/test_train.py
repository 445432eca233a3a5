"""Baseline training: checkpoints and logs, exact resume, refusals, the command line."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import assert_one_line_error, make_prepared, run_cli, tiny_baseline_config
from tssc_py.baselines import MODELS
from tssc_py.baselines.train import LOG_COLUMNS, TrainConfig, pairs, train
from tssc_py.checkpoint import load_checkpoint
from tssc_py.errors import TsscError


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open() as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("model", MODELS)
def test_run_writes_checkpoint_and_log(model: str, baseline_checkpoints: dict[str, Path]) -> None:
    path = baseline_checkpoints[model]
    ckpt = load_checkpoint(path, model)
    assert ckpt.config["step"] == 4 and ckpt.config["subjects"] == ["s0", "s1", "s2"]
    assert ckpt.config["baseline"]["model"] == model
    assert {"model", "training"} == {p.stem for p in path.glob("*.safetensors")}
    rows = _rows(path.parent)
    assert list(rows[0]) == list(LOG_COLUMNS)
    assert [r["step"] for r in rows] == ["2", "4"]
    for row in rows:
        assert float(row["val_psnr"]) > 10 and 0 < float(row["val_ssim"]) <= 1
        assert float(row["val_linear_psnr"]) > 10 and np.isfinite(float(row["loss"]))


@pytest.mark.parametrize("model", MODELS)
def test_resume_continues_exactly(model: str, prepared: Path, tmp_path: Path) -> None:
    # On the CPU: some CUDA kernels (grid_sample's backward) add atomically in a varying
    # order, so two identical GPU runs already differ in the last bits.
    config = lambda steps: tiny_baseline_config(model, steps=steps, device="cpu")  # noqa: E731
    whole = train([prepared], tmp_path / "whole", config(4), show_progress=False)
    part = train([prepared], tmp_path / "part", config(2), show_progress=False)
    resumed = train([prepared], tmp_path / "part", config(4), resume=True, show_progress=False)
    assert resumed == part
    for name in ("model", "training"):
        a = load_checkpoint(whole).tensors(name)
        b = load_checkpoint(resumed).tensors(name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert _rows(tmp_path / "whole") == [
        {**r, "seconds": w["seconds"]}
        for r, w in zip(_rows(tmp_path / "part"), _rows(tmp_path / "whole"), strict=True)
    ]


def test_pairs_are_consecutive_known_frames() -> None:
    sequences = np.arange(2 * 5, dtype=np.float32).reshape(2, 5, 1, 1) * np.ones((1, 1, 3, 3))
    known = np.array([[1, 0, 1, 0, 1], [1, 0, 0, 0, 1]], dtype=bool)
    rng = np.random.default_rng(0)
    for _ in range(10):
        x0, x1 = pairs(sequences, known, rng)
        assert x0.shape == (2, 1, 3, 3)
        assert (x0[0, 0, 0, 0], x1[0, 0, 0, 0]) in {(0, 2), (2, 4)}
        assert (x0[1, 0, 0, 0], x1[1, 0, 0, 0]) == (5, 9)


def test_refusals(prepared: Path, tmp_path: Path, baseline_checkpoints: dict[str, Path]) -> None:
    run = tmp_path / "run"
    train([prepared], run, tiny_baseline_config("voxelmorph", steps=2), show_progress=False)
    with pytest.raises(TsscError, match="holds an earlier run"):
        train([prepared], run, tiny_baseline_config("voxelmorph"), show_progress=False)
    with pytest.raises(TsscError, match="is a 'voxelmorph' checkpoint, expected a 'uvinet' one"):
        train([prepared], run, tiny_baseline_config("uvinet"), resume=True, show_progress=False)
    others = make_prepared(tmp_path / "others", subjects=2)
    shutil.copy(others / "s0.nii.gz", others / "t0.nii.gz")
    with pytest.raises(TsscError, match="other subjects"):
        train([others], run, tiny_baseline_config("voxelmorph", steps=3), resume=True)
    bigger = make_prepared(tmp_path / "bigger", subjects=3, frames=10)
    with pytest.raises(TsscError, match="data of another shape"):
        train([bigger], run, tiny_baseline_config("voxelmorph", steps=3), resume=True)
    with pytest.raises(TsscError, match="unknown baseline"):
        TrainConfig(model="demons")


def test_no_validation_subjects(prepared: Path, tmp_path: Path) -> None:
    config = tiny_baseline_config("voxelmorph", steps=2, val_subjects=0)
    train([prepared], tmp_path / "run", config, show_progress=False)
    assert all(r["val_psnr"] == "" for r in _rows(tmp_path / "run"))


def test_command_line(
    prepared: Path, tmp_path: Path, baseline_checkpoints: dict[str, Path]
) -> None:
    args = ["--data", prepared, "--model", "voxelmorph", "--features", 4, "--frames", 6]
    proc = run_cli(
        "tssc-train-baseline", *args, "--out", tmp_path / "run", "--steps", 2, "--no-progress"
    )
    assert "checkpoint" in proc.stdout
    assert load_checkpoint(tmp_path / "run" / "checkpoint", "voxelmorph").config["step"] == 2
    proc = run_cli(
        "tssc-train-baseline", *args, "--out", tmp_path / "run", "--steps", 2, check=False
    )
    assert_one_line_error(proc, "holds an earlier run")
    proc = run_cli(
        "tssc-train-baseline",
        "--data",
        prepared,
        "--model",
        "uvinet",
        "--out",
        baseline_checkpoints["transmorph"].parent,
        "--resume",
        check=False,
    )
    assert_one_line_error(proc, "is a 'transmorph' checkpoint, expected a 'uvinet' one")
    proc = run_cli(
        "tssc-train-baseline",
        *["--data", prepared, "--model", "uvinet", "--features", 6, "--out", tmp_path / "r2"],
        check=False,
    )
    assert_one_line_error(proc, "features must be a multiple of 4")
