"""The shared slice-sequence dataset: prepared subjects, random windows, flips, known frames."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import STAGE1_SIZE, blob_series, write_nifti
from tssc_py.errors import TsscError
from tssc_py.prepare import PrepareConfig, prepare_file
from tssc_py.sequences import (
    Sampler,
    known_pattern,
    load_cohort,
    load_series,
    prepared_images,
    validation_set,
)


def test_prepared_images_from_folders_and_files(prepared: Path) -> None:
    images = prepared_images([prepared])
    assert [p.name for p in images] == ["s0.nii.gz", "s1.nii.gz", "s2.nii.gz"]
    assert prepared_images([images[0], prepared]) == images


def test_images_without_a_record_are_named(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(prepared, folder)
    write_nifti(folder / "raw.nii.gz", blob_series((8, 8, 2, 4)))  # a scan never prepared
    assert len(prepared_images([folder])) == 3
    assert "1 image(s) without a record skipped: raw.nii.gz" in capsys.readouterr().err


def test_prepared_images_errors(tmp_path: Path) -> None:
    with pytest.raises(TsscError, match="no such file or folder"):
        prepared_images([tmp_path / "missing"])
    with pytest.raises(TsscError, match="holds no prepared image"):
        prepared_images([tmp_path])


def test_load_series_drops_padding_slices(tmp_path: Path) -> None:
    scan = write_nifti(tmp_path / "s.nii.gz", blob_series((20, 18, 4, 8)))
    out, _ = prepare_file(
        scan, tmp_path / "p" / "s.nii.gz", PrepareConfig(size=16, depth=8, frames=8)
    )
    series = load_series(out)
    assert series.stacks.shape == (4, 8, 16, 16)  # 4 of the 8 slices are zero padding
    assert series.subject == "s" and series.prepare["size"] == 16


def test_load_cohort_checks(prepared: Path, tmp_path: Path) -> None:
    images = prepared_images([prepared])
    cohort = load_cohort(images, frames=8)
    assert [s.stacks.shape for s in cohort] == [(4, 8, STAGE1_SIZE, STAGE1_SIZE)] * 3
    with pytest.raises(TsscError, match="fewer than the training window of 9"):
        load_cohort(images, frames=9)
    twin = tmp_path / "twin"
    twin.mkdir()
    for suffix in (".nii.gz", ".json"):
        shutil.copy(prepared / f"s0{suffix}", twin / f"s0{suffix}")
    with pytest.raises(TsscError, match="subject 's0' also comes from"):
        load_cohort([images[0], twin / "s0.nii.gz"], frames=8)
    big = tmp_path / "big"
    scan = write_nifti(tmp_path / "b.nii.gz", blob_series((20, 18, 4, 8)))
    prepare_file(scan, big / "b.nii.gz", PrepareConfig(size=24, depth=4, frames=8))
    with pytest.raises(TsscError, match="differs from"):
        load_cohort([images[0], big / "b.nii.gz"], frames=8)


def test_known_patterns() -> None:
    rng = np.random.default_rng(0)
    patterns = [known_pattern(rng, 12, 0.5) for _ in range(400)]
    assert all(p[0] and p[-1] for p in patterns)
    ends_only = sum(p.sum() == 2 for p in patterns) / len(patterns)
    assert 0.5 <= ends_only < 0.65  # half by choice, plus stride 11 in the other half
    assert any(p.sum() == 7 for p in patterns)  # every 2nd frame known
    assert all(known_pattern(rng, 12, 1.0).sum() == 2 for _ in range(20))
    assert known_pattern(rng, 2, 0.0).tolist() == [True, True]


def test_sampler_windows_and_flips(prepared: Path) -> None:
    cohort = load_cohort(prepared_images([prepared]), frames=5)
    sampler = Sampler(cohort, frames=5, endpoint_fraction=1.0, whole_fraction=0.0)
    rng = np.random.default_rng(0)
    x, known = sampler.batch(rng, 64)
    assert x.shape == (64, 5, STAGE1_SIZE, STAGE1_SIZE) and x.dtype == np.float32
    assert known.shape == (64, 5) and known[:, [0, -1]].all()
    # Every sample is a (possibly flipped) contiguous window of some slice.
    stacks = [s for series in cohort for s in series.stacks]
    for seq in x[:8]:
        found = False
        for stack in stacks:
            for start in range(stack.shape[0] - 4):
                window = stack[start : start + 5]
                for flips in range(8):
                    w = window
                    for axis in range(3):
                        if flips >> axis & 1:
                            w = np.flip(w, axis)
                    found |= np.array_equal(w, seq)
        assert found
    # Flips happen.
    assert len({seq.tobytes() for seq in x}) > 32


def test_sampler_whole_series(prepared: Path) -> None:
    cohort = load_cohort(prepared_images([prepared]), frames=3)
    sampler = Sampler(cohort, frames=3, whole_fraction=1.0)
    x, _ = sampler.batch(np.random.default_rng(1), 16)
    stacks = [s for series in cohort for s in series.stacks]
    spread = [s[[0, 4, 7]] for s in stacks] + [s[[7, 4, 0]] for s in stacks]
    for seq in x:
        assert any(
            np.array_equal(np.flip(np.flip(seq, 1), 2), s)
            or np.array_equal(np.flip(seq, 1), s)
            or np.array_equal(np.flip(seq, 2), s)
            or np.array_equal(seq, s)
            for s in spread
        )


def test_validation_set(prepared: Path) -> None:
    cohort = load_cohort(prepared_images([prepared]), frames=6)
    val = validation_set(cohort, 6, 5)
    assert val.shape == (5, 6, STAGE1_SIZE, STAGE1_SIZE)
    assert validation_set(cohort, 6, 100).shape[0] == 12
