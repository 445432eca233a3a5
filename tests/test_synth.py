"""Tests for the synthetic 4D MRI cohorts (tssc_py.synth) and bin/tssc-synth."""

from __future__ import annotations

import csv
import dataclasses
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import assert_one_line_error, run_cli
from tssc_py import synth
from tssc_py.errors import TsscError
from tssc_py.io import read_scan

SMALL = {"size": 32, "depth": 8, "frames": 6}


def rng(seed: int = 0, subject: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, subject])


def moving_fraction(signal: np.ndarray) -> float:
    """Share of voxels whose noise-free signal changes by more than 0.1 over the frames."""
    return float(np.mean(signal.max(axis=3) - signal.min(axis=3) > 0.1))


@pytest.mark.parametrize("kind", synth.KINDS)
def test_same_seed_same_scan_other_seed_another(kind):
    first = synth.synth_scan(kind, rng(1), **SMALL)
    again = synth.synth_scan(kind, rng(1), **SMALL)
    other = synth.synth_scan(kind, rng(2), **SMALL)
    np.testing.assert_array_equal(first.data, again.data)
    np.testing.assert_array_equal(first.affine, again.affine)
    assert first.time_step == again.time_step
    assert not np.array_equal(first.data, other.data)
    assert not np.allclose(first.affine, other.affine)


@pytest.mark.parametrize(
    ("kind", "fov", "time_step"),
    [("cardiac", (300, 420), (0.03, 0.05)), ("knee", (130, 190), (1.0, 3.0))],
)
def test_type_shape_and_geometry(kind, fov, time_step):
    scan = synth.synth_scan(kind, rng(), size=40, depth=10, frames=5)
    assert scan.data.dtype == np.int16
    assert scan.data.shape == (40, 40, 10, 5)
    assert scan.data.min() >= 0 and 500 < scan.data.max() < np.iinfo(np.int16).max
    sx, sy, sz = scan.spacing
    assert sx == pytest.approx(sy)
    assert sz >= 1.5 * sx  # thick slices along z
    assert fov[0] < 40 * sx < fov[1]
    directions = scan.affine[:3, :3] / np.array(scan.spacing)
    np.testing.assert_allclose(directions.T @ directions, np.eye(3), atol=1e-9)
    assert np.linalg.det(directions) == pytest.approx(1.0)
    # Slightly oblique: no axis is exactly aligned with the scanner axes.
    assert np.abs(directions).max(axis=0).max() < 1 - 1e-4
    assert np.abs(scan.affine[:3, 3]).max() > 20  # the corner voxel, not the origin
    assert time_step[0] <= scan.time_step <= time_step[1]
    assert scan.time_unit == "sec"


def test_spacing_follows_the_grid():
    # The same subject on a twice finer grid: same field of view, voxels half the size.
    coarse = synth.phantom("knee", rng(), size=64, depth=16, frames=2)
    fine = synth.phantom("knee", rng(), size=128, depth=32, frames=2)
    np.testing.assert_allclose(coarse.affine[:3, :3], 2 * fine.affine[:3, :3], rtol=1e-12)
    spacing = np.linalg.norm(fine.affine[:3, :3], axis=0)
    assert 140 <= 128 * spacing[0] <= 180 and 80 <= 32 * spacing[2] <= 110


@pytest.mark.parametrize("kind", synth.KINDS)
def test_every_frame_moves(kind):
    signal = synth.phantom(kind, rng(), **SMALL).signal
    step = np.abs(np.diff(signal, axis=3)).max(axis=(0, 1, 2))
    assert (step > 0.005).all()
    assert moving_fraction(signal) > 0.002


def test_knee_moves_much_more_than_the_heart():
    heart = [moving_fraction(synth.phantom("cardiac", rng(s), **SMALL).signal) for s in range(3)]
    knee = [moving_fraction(synth.phantom("knee", rng(s), **SMALL).signal) for s in range(3)]
    assert min(knee) > 10 * max(heart)
    assert min(knee) > 0.2


def test_heart_contracts_and_relaxes_over_one_cycle():
    signal = synth.phantom("cardiac", rng(3), size=64, depth=12, frames=20).signal
    blood = (signal == 1.0).sum(axis=(0, 1, 2))  # voxels wholly inside blood
    systole = int(np.argmin(blood))
    assert 4 <= systole <= 9  # end-systole about a third into the cycle
    assert blood[systole] < 0.85 * blood[0]
    assert blood[-1] > 0.95 * blood[0]  # back near end-diastole: one full cycle


