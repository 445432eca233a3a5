"""What the CPU quality recipes share: their synthetic cohorts and their gain tables.

Imported by ``benchmarks/stage1.py``, ``stage2_recipe.py`` and ``baselines.py`` (run as scripts,
so this folder is on ``sys.path``).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from tssc_py.prepare import PrepareConfig, prepare_file
from tssc_py.synth import write_cohort

SIZE, DEPTH, FRAMES = 64, 16, 12
"""Frame size, slices and frames of every recipe's subjects."""
PREPARE = PrepareConfig(size=SIZE, depth=DEPTH)
"""How every recipe prepares its subjects."""


def make_data(out: Path, train_knee: int, train_cardiac: int, test_subjects: int) -> None:
    """Synthesise the training cohorts (seed 1) and held-out ``knee`` / ``cardiac`` cohorts
    (seed 2) under ``out``, and prepare the training subjects into ``out/prepared``; what is
    already there is kept (a resumed recipe)."""
    started = time.monotonic()
    cohorts = {
        "train_knee": ("knee", 1, train_knee),
        "train_cardiac": ("cardiac", 1, train_cardiac),
        "knee": ("knee", 2, test_subjects),
        "cardiac": ("cardiac", 2, test_subjects),
    }
    for name, (kind, seed, subjects) in cohorts.items():
        if subjects and not (out / name / "samplesheet.csv").exists():
            write_cohort(out / name, kind, subjects, SIZE, DEPTH, FRAMES, seed)
    for scan in sorted(out.glob("train_*/*.nii.gz")):
        target = out / "prepared" / scan.name
        if not target.exists():
            prepare_file(scan, target, PREPARE)
    print(f"data ready in {time.monotonic() - started:.0f} s", flush=True)


def gain_rows(kind: str, per_subject: dict[str, pd.DataFrame]) -> list[dict[str, object]]:
    """PSNR / SSIM of each method with their gains over ``linear`` (mean, and the worst subject).

    Args:
        kind: The cohort's kind (the rows' first column).
        per_subject: Method name -> its per-subject scores indexed by subject.
    """
    linear = per_subject["linear"]
    rows = []
    for method, table in per_subject.items():
        gain = table["psnr"] - linear["psnr"]
        rows.append(
            {
                "kind": kind,
                "method": method,
                "psnr": table["psnr"].mean(),
                "ssim": table["ssim"].mean(),
                "psnr_gain": gain.mean(),
                "ssim_gain": (table["ssim"] - linear["ssim"]).mean(),
                "worst_psnr_gain": gain.min(),
                "worst_ssim_gain": (table["ssim"] - linear["ssim"]).min(),
            }
        )
    return rows
