"""Stage-1 training: logs, checkpoints, exact resume, and refusals."""

from __future__ import annotations

import csv
import inspect
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import make_prepared, run_cli, tiny_train_config
from tssc_py.checkpoint import load_checkpoint
from tssc_py.device import resolve_device
from tssc_py.errors import TsscError
from tssc_py.methods.diffusion import Diffusion
from tssc_py.stage1.interpolator import load_stage1
from tssc_py.stage1.train import LOG_COLUMNS, TrainConfig, learning_rate, train
from tssc_py.training import MAX_BATCH_SIZE, chosen_preset


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open() as handle:
        return list(csv.DictReader(handle))


def test_run_writes_checkpoint_and_log(checkpoint: Path) -> None:
    ckpt = load_checkpoint(checkpoint, "stage1")
    assert ckpt.config["step"] == 4 and ckpt.config["subjects"] == ["s0", "s1", "s2"]
    assert {"model", "ema", "training"} <= {p.stem for p in checkpoint.glob("*.safetensors")}
    rows = _rows(checkpoint.parent)
    assert list(rows[0]) == list(LOG_COLUMNS)
    assert [r["step"] for r in rows] == ["2", "4"]
    for row in rows:
        assert float(row["val_psnr"]) > 10 and 0 < float(row["val_ssim"]) <= 1
        assert float(row["loss"]) > 0


def _tensors(path: Path, name: str) -> dict[str, torch.Tensor]:
    return load_checkpoint(path).tensors(name)