def test_knee_flexes_through_a_large_angle():
    clean = synth.phantom("knee", rng(), size=48, depth=8, frames=5).signal
    mid = clean.shape[2] // 2
    # The tibia sweeps through the lower half of the field of view.
    lower = clean[:, : clean.shape[1] // 3, mid]
    change = np.abs(lower[..., -1] - lower[..., 0]).mean() / lower[..., 0].mean()
    assert change > 0.3


@pytest.mark.parametrize("kind", synth.KINDS)
def test_scan_is_the_phantom_with_bias_and_rician_noise(kind):
    clean = synth.phantom(kind, rng(4), **SMALL)
    scan = synth.synth_scan(kind, rng(4), **SMALL)
    air = scan.data[clean.signal == 0].astype(float)
    assert air.size > 1000
    assert air.min() >= 0 and np.count_nonzero(air) > 0.9 * air.size and air.mean() > 0
    # Rician noise on zero signal is Rayleigh, with mean sigma * sqrt(pi / 2).
    assert air.mean() == pytest.approx(clean.sigma * np.sqrt(np.pi / 2), rel=0.1)
    expected = clean.signal * (clean.bias[..., None] * clean.scale)
    bright = expected > 20 * clean.sigma
    residual = scan.data[bright] - expected[bright]
    assert abs(residual.mean()) < 0.1 * clean.sigma
    assert residual.std() == pytest.approx(clean.sigma, rel=0.1)
    assert clean.bias.min() > 0.6 and clean.bias.max() < 1.5
    assert clean.bias.max() - clean.bias.min() > 0.05


@pytest.mark.parametrize("kind", synth.KINDS)
def test_partial_volume_edges(kind):
    clean = synth.phantom(kind, rng(), size=64, depth=8, frames=2)
    values = np.array([0.0, *clean.tissues.values()])
    distance = np.abs(clean.signal[..., None] - values).min(axis=-1)
    mixed = distance > 1e-4
    # Edges are a voxel wide: many mixed voxels, but most voxels are one pure tissue.
    assert 0.02 < mixed.mean() < 0.35
    assert clean.signal.min() >= 0 and clean.signal.max() <= max(values) + 1e-6


def read_sheet(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_write_cohort(tmp_path):
    out = tmp_path / "cohort"
    paths = synth.write_cohort(out, "knee", subjects=2, size=24, depth=4, frames=3, seed=5)
    assert paths == [out / "knee_000.nii.gz", out / "knee_001.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == [
        "knee_000.nii.gz",
        "knee_001.nii.gz",
        "samplesheet.csv",
    ]
    assert (out / "samplesheet.csv").read_text().splitlines()[0] == "subject,scan"
    rows = read_sheet(out / "samplesheet.csv")
    assert [row["subject"] for row in rows] == ["knee_000", "knee_001"]
    for i, row in enumerate(rows):
        expected = synth.synth_scan("knee", rng(5, i), size=24, depth=4, frames=3)
        img = nib.load(out / row["scan"])
        assert img.shape == (24, 24, 4, 3)
        assert img.get_data_dtype() == np.int16
        np.testing.assert_array_equal(np.asanyarray(img.dataobj), expected.data)
        np.testing.assert_allclose(img.affine, expected.affine, atol=1e-4)
        zooms = img.header.get_zooms()
        np.testing.assert_allclose(zooms[:3], expected.spacing, rtol=1e-5)
        assert zooms[3] == pytest.approx(expected.time_step, rel=1e-6)
        assert img.header.get_xyzt_units() == ("mm", "sec")
        scan = read_scan(out / row["scan"])
        np.testing.assert_array_equal(scan.data, expected.data)


def test_write_cohort_refuses_to_overwrite(tmp_path):
    synth.write_cohort(tmp_path, "cardiac", subjects=1, size=16, depth=2, frames=2)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(TsscError, match="exists"):
        synth.write_cohort(tmp_path, "cardiac", subjects=1, size=16, depth=2, frames=2, seed=1)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    synth.write_cohort(
        tmp_path, "cardiac", subjects=1, size=16, depth=2, frames=2, seed=1, overwrite=True
    )
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert after.keys() == before.keys()
    assert after["cardiac_000.nii.gz"] != before["cardiac_000.nii.gz"]


def test_write_cohort_leaves_nothing_on_failure(tmp_path, monkeypatch):
    real = synth.synth_scan

    def fail_on_second(kind, generator, *args):
        if fail_on_second.calls == 1:
            raise RuntimeError("boom")
        fail_on_second.calls += 1
        return real(kind, generator, *args)

    fail_on_second.calls = 0
    monkeypatch.setattr(synth, "synth_scan", fail_on_second)
    with pytest.raises(RuntimeError, match="boom"):
        synth.write_cohort(tmp_path, "knee", subjects=3, size=16, depth=2, frames=2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "brain"}, "unknown kind 'brain'"),
        ({"subjects": 0}, "subjects must be"),
        ({"size": 15}, "size must be"),
        ({"depth": 0}, "depth must be"),
        ({"frames": 1}, "frames must be"),
        ({"seed": -1}, "seed must be"),
        ({"size": 32.5}, "size must be"),
    ],
)
def test_bad_arguments(tmp_path, change, message):
    args = {"kind": "cardiac", "subjects": 1, "size": 16, "depth": 1, "frames": 2, **change}
    with pytest.raises(TsscError, match=message):
        synth.write_cohort(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()
    if "subjects" not in change and "seed" not in change:
        args = {k: v for k, v in args.items() if k not in ("subjects", "seed")}
        with pytest.raises(TsscError, match=message):
            synth.synth_scan(rng=rng(), **args)


@pytest.mark.parametrize("name", ["subjects", "size", "depth", "frames"])
def test_sizes_have_upper_bounds(tmp_path, name):
    low, high = synth.LIMITS[name]
    args = {"kind": "knee", "subjects": 1, "size": 16, "depth": 1, "frames": 2}
    for bad in (high + 1, 10**12):
        message = rf"^{name} must be an integer from {low} to {high}, got {bad}$"
        with pytest.raises(TsscError, match=message):
            synth.write_cohort(tmp_path / "out", **{**args, name: bad})
    assert not (tmp_path / "out").exists()


def test_memory_estimate_is_checked_before_drawing(tmp_path, monkeypatch):
    # One subject at a time: float32 signal and int16 scan a frame, and float32 scratch.
    needed = 64 * 64 * 16 * (6 * 12 + 4 * synth.SCRATCH_VOLUMES)
    monkeypatch.setattr("tssc_py.memory.physical_memory", lambda: needed - 1)

    def no_work(*args, **kwargs):
        raise AssertionError("drawn before the memory check")

    monkeypatch.setattr(synth, "_cardiac", no_work)
    message = (
        r"^a scan of 64x64x16 voxels and 12 frames \(--size, --depth, --frames; one subject at "
        r"a time\) needs about 0.0131 GB of memory, more than this machine's 0.0131 GB$"
    )
    with pytest.raises(TsscError, match=message):
        synth.write_cohort(tmp_path / "out", "cardiac", subjects=1000)
    with pytest.raises(TsscError, match=message):
        synth.synth_scan("cardiac", rng())
    assert not (tmp_path / "out").exists()


def test_output_folder_that_is_a_file(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(TsscError, match="not a folder"):
        synth.write_cohort(tmp_path / "taken", "knee", subjects=1, size=16, depth=1, frames=2)


def _synth(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("tssc-synth", *args, check=False)


@pytest.mark.slow
def test_cli(tmp_path):
    out = tmp_path / "demo"
    options = ["--kind", "knee", "--subjects", "2", "--size", "16", "--depth", "2"]
    done = _synth(*options, "--frames", "3", "--seed", "7", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stdout
    rows = read_sheet(out / "samplesheet.csv")
    assert [row["scan"] for row in rows] == ["knee_000.nii.gz", "knee_001.nii.gz"]
    assert nib.load(out / "knee_001.nii.gz").shape == (16, 16, 2, 3)
    again = _synth(*options, "--frames", "3", "--out", str(out))
    assert again.returncode == 1
    assert "Error:" in again.stderr and "Traceback" not in again.stderr
    assert _synth(*options, "--frames", "3", "--out", str(out), "--overwrite").returncode == 0


def test_cli_sizes_have_upper_bounds(tmp_path):
    done = _synth("--size", "100000", "--out", str(tmp_path / "o"))
    assert_one_line_error(done, "'--size': 100000 is not in the range 16<=x<=2048")
    assert not (tmp_path / "o").exists()


def test_cli_help():
    done = _synth("--help")
    assert done.returncode == 0
    assert "--kind [cardiac|knee]" in done.stdout and "--overwrite" in done.stdout


# --- variation: motion and looks on top of the scenes -----------------------------------------


@pytest.mark.parametrize("kind", synth.KINDS)
def test_no_variation_is_the_scene_draw_for_draw(kind):
    plain = synth.synth_scan(kind, rng(3), **SMALL)
    off = synth.synth_scan(kind, rng(3), **SMALL, variation=synth.Variation())
    np.testing.assert_array_equal(plain.data, off.data)


def _in_plane_angle(frame: np.ndarray) -> float:
    """Orientation (degrees) of a frame's principal in-plane axis, averaged over slices."""
    x, y = np.meshgrid(np.arange(frame.shape[0]), np.arange(frame.shape[1]), indexing="ij")
    w = frame.sum(axis=2)
    cx, cy = (w * x).sum() / w.sum(), (w * y).sum() / w.sum()
    cxx, cyy = (w * (x - cx) ** 2).sum(), (w * (y - cy) ** 2).sum()
    cxy = (w * (x - cx) * (y - cy)).sum()
    return float(np.degrees(0.5 * np.arctan2(2 * cxy, cxx - cyy)))


def test_rotation_turns_each_frame_by_its_angle():
    # A bright, elongated, still object: a frame's orientation is the rotation applied.
    clean = synth.phantom("cardiac", rng(1), **SMALL)
    signal = np.zeros_like(clean.signal)
    signal[10:22, 13:19] = 1.0
    still = dataclasses.replace(clean, signal=signal)
    moved = synth._vary(still, synth.Variation(rotation=60), rng(2))
    assert 30 <= abs(moved.angles[-1] - moved.angles[0]) <= 60
    np.testing.assert_allclose(np.diff(moved.angles), np.diff(moved.angles)[0])
    turned = [
        _in_plane_angle(moved.signal[..., t]) - _in_plane_angle(signal[..., 0]) for t in (0, 5)
    ]
    # Positive angles turn x towards y: the measured orientation follows, to a degree or two.
    np.testing.assert_allclose(turned, moved.angles[[0, 5]], atol=2.5)


def test_translation_breathing_texture_contrast_and_noise():
    variation = synth.Variation(translation=20, breathing=5, texture=0.2, contrast=0.5, noise=2)
    clean = synth.phantom("knee", rng(4), **SMALL)
    varied = synth.phantom("knee", rng(4), **SMALL, variation=variation)
    mm = float(np.linalg.norm(clean.affine[:3, 0]))
    sweep = np.linalg.norm(varied.shifts[-1] - varied.shifts[0]) * mm
    assert 5 <= sweep <= 20 + 2 * 5  # translation (10 to 20 mm) and breathing (at most 2 x 5)
    assert varied.sigma == 2 * clean.sigma
    assert not np.allclose(varied.signal, clean.signal)
    assert float(varied.signal.min()) >= 0


def test_variation_bounds():
    for name, high in synth.VARIATION_LIMITS.items():
        with pytest.raises(TsscError, match=f"{name} must be a number from 0 to {high:g}"):
            synth.Variation(**{name: high * 2})


def test_cli_variation(tmp_path):
    out = tmp_path / "turned"
    options = ["--kind", "cardiac", "--subjects", "1", "--size", "16", "--depth", "2"]
    done = _synth(*options, "--frames", "3", "--rotation", "40", "--out", str(out))
    assert done.returncode == 0, done.stderr
    plain = _synth(*options, "--frames", "3", "--out", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr
    a, b = (read_scan(p / "cardiac_000.nii.gz").data for p in (out, tmp_path / "plain"))
    assert not np.array_equal(a, b)
    assert_one_line_error(_synth("--rotation", "500", "--out", str(tmp_path / "o")), "0<=x<=180")


def test_a_prefix_names_the_subjects(tmp_path):
    paths = synth.write_cohort(tmp_path / "c", "knee", 2, prefix="knee_turning", **SMALL)
    assert [p.name for p in paths] == ["knee_turning_000.nii.gz", "knee_turning_001.nii.gz"]
    assert [r["subject"] for r in read_sheet(tmp_path / "c" / "samplesheet.csv")] == [
        "knee_turning_000",
        "knee_turning_001",
    ]
    with pytest.raises(TsscError, match=r"prefix '\.\./x'"):
        synth.write_cohort(tmp_path / "d", "knee", 1, prefix="../x", **SMALL)
