"""Shared test helpers: small synthetic 4D scans made on the fly and a bin/ script runner."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tssc_py.prepare import PrepareConfig, prepare_file
from tssc_py.stage1.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
BIN = REPO / "bin"

# An oblique, anisotropic affine like a real short-axis cine.
OBLIQUE = np.array(
    [
        [1.4, 0.1, 0.5, -80.0],
        [-0.1, 1.38, 0.9, -60.0],
        [0.0, -0.22, 7.9, 20.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def blob_series(shape=(24, 20, 6, 8), seed=0, dtype=np.int16, scale=1000.0) -> np.ndarray:
    """A smooth bright blob moving over time on a noisy background, ``(x, y, z, t)``."""
    rng = np.random.default_rng(seed)
    nx, ny, nz, nt = shape
    x, y, z = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij")
    frames = []
    for t in range(nt):
        cx = nx * (0.35 + 0.3 * t / max(nt - 1, 1))
        blob = np.exp(
            -((x - cx) ** 2 + (y - ny / 2) ** 2) / (2 * (nx / 6) ** 2) - (z - nz / 2) ** 2 / 8
        )
        frames.append(blob)
    data = np.stack(frames, axis=-1) * scale + rng.normal(50, 5, size=shape)
    return data.astype(dtype)


def write_nifti(path: Path, data: np.ndarray, affine=OBLIQUE, time_step=0.04) -> Path:
    """Write ``data`` as NIfTI with the given geometry and return the path."""
    img = nib.Nifti1Image(data, affine)
    if data.ndim == 4:
        img.header.set_zooms((*img.header.get_zooms()[:3], time_step))
    img.header.set_xyzt_units("mm", "sec")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, path)
    return path


def run_cli(name: str, *args: object, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``bin/NAME`` with this interpreter; assert success unless ``check`` is False."""
    # The repository first, then whatever path the environment already gives (packages
    # installed with --target, HPC module systems).
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.run(
        [sys.executable, str(BIN / name), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
    )
    if check:
        assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """A clean failure: non-zero exit, one 'Error:' line naming the problem, no traceback."""
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("Error:"), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def leftovers(folder: Path) -> list[Path]:
    """Temporary files an atomic write would leave behind on failure."""
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


@pytest.fixture
def scan_file(tmp_path: Path) -> Path:
    """A small int16 4D NIfTI scan (24x20x6, 8 frames)."""
    return write_nifti(tmp_path / "scan.nii.gz", blob_series())


# --- stage 1: a small prepared cohort and a briefly trained checkpoint ---------------------

STAGE1_SIZE = 16


def tiny_train_config(**changes: object) -> TrainConfig:
    """A DiT_tiny run small enough for tests (a few steps on 16x16 frames)."""
    base = {
        "preset": "DiT_tiny",  # auto would train DiT_S where the suite runs on a GPU
        "steps": 4,
        "batch_size": 2,
        "val_sequences": 2,
        "val_every": 2,
        "val_steps": 2,
        "checkpoint_every": 2,
        "warmup": 100,
        "frames": 6,
    }
    return TrainConfig(**{**base, **changes})


def make_prepared(folder: Path, subjects: int = 3, frames: int = 8) -> Path:
    """``subjects`` prepared blob series (16x16x4, ``frames`` frames) in ``folder``."""
    for i in range(subjects):
        scan = write_nifti(
            folder / "scans" / f"s{i}.nii.gz", blob_series((20, 18, 4, frames), seed=i)
        )
        prepare_file(
            scan,
            folder / "prepared" / f"s{i}.nii.gz",
            PrepareConfig(size=STAGE1_SIZE, depth=4, frames=frames),
        )
    return folder / "prepared"


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of three prepared subjects (session-wide: treat as read-only)."""
    return make_prepared(tmp_path_factory.mktemp("stage1data"))


@pytest.fixture(scope="session")
def checkpoint(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stage-1 checkpoint trained for a few steps on ``prepared``."""
    out = tmp_path_factory.mktemp("stage1run")
    return train([prepared], out, tiny_train_config(), show_progress=False)


# --- registration baselines: a briefly trained checkpoint of each learned model ------------


def tiny_baseline_config(model: str, **changes: object):
    """A baseline run small enough for tests (a few steps, the narrowest networks)."""
    from tssc_py.baselines.train import TrainConfig

    base = {
        "model": model,
        "features": {"transmorph": 12}.get(model, 4),
        "steps": 4,
        "batch_size": 2,
        "frames": 6,
        "val_sequences": 2,
        "val_every": 2,
        "checkpoint_every": 2,
    }
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="session")
def baseline_checkpoints(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """``{model: checkpoint}`` for every learned baseline, trained a few steps on ``prepared``."""
    from tssc_py.baselines import MODELS
    from tssc_py.baselines.train import train as train_baseline

    return {
        model: train_baseline(
            [prepared],
            tmp_path_factory.mktemp(model),
            tiny_baseline_config(model),
            show_progress=False,
        )
        for model in MODELS
    }
