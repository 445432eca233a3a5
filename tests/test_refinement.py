"""Stage 2 over a method: its inputs made through the method interface, and its training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tests.conftest import tiny_train_config
from tssc_py.checkpoint import load_checkpoint
from tssc_py.errors import TsscError
from tssc_py.io import read_scan
from tssc_py.methods import get_method
from tssc_py.methods.diffusion import SAMPLING_REVISION
from tssc_py.prepare import PrepareConfig, prepare_file
from tssc_py.refinement import MethodOutputs, train_refinement
from tssc_py.stage1.train import train as train_stage1
from tssc_py.stage2.train import TrainConfig


def _config(steps: int) -> TrainConfig:
    return TrainConfig(
        preset="tiny", steps=steps, batch_size=2, crop=8, val_every=2, checkpoint_every=2
    )


def test_generate_stage1_caches(prepared: Path, tmp_path: Path) -> None:
    ckpt = train_stage1(
        [prepared], tmp_path / "s1", tiny_train_config(frames=8, steps=1), show_progress=False
    )
    images = sorted(prepared.glob("*.nii.gz"))

    def made_at(options: dict[str, object]) -> int:
        runner = get_method("diffusion", checkpoint=ckpt, **options)
        made = MethodOutputs(runner).outputs(images, tmp_path / "cache")
        assert sorted(made) == ["s0", "s1", "s2"]
        return made["s0"].stat().st_mtime_ns

    first = made_at({"steps": 2})
    assert made_at({"steps": 2, "batch_size": None}) == first  # None: the same default
    remade = made_at({"steps": 3})  # other sampling options: made again
    assert remade != first
    assert made_at({"steps": 3, "flips": 8}) == remade  # 8 is the default
    assert made_at({"steps": 3, "flips": 1}) != remade
    settings = json.loads((tmp_path / "cache" / "made_with.json").read_text())
    assert settings["method"] == "diffusion" and settings["flips"] == 1
    assert settings["checkpoint"]["step"] == 1
    assert len(settings["weights_sha256"]) == 64 and settings["revision"] == SAMPLING_REVISION
    # Other weights under the same config (stage 1 retrained, or by other code): made again.
    # The demo's stage 2 once trained on outputs cached before the sampling noise changed.
    weights = ckpt / "ema.safetensors"
    save_file({k: v + 0.01 for k, v in load_file(str(weights)).items()}, str(weights))
    assert made_at({"steps": 3, "flips": 1}) != remade
    # A subject prepared again (here with every third frame known): made again, the others
    # reused. A resumed stage-2 training (once) kept the first pattern's outputs.
    shutil.copytree(prepared, tmp_path / "prepared")
    images = sorted((tmp_path / "prepared").glob("*.nii.gz"))
    runner = get_method("diffusion", checkpoint=ckpt, flips=1)
    made = MethodOutputs(runner).outputs(images, tmp_path / "cache2")
    times = {subject: path.stat().st_mtime_ns for subject, path in made.items()}
    scan = prepared.parent / "scans" / "s0.nii.gz"
    config = PrepareConfig(size=16, depth=4, frames=7, known_every=3)
    prepare_file(scan, images[0], config, overwrite=True)
    made = MethodOutputs(runner).outputs(images, tmp_path / "cache2")
    assert made["s0"].stat().st_mtime_ns != times["s0"]
    assert [made[s].stat().st_mtime_ns for s in ("s1", "s2")] == [times["s1"], times["s2"]]
    assert read_scan(made["s0"]).data.shape[-1] == 7


def test_resume_refuses_other_stage1_outputs(prepared: Path, tmp_path: Path) -> None:
    models = [
        train_stage1(
            [prepared],
            tmp_path / f"s1_{steps}",
            tiny_train_config(frames=8, steps=steps),
            show_progress=False,
        )
        for steps in (1, 2)
    ]
    run = tmp_path / "run"
    train_refinement([prepared], run, _config(2), stage1=models[0], show_progress=False)
    made = sorted((run / "stage1_outputs").glob("*.nii"))
    with pytest.raises(TsscError, match=r"other stage-1 outputs \(checkpoint.step, "):
        train_refinement([prepared], run, _config(3), stage1=models[1], resume=True)
    with pytest.raises(TsscError, match=r"other stage-1 outputs \(steps differs\)"):
        train_refinement(
            [prepared],
            run,
            _config(3),
            stage1=models[0],
            stage1_options={"steps": 2},
            resume=True,
        )
    with pytest.raises(TsscError, match="other stage-1 outputs"):
        train_refinement([prepared], run, _config(3), stage1_outputs=run / "lin", resume=True)
    assert sorted((run / "stage1_outputs").glob("*.nii")) == made  # not made again
    train_refinement(
        [prepared], run, _config(3), stage1=models[0], resume=True, show_progress=False
    )
    # Where and in what batches stage 1 runs is not compared.
    assert "batch_size" not in load_checkpoint(run / "checkpoint").config["stage1"]
    options = {"batch_size": 2}
    train_refinement(
        [prepared], run, _config(3), stage1=models[0], stage1_options=options, resume=True
    )
    # Stage 1 retrained in place with the same options: other weights, other outputs.
    weights = models[0] / "ema.safetensors"
    save_file({k: v + 0.01 for k, v in load_file(str(weights)).items()}, str(weights))
    with pytest.raises(TsscError, match=r"other stage-1 outputs \(weights_sha256 differs\)"):
        train_refinement([prepared], run, _config(4), stage1=models[0], resume=True)
    # Outputs read from a folder that tssc-train-stage2 made are known by how they were made.
    other = tmp_path / "other"
    train_refinement([prepared], other, _config(2), stage1_outputs=run / "stage1_outputs")
    saved = load_checkpoint(other / "checkpoint").config["stage1"]
    assert saved["made_with"]["checkpoint"]["step"] == 1


def test_train_needs_exactly_one_stage1_source(prepared: Path, tmp_path: Path) -> None:
    with pytest.raises(TsscError, match="either a stage-1 checkpoint or a folder"):
        train_refinement([prepared], tmp_path / "r", _config(2))
