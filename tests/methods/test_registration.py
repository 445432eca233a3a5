"""Registration-based methods: demons, the learned baselines, and picking their checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import STAGE1_SIZE, assert_one_line_error, run_cli
from tssc_py.baselines import MODELS
from tssc_py.errors import TsscError
from tssc_py.methods import get_method, interpolate
from tssc_py.methods.registration import Demons, demons_field


def _blob(shift: tuple[float, float] = (0.0, 0.0), n: int = 48) -> np.ndarray:
    x, y = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    cx, cy = 20 + shift[0], 24 + shift[1]
    blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 5.0**2))
    return (0.1 + 0.8 * blob).astype(np.float32)


def _centroid(image: np.ndarray) -> np.ndarray:
    weight = image - image.min()
    grid = np.indices(image.shape)
    return np.array([(g * weight).sum() / weight.sum() for g in grid])


def test_demons_of_identical_frames_is_a_zero_flow_and_returns_them() -> None:
    frame = _blob()
    np.testing.assert_allclose(demons_field(frame, frame, 50, 2.5, 4), 0.0, atol=1e-6)
    out = Demons().between(frame[None], frame[None], [0.3, 0.7])
    np.testing.assert_allclose(out[0], np.stack([frame, frame]), atol=2e-6)


def test_demons_without_a_resolution_level_is_refused() -> None:
    frame = _blob()
    with pytest.raises(TsscError, match="at least one resolution level, got 0"):
        demons_field(frame, frame, 50, 2.5, 0)


def test_demons_options_reach_the_method_and_its_settings() -> None:
    # They were dropped by get_method (and so by run_cohort), and run.json did not record them.
    demons = get_method("demons", iterations=3, sigma=9.0, levels=1, checkpoint=None)
    assert (demons.iterations, demons.sigma, demons.levels) == (3, 9.0, 1)
    assert demons.settings() == {"iterations": 3, "sigma": 9.0, "levels": 1}
    assert get_method("demons").settings() == {"iterations": 50, "sigma": 2.5, "levels": 4}
    for bad in ({"iterations": 0}, {"levels": 2.5}, {"sigma": 0.0}, {"sigma": float("nan")}):
        with pytest.raises(TsscError, match=r"demons (iterations|levels|sigma) must be"):
            Demons(**bad)  # type: ignore[arg-type]


def test_demons_recovers_a_known_translation_within_one_voxel() -> None:
    shift = np.array([3.0, -2.0])
    frame0, frame1 = _blob(), _blob(tuple(shift))
    # frame1(p) = frame0(p - shift): frame0 warped by -shift is frame1.
    field = demons_field(frame0, frame1, 50, 2.5, 4)
    inside = _blob() > 0.5
    recovered = np.array([np.median(field[i][inside]) for i in range(2)])
    assert np.abs(recovered + shift).max() < 1.0, recovered
    middle = Demons().between(frame0[None], frame1[None], [0.5])[0, 0]
    expected = _centroid(frame0) + shift / 2
    assert np.abs(_centroid(middle) - expected).max() < 1.0
    assert np.abs(_centroid(middle) - _centroid(_blob(tuple(shift / 2)))).max() < 1.0


def test_pair_method_fills_gaps_keeps_ends_and_padding() -> None:
    frames = [_blob((t, 0.0), n=24) for t in range(7)]
    stack = np.stack([np.stack(frames), np.zeros((7, 24, 24), np.float32)])
    known = [1, 3, 5]
    out = interpolate(stack, known, get_method("demons"))
    np.testing.assert_array_equal(out[:, known], stack[:, known])
    np.testing.assert_array_equal(out[:, 0], stack[:, 1])  # before the first known frame
    np.testing.assert_array_equal(out[:, 6], stack[:, 5])  # after the last
    assert not out[1].any()  # a padding slice stays empty
    assert np.isfinite(out).all()


@pytest.mark.parametrize("model", MODELS)
def test_learned_methods_fill_with_known_frames_bit_for_bit(
    model: str, baseline_checkpoints: dict[str, Path]
) -> None:
    stack = np.random.default_rng(0).random((3, 7, STAGE1_SIZE, STAGE1_SIZE), dtype=np.float32)
    stack[0, 0, 0, 0] = np.float32(1 / 3)
    stack[2] = 0.0
    method = get_method(model, checkpoint=baseline_checkpoints[model], batch_size=2)
    out = interpolate(stack, [0, 3, 6], method)
    np.testing.assert_array_equal(out[:, [0, 3, 6]], stack[:, [0, 3, 6]])
    assert np.isfinite(out).all() and not out[2].any()
    # Filled frames are not a copy of either end.
    assert not np.array_equal(out[:, 1], stack[:, 0]) and not np.array_equal(out[:, 1], stack[:, 3])


def test_each_method_takes_the_checkpoint_of_its_kind(
    checkpoint: Path, baseline_checkpoints: dict[str, Path]
) -> None:
    given = [checkpoint, *baseline_checkpoints.values()]
    assert get_method("diffusion", checkpoint=given, steps=1).checkpoint == checkpoint
    for model in MODELS:
        method = get_method(model, checkpoint=given)
        assert method.model.config.model == model
        # What tssc-run --resume compares: the checkpoint's config, not where or in what
        # batches it runs.
        config = json.loads((baseline_checkpoints[model] / "config.json").read_text())
        assert method.settings() == {"checkpoint": config}
    assert get_method("demons").settings() == {"iterations": 50, "sigma": 2.5, "levels": 4}
    assert get_method("linear", checkpoint=given).name == "linear"
    with pytest.raises(TsscError, match="'uvinet' needs one 'uvinet' checkpoint, none among"):
        get_method("uvinet", checkpoint=[checkpoint, baseline_checkpoints["voxelmorph"]])
    with pytest.raises(TsscError, match="'voxelmorph' needs one 'voxelmorph' checkpoint, several"):
        get_method("voxelmorph", checkpoint=[baseline_checkpoints["voxelmorph"]] * 2)
    with pytest.raises(TsscError, match="is a 'stage1' checkpoint, expected a 'transmorph' one"):
        get_method("transmorph", checkpoint=checkpoint)
    with pytest.raises(TsscError, match="needs a trained model"):
        get_method("voxelmorph", checkpoint=[])


@pytest.mark.parametrize(
    ("model", "use_stage1", "message"),
    [
        ("voxelmorph", False, "needs a trained model (--checkpoint DIR"),
        ("uvinet", True, "is a 'stage1' checkpoint, expected a 'uvinet' one"),
    ],
)
def test_cli_errors_for_missing_or_wrong_checkpoint(
    tmp_path: Path, checkpoint: Path, model: str, use_stage1: bool, message: str
) -> None:
    extra = ["--checkpoint", checkpoint] if use_stage1 else []
    proc = run_cli(
        "tssc-interpolate",
        "--chunk",
        tmp_path / "c.npz",
        "--method",
        model,
        "--out",
        tmp_path / "o.npz",
        *extra,
        check=False,
    )
    assert_one_line_error(proc, message)


def test_run_gives_each_learned_method_its_checkpoint(
    tmp_path: Path, scan_file: Path, checkpoint: Path, baseline_checkpoints: dict[str, Path]
) -> None:
    methods = "linear,demons,diffusion,voxelmorph,uvinet"
    proc = run_cli(
        "tssc-run",
        *["--input", scan_file, "--out", tmp_path / "run", "--methods", methods],
        *["--checkpoint", baseline_checkpoints["uvinet"], "--checkpoint", checkpoint],
        *["--checkpoint", baseline_checkpoints["voxelmorph"]],
        *["--size", STAGE1_SIZE, "--depth", 4, "--frames", 6, "--ssim", "2d", "--no-progress"],
    )
    assert "wrote" in proc.stdout
    for method in methods.split(","):
        assert (tmp_path / "run" / method / "scan.nii.gz").is_file()
        assert (tmp_path / "run" / "metrics" / f"scan.{method}.metrics.csv").is_file()
