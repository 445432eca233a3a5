"""Tests of tssc_py.metrics and bin/tssc-metrics."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tests.conftest import run_cli
from tssc_py import metrics
from tssc_py.errors import TsscError
from tssc_py.io import Scan
from tssc_py.prepare import PrepareConfig, prepare_scan, save_record


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random field in [0, 1] (truth) and a noisy, blurred copy of it (prediction)."""
    rng = np.random.default_rng(seed)
    truth = gaussian_filter(rng.random(shape), 2.0)
    truth = (truth - truth.min()) / (truth.max() - truth.min())
    pred = gaussian_filter(truth, 0.7) + 0.05 * rng.standard_normal(shape)
    return np.clip(pred, 0, 1).astype(np.float32), truth


def _sk_ssim(truth: np.ndarray, pred: np.ndarray) -> float:
    return structural_similarity(
        truth,
        pred.astype(np.float64),
        data_range=1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )


SHAPES = [(40, 48, 16), (64, 64, 32), (24, 13, 11)]


@pytest.mark.parametrize("shape", SHAPES)
def test_agrees_with_scikit_image(shape: tuple[int, int, int]) -> None:
    pred, truth = _pair(shape, seed=sum(shape))
    assert metrics.ssim(pred, truth, "3d") == pytest.approx(_sk_ssim(truth, pred), abs=1e-4)
    slices = [_sk_ssim(truth[:, :, k], pred[:, :, k]) for k in range(shape[2])]
    assert metrics.ssim(pred, truth, "2d") == pytest.approx(np.mean(slices), abs=1e-4)
    expected_psnr = peak_signal_noise_ratio(truth, pred.astype(np.float64), data_range=1)
    assert metrics.psnr(pred, truth) == pytest.approx(expected_psnr, abs=1e-4)
    expected_mae = np.mean(np.abs(truth - pred.astype(np.float64)))
    assert metrics.mae(pred, truth) == pytest.approx(expected_mae, abs=1e-12)


def test_identical_inputs_are_perfect() -> None:
    _, truth = _pair((20, 22, 12))
    assert metrics.ssim(truth, truth, "3d") == pytest.approx(1.0, abs=1e-12)
    assert metrics.ssim(truth, truth, "2d") == pytest.approx(1.0, abs=1e-12)
    assert metrics.psnr(truth, truth) == math.inf
    assert metrics.mae(truth, truth) == 0.0


def test_float32_rounding_counts_as_perfect() -> None:
    truth = np.random.default_rng(4).random((16, 16, 8)).astype(np.float32)
    blend = np.float32(0.3) * truth + np.float32(0.7) * truth  # two equal frames, blended
    assert not np.array_equal(blend, truth)
    assert metrics.psnr(blend, truth) == math.inf
    assert 110 < metrics.psnr(truth + np.float32(1e-6), truth) < 130


def test_raw_intensities_are_refused() -> None:
    # On 0..1000 data SSIM (data range 1) gave a plausible 0.99 and PSNR a negative number.
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1000, (12, 12, 12))
    pred = truth + rng.normal(0, 10, truth.shape)
    for score in (metrics.psnr, metrics.ssim):
        with pytest.raises(TsscError, match=r"outside the data range \[0, 1\]: .* prepared space"):
            score(pred, truth)
    assert metrics.psnr(pred, truth, data_range=1000.0) > 30  # a range that fits is fine
    assert metrics.mae(pred, truth) > 0  # no range in a mean absolute error


def test_small_depth_needs_2d_option() -> None:
    pred, truth = _pair((32, 32, 8))
    with pytest.raises(TsscError, match=r"32x32x8.*--ssim 2d"):
        metrics.ssim(pred, truth, "3d")
    assert 0 < metrics.ssim(pred, truth, "2d") < 1
    with pytest.raises(TsscError, match="2D SSIM needs slices"):
        metrics.ssim(pred[:8], truth[:8], "2d")
    with pytest.raises(TsscError, match="unknown SSIM mode"):
        metrics.ssim(pred, truth, "4d")