def test_resume_continues_exactly(prepared: Path, tmp_path: Path) -> None:
    # warm-up longer than the run: the learning rate does not depend on the total steps. On
    # the CPU: CUDA's atomically-adding kernels already make two identical GPU runs differ.
    config = lambda steps: tiny_train_config(steps=steps, device="cpu")  # noqa: E731
    whole = train([prepared], tmp_path / "whole", config(4), show_progress=False)
    part = train([prepared], tmp_path / "part", config(2), show_progress=False)
    resumed = train(
        [prepared],
        tmp_path / "part",
        config(4),
        resume=True,
        show_progress=False,
    )
    assert resumed == part
    for name in ("model", "ema", "training"):
        a, b = _tensors(whole, name), _tensors(resumed, name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert [r["loss"] for r in _rows(tmp_path / "whole")] == [
        r["loss"] for r in _rows(tmp_path / "part")
    ]


def test_resume_keeps_the_saved_options(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train([prepared], tmp_path / "run", tiny_train_config(steps=2), show_progress=False)
    train(
        [prepared],
        tmp_path / "run",
        TrainConfig(steps=3, lr=1.0, frames=7),
        resume=True,
        show_progress=False,
    )
    saved = load_checkpoint(tmp_path / "run" / "checkpoint").config
    assert saved["step"] == 3 and saved["train"]["lr"] == tiny_train_config().lr
    assert saved["stage1"]["frames"] == 6
    # The given options not used are named (those left at their defaults are not).
    note = capsys.readouterr().err
    lr = tiny_train_config().lr
    assert f"resuming with the saved options: lr {lr} (not 1.0), frames 6 (not 7)" in note


def test_a_checkpoint_refuses_another_prior(prepared: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train([prepared], run, tiny_train_config(steps=2, prior="linear"), show_progress=False)
    with pytest.raises(TsscError, match="was trained with prior linear, not demons"):
        config = tiny_train_config(steps=3, prior="demons")
        train([prepared], run, config, resume=True, typed=["prior"])
    # A config edited to a prior of another input width does not load its weights.
    config_file = run / "checkpoint" / "config.json"
    config = json.loads(config_file.read_text())
    config["stage1"]["prior"] = "demons+linear"
    config_file.write_text(json.dumps(config))
    with pytest.raises(TsscError, match="needs 2 prior input channel"):
        load_stage1(run / "checkpoint")


def test_refusals(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(TsscError, match="checkpoint: no such checkpoint folder"):
        train([prepared], tmp_path / "none", tiny_train_config(), resume=True)
    run = tmp_path / "run"
    train([prepared], run, tiny_train_config(steps=2), show_progress=False)
    with pytest.raises(TsscError, match="holds an earlier run"):
        train([prepared], run, tiny_train_config(steps=2), show_progress=False)
    train([prepared], run, tiny_train_config(steps=2), overwrite=True, show_progress=False)
    others = make_prepared(tmp_path / "others", subjects=2)
    shutil.copy(others / "s0.nii.gz", others / "t0.nii.gz")
    with pytest.raises(
        TsscError, match=r"other subjects than these inputs \(only in the checkpoint: s2\)"
    ):
        train([others], run, tiny_train_config(steps=3), resume=True, show_progress=False)
    with pytest.raises(TsscError, match="leave none for training"):
        train([others], tmp_path / "r2", tiny_train_config(val_subjects=2), show_progress=False)
    (tmp_path / "afile").write_text("")
    with pytest.raises(TsscError, match="afile: is not a folder"):
        train([prepared], tmp_path / "afile", tiny_train_config(), show_progress=False)
    with pytest.raises(TsscError, match=r"s0\.nii\.gz: is not a prepared image: no s0\.json"):
        train([others.parent / "scans" / "s0.nii.gz"], tmp_path / "r3", tiny_train_config())
    # A checkpoint of another model, or saved by another version: one clear line each.
    saved = json.loads((run / "checkpoint" / "config.json").read_text())
    edited = {**saved, "stage1": {**saved["stage1"], "model": {**saved["stage1"]["model"]}}}
    edited["stage1"]["model"]["hidden"] = 128
    (run / "checkpoint" / "config.json").write_text(json.dumps(edited))
    with pytest.raises(TsscError, match=r"another shape \(model.hidden differs\)"):
        train([prepared], run, tiny_train_config(steps=3), resume=True, show_progress=False)
    (run / "checkpoint" / "config.json").write_text(
        json.dumps({**saved, "train": {**saved["train"], "newer": 1}})
    )
    with pytest.raises(TsscError, match="saved training options this version does not know"):
        train([prepared], run, tiny_train_config(steps=3), resume=True, show_progress=False)
    (run / "checkpoint" / "config.json").write_text(json.dumps(saved))
    (run / "checkpoint" / "training.json").write_text("{}")
    with pytest.raises(TsscError, match="training state unreadable"):
        train([prepared], run, tiny_train_config(steps=3), resume=True, show_progress=False)
    train([prepared], run, tiny_train_config(steps=2), overwrite=True, show_progress=False)
    log = run / "log.csv"  # a log of another version: one clear line, not a traceback
    log.write_text(log.read_text().replace("val_psnr", "val_old_psnr"))
    with pytest.raises(TsscError, match="this version logs"):
        train([prepared], run, tiny_train_config(steps=3), resume=True, show_progress=False)


def test_learning_rate_schedule() -> None:
    config = TrainConfig(steps=100, warmup=10, lr=1.0)
    assert learning_rate(config, 0) == pytest.approx(0.1)
    assert learning_rate(config, 9) == pytest.approx(1.0)
    assert learning_rate(config, 10) == pytest.approx(1.0)
    assert learning_rate(config, 100) == pytest.approx(0.1)
    values = [learning_rate(config, s) for s in range(10, 101)]
    assert values == sorted(values, reverse=True)


def test_config_and_device_checks() -> None:
    with pytest.raises(TsscError, match="frames is too small"):
        TrainConfig(frames=1)
    with pytest.raises(TsscError, match="endpoint_fraction"):
        TrainConfig(endpoint_fraction=2.0)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(TsscError, match="w_ssim"):
            TrainConfig(w_ssim=bad)
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(TsscError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(TsscError, match="no CUDA device"):
            resolve_device("cuda")


def test_network_and_batch_sizes_have_bounds(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value, message in (
        ("hidden", 10**5, r"^hidden must be an integer from 4 to 4096, got 100000$"),
        ("patch_size", 65, r"^patch_size must be an integer from 1 to 64, got 65$"),
        ("batch_size", 10**9, rf"^batch_size must be an integer from 1 to {MAX_BATCH_SIZE}, got"),
    ):
        with pytest.raises(TsscError, match=message):
            TrainConfig(**{name: value})
    # Each size within its bound, the network beyond memory: refused before it is built.
    monkeypatch.setattr("tssc_py.memory.physical_memory", lambda: 10**6)
    message = (
        r"^the network of --preset DiT_tiny \(0\.\d+ M parameters, 5 copies of their float32 "
        r"weights: the weights, their gradients, the EMA and AdamW's two moments\) needs about"
    )
    with pytest.raises(TsscError, match=message):
        train([prepared], tmp_path / "run", tiny_train_config(), show_progress=False)
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_no_validation_subjects(prepared: Path, tmp_path: Path) -> None:
    config = tiny_train_config(steps=2, val_subjects=0)
    train([prepared], tmp_path / "run", config, show_progress=False)
    assert all(r["val_psnr"] == "" for r in _rows(tmp_path / "run"))


def test_preset_auto_picks_by_device_and_records_the_choice(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_train_config(preset="auto", steps=1, val_every=0, device="cpu")
    assert chosen_preset(config, torch.device("cuda"), "DiT_tiny", "DiT_S", "x").preset == "DiT_S"
    assert "x preset: DiT_S (--preset auto on cuda)" in capsys.readouterr().err
    train([prepared], tmp_path / "run", config, show_progress=False)
    assert "stage 1 preset: DiT_tiny (--preset auto on cpu)" in capsys.readouterr().err
    saved = load_checkpoint(tmp_path / "run" / "checkpoint").config
    assert saved["train"]["preset"] == "DiT_tiny"  # a resume on a GPU keeps this network
    given = tiny_train_config(preset="DiT_B")
    assert chosen_preset(given, torch.device("cuda"), "DiT_tiny", "DiT_S", "x") is given


def test_resume_names_an_option_typed_at_its_default(prepared: Path, tmp_path: Path) -> None:
    common = ["--data", prepared, "--out", tmp_path / "run", "--preset", "DiT_tiny"]
    common += ["--frames", "6", "--batch-size", "1", "--val-every", "0", "--no-progress"]
    run_cli("tssc-train-stage1", *common, "--steps", "1", "--lr", "0.001", "--device", "cpu")
    default = TrainConfig().lr
    resumed = run_cli("tssc-train-stage1", *common, "--steps", "2", "--lr", default, "--resume")
    assert f"resuming with the saved options: lr 0.001 (not {default})" in resumed.stderr
    # Left out, the saved value is used without a word.
    resumed = run_cli("tssc-train-stage1", *common, "--steps", "3", "--resume")
    assert "resuming with the saved options" not in resumed.stderr


def test_validation_samples_as_inference_does_and_says_so(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The defaults are the diffusion method's: validation scores what tssc-run will give.
    method = inspect.signature(Diffusion.__init__).parameters
    assert TrainConfig().val_steps == method["steps"].default == 1
    assert TrainConfig().val_flips == method["flips"].default == 8
    config = tiny_train_config(steps=2, prior="demons", val_steps=1, val_flips=2, device="cpu")
    checkpoint = train([prepared], tmp_path / "run", config, show_progress=False)
    line = [x for x in capsys.readouterr().err.splitlines() if x.startswith("step 2:")][-1]
    assert "; demons prior " in line and line.endswith("(1 DDIM step(s), 2 flip(s); 2D SSIM)")
    row = _rows(tmp_path / "run")[-1]
    assert float(row["val_prior_psnr"]) > float(row["val_linear_psnr"]) - 3
    assert load_checkpoint(checkpoint).config["stage1"]["prior"] == "demons"