def _series(shape: tuple[int, int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = _pair(shape, seed)
    return pred, truth.astype(np.float32)


def test_score_series_excludes_known_frames_in_order() -> None:
    pred, truth = _series((16, 16, 12, 6))
    table = metrics.score_series(pred, truth, known_frames=[5, 0, 3])
    assert list(table.columns) == ["frame", "mae", "psnr", "ssim", "cross_slice"]
    assert table["frame"].tolist() == [1, 2, 4]
    for row in table.itertuples():
        p, t = pred[..., row.frame], truth[..., row.frame]
        assert row.mae == metrics.mae(p, t)
        assert row.psnr == metrics.psnr(p, t)
        assert row.ssim == metrics.ssim(p, t)
        assert row.cross_slice == metrics.cross_slice_error(p, t)


def test_cross_slice_error_known_answer() -> None:
    """A constant through-plane gradient of 0.01 against a flat truth gives exactly 0.01."""
    shape = (16, 16, 12, 3)
    truth = np.full(shape, 0.5)
    ramp = 0.2 + 0.01 * np.arange(shape[2])  # a constant through-plane gradient
    pred = np.broadcast_to(ramp[None, None, :, None], shape).copy()
    pred[..., [0, 2]] = truth[..., [0, 2]]
    table = metrics.score_series(pred, truth, known_frames=[0, 2], ssim_mode="2d")
    assert table["cross_slice"].item() == pytest.approx(0.01, rel=1e-12)
    assert table["mae"].item() == pytest.approx(np.mean(np.abs(ramp - 0.5)))
    # A constant offset changes no gradient: consistent across slices, however wrong.
    assert metrics.cross_slice_error(truth[..., 0] + 0.3, truth[..., 0]) == 0.0
    # One slice has no neighbour: the error is undefined (NaN), the other metrics are not.
    flat = metrics.score_series(pred[:, :, :1], truth[:, :, :1], [0, 2], ssim_mode="2d")
    assert math.isnan(flat["cross_slice"].item()) and np.isfinite(flat["psnr"].item())


def test_score_series_errors() -> None:
    pred, truth = _series((16, 16, 12, 4))
    with pytest.raises(
        TsscError,
        match=r"prediction and truth have different shapes: \(16, 16, 12, 4\) vs \(16, 16, 12, 3\)",
    ):
        metrics.score_series(pred, truth[..., :3], [0])
    with pytest.raises(TsscError, match=r"known frame\(s\) \[4\] outside"):
        metrics.score_series(pred, truth, [0, 4])
    with pytest.raises(TsscError, match="no frame to score"):
        metrics.score_series(pred, truth, [0, 1, 2, 3])
    with pytest.raises(TsscError, match="--ssim 2d"):
        metrics.score_series(pred[:, :, :8], truth[:, :, :8], [0], ssim_mode="3d")


def _write(data: np.ndarray, path: Path, affine: np.ndarray | Path) -> Path:
    """Save ``data`` with ``affine``, or with the affine of the NIfTI file ``affine``."""
    if isinstance(affine, Path):
        affine = nib.load(affine).affine
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    return path


@pytest.fixture()
def case(tmp_path: Path) -> dict[str, Path]:
    """A prepared evaluate-mode subject: truth, prediction (known frames copied) and record."""
    rng = np.random.default_rng(1)
    source = gaussian_filter(rng.random((20, 20, 12, 8)), (2, 2, 2, 0)) * 1000
    config = PrepareConfig(mode="evaluate", frames=5, size=16, depth=12)
    prepared, record = prepare_scan(Scan(source, np.eye(4)), config, "sub01")
    truth = prepared.data
    pred = truth.copy()
    predicted = record.predicted_frames
    pred[..., predicted] = np.clip(
        pred[..., predicted] + 0.05 * rng.standard_normal((*truth.shape[:3], len(predicted))), 0, 1
    )
    save_record(record, tmp_path / "sub01.json")
    return {
        "truth": _write(truth, tmp_path / "truth.nii.gz", np.array(record.prepared_affine)),
        "prediction": _write(pred, tmp_path / "pred.nii.gz", np.array(record.prepared_affine)),
        "record": tmp_path / "sub01.json",
        "out": tmp_path / "out",
    }


def test_evaluate_files_writes_both_tables(case: dict[str, Path]) -> None:
    frames_path, metrics_path = metrics.evaluate_files(method="linear", **case)
    assert frames_path == case["out"] / "sub01.linear.frames.csv"
    assert metrics_path == case["out"] / "sub01.linear.metrics.csv"
    frames = pd.read_csv(frames_path, dtype={"subject": str})
    columns = ["mae", "psnr", "ssim", "cross_slice"]
    assert list(frames.columns) == ["subject", "method", "frame", *columns, "ssim_mode"]
    assert set(frames["ssim_mode"]) == {"3d"}
    assert frames["frame"].tolist() == [1, 2, 3]
    assert set(frames["subject"]) == {"sub01"} and set(frames["method"]) == {"linear"}
    pred = nib.load(case["prediction"]).get_fdata()
    truth = nib.load(case["truth"]).get_fdata()
    assert frames["psnr"].iloc[0] == pytest.approx(metrics.psnr(pred[..., 1], truth[..., 1]))
    means = pd.read_csv(metrics_path)
    assert list(means.columns) == ["subject", "method", "frames", *columns, "ssim_mode"]
    assert len(means) == 1 and means["frames"].iloc[0] == 3
    for m in columns:
        assert means[m].iloc[0] == pytest.approx(frames[m].mean(), rel=1e-12)

    before = frames_path.read_bytes()
    with pytest.raises(TsscError, match="output exists"):
        metrics.evaluate_files(method="linear", **case)
    assert frames_path.read_bytes() == before
    metrics.evaluate_files(method="linear", overwrite=True, **{**case, "ssim_mode": "2d"})
    assert frames_path.read_bytes() != before
    assert sorted(p.name for p in case["out"].iterdir()) == [
        "sub01.linear.frames.csv",
        "sub01.linear.metrics.csv",
    ]


def test_evaluate_files_errors(case: dict[str, Path], tmp_path: Path) -> None:
    short = _write(
        nib.load(case["truth"]).get_fdata()[..., :4], tmp_path / "short.nii.gz", case["truth"]
    )
    with pytest.raises(TsscError, match="different shapes") as err:
        metrics.evaluate_files(method="m", **{**case, "prediction": short})
    assert err.value.path == short
    with pytest.raises(TsscError, match="method name 'a/b' has characters other than"):
        metrics.evaluate_files(method="a/b", **case)
    with pytest.raises(TsscError, match=r"expects \(16, 16, 12, 5\)") as err:
        metrics.evaluate_files(method="m", **{**case, "prediction": short, "truth": short})
    assert not case["out"].exists()

    source = np.random.default_rng(2).random((12, 12, 12, 3))
    config = PrepareConfig(mode="upsample", size=12, depth=12, frames_between=1)
    _, record = prepare_scan(Scan(source, np.eye(4)), config, "sub02")
    save_record(record, tmp_path / "up.json")
    with pytest.raises(TsscError, match="upsample mode has no ground truth") as err:
        metrics.evaluate_files(method="m", **{**case, "record": tmp_path / "up.json"})
    assert err.value.path == tmp_path / "up.json"


def test_evaluate_files_refuses_another_subjects_series(
    case: dict[str, Path], tmp_path: Path
) -> None:
    truth = nib.load(case["truth"]).get_fdata()
    shifted = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(truth.astype(np.float32), np.diag([1.0, 1, 1.5, 1])), shifted)
    for role in ("truth", "prediction"):
        with pytest.raises(TsscError, match="a series of another subject") as err:
            metrics.evaluate_files(method="m", **{**case, role: shifted})
        assert err.value.path == shifted
    # Same geometry, another series: its known frames are not the truth's.
    other = truth.copy()
    other[..., 0] = np.roll(other[..., 0], 3, axis=0)
    other_path = _write(other, tmp_path / "other.nii.gz", case["truth"])
    with pytest.raises(TsscError, match="known frame 0 differs from the truth's") as err:
        metrics.evaluate_files(method="m", **{**case, "prediction": other_path})
    assert err.value.path == other_path
    assert not case["out"].exists()
    # Storage rounding of the known frames (e.g. a float16 NIfTI) is not a mismatch.
    rounded = _write(truth.astype(np.float16), tmp_path / "rounded.nii.gz", case["truth"])
    metrics.evaluate_files(method="m", **{**case, "prediction": rounded})


@pytest.mark.parametrize("z_offset", [0, 3, 8])
def test_only_the_scans_own_slices_are_scored(tmp_path: Path, z_offset: int) -> None:
    rng = np.random.default_rng(3)
    source = gaussian_filter(rng.random((16, 16, 4, 5)), (2, 2, 1, 0)) * 1000
    config = PrepareConfig(mode="evaluate", frames=5, size=16, depth=12)
    prepared, record = prepare_scan(Scan(source, np.eye(4)), config, "sub03")
    record.z_offset = z_offset  # as a centred or shifted depth fit would place the slices
    real = record.scan_slices
    assert (real.start, real.stop) == (z_offset, min(12, z_offset + 4))
    truth = np.zeros_like(prepared.data)
    truth[:, :, real] = prepared.data[:, :, : real.stop - real.start]
    pred = truth.copy()
    pred[:, :, real, 1:4] += 0.05  # wrong on the scan's slices, "perfect" on the padding
    save_record(record, tmp_path / "sub03.json")
    paths = {
        "truth": _write(truth, tmp_path / "t.nii", np.array(record.prepared_affine)),
        "prediction": _write(pred, tmp_path / "p.nii", np.array(record.prepared_affine)),
        "record": tmp_path / "sub03.json",
    }
    _, means_path = metrics.evaluate_files(
        method="m", out=tmp_path / "out", ssim_mode="2d", **paths
    )
    means = pd.read_csv(means_path)
    assert means["mae"].iloc[0] == pytest.approx(0.05, rel=1e-5)
    assert means["psnr"].iloc[0] == pytest.approx(-10 * math.log10(0.05**2), rel=1e-4)
    # 3D SSIM over 4 (or fewer) real slices: refused before any scoring.
    with pytest.raises(TsscError, match="3D SSIM needs at least 11"):
        metrics.evaluate_files(method="m", out=tmp_path / "o3", ssim_mode="3d", **paths)


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return run_cli("tssc-metrics", *args, check=False)


def test_cli(case: dict[str, Path], tmp_path: Path) -> None:
    args = ["--truth", case["truth"], "--record", case["record"], "--method", "linear"]
    done = _cli("--prediction", case["prediction"], *args, "--ssim", "2d", "--out", case["out"])
    assert done.returncode == 0, done.stderr
    assert "sub01.linear.frames.csv" in done.stdout
    assert (case["out"] / "sub01.linear.metrics.csv").is_file()

    short = _write(
        nib.load(case["truth"]).get_fdata()[..., :4], tmp_path / "short.nii.gz", case["truth"]
    )
    bad_out = tmp_path / "bad"
    done = _cli("--prediction", short, *args, "--out", bad_out)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"Error: {short}: prediction and truth have different shapes")
    assert "Traceback" not in done.stderr
    assert not bad_out.exists()
