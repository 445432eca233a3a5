"""What the CPU quality recipes share: their work folder, synthetic cohorts and gain tables.

Imported by ``benchmarks/stage1.py``, ``stage2_recipe.py`` and ``baselines.py`` (run as scripts,
so this folder is on ``sys.path``).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from tssc_py.atomic import atomic_path, check_folder
from tssc_py.errors import TsscError
from tssc_py.io import scan_shape
from tssc_py.prepare import PrepareConfig, prepare_file
from tssc_py.synth import Variation, write_cohort

SIZE, DEPTH, FRAMES = 64, 16, 12
"""Frame size, slices and frames of every recipe's subjects."""
PREPARE = PrepareConfig(size=SIZE, depth=DEPTH)
"""How every recipe prepares its subjects."""
TRAIN_SEED, TEST_SEED = 1, 2
"""The seeds of training and held-out cohorts."""
TURNING = Variation(rotation=40, breathing=5, texture=0.1, contrast=0.3)
"""Large motion on top of a scene's own: a 20 to 40 degree in-plane rotation sweep, a 5 mm
breathing drift, a tissue texture and another contrast."""
SHIFTING = Variation(translation=15, breathing=8, texture=0.1, contrast=0.3)
"""A motion no recipe trains on, held out: a 7.5 to 15 mm translation and an 8 mm breathing
drift without rotation, with the texture and contrast of :data:`TURNING`."""


@dataclass(frozen=True)
class Cohort:
    """A synthetic cohort of a recipe: kind, seed, subjects and the motion added."""

    kind: str
    seed: int
    subjects: int
    variation: Variation = field(default_factory=Variation)


def plain_cohorts(train_knee: int, train_cardiac: int, test_subjects: int) -> dict[str, Cohort]:
    """Training (``train_*``) and held-out cohorts of the scenes as drawn, by folder name."""
    return {
        "train_knee": Cohort("knee", TRAIN_SEED, train_knee),
        "train_cardiac": Cohort("cardiac", TRAIN_SEED, train_cardiac),
        "knee": Cohort("knee", TEST_SEED, test_subjects),
        "cardiac": Cohort("cardiac", TEST_SEED, test_subjects),
    }


MOVING_TESTS = ("knee", "cardiac", "knee_turning", "cardiac_turning", "cardiac_shifting")
"""The held-out cohorts of :func:`moving_cohorts` (``cardiac_shifting``: a motion held out)."""


def moving_cohorts(
    train_knee: int, train_cardiac: int, train_turning: int, test_subjects: int
) -> dict[str, Cohort]:
    """:func:`plain_cohorts` and ``train_turning`` turning subjects of each kind, with held-out
    turning cohorts and the held-out motion (:data:`SHIFTING`) on hearts."""
    return {
        **plain_cohorts(train_knee, train_cardiac, test_subjects),
        "train_knee_turning": Cohort("knee", TRAIN_SEED, train_turning, TURNING),
        "train_cardiac_turning": Cohort("cardiac", TRAIN_SEED, train_turning, TURNING),
        "knee_turning": Cohort("knee", TEST_SEED, test_subjects, TURNING),
        "cardiac_turning": Cohort("cardiac", TEST_SEED, test_subjects, TURNING),
        "cardiac_shifting": Cohort("cardiac", TEST_SEED, test_subjects, SHIFTING),
    }


def data_folders(cohorts: Mapping[str, Cohort]) -> tuple[str, ...]:
    """The folders :func:`make_data` writes for ``cohorts``."""
    return (*cohorts, "prepared")


def prefix(name: str) -> str:
    """The subject ids' start of the cohort in folder ``name``."""
    return name.removeprefix("train_")


RESULTS = "results.csv"
"""The table every recipe writes in its work folder."""
# Printed tables give PSNR with its unit; results.csv keeps the plain column names.
PSNR_UNITS = {
    "psnr": "psnr_dB",
    "psnr_gain": "psnr_gain_dB",
    "worst_psnr_gain": "worst_psnr_gain_dB",
    "psnr_vs_stage1": "psnr_vs_stage1_dB",
    "psnr_vs_demons": "psnr_vs_demons_dB",
    "worst_psnr_vs_demons": "worst_psnr_vs_demons_dB",
}


def add_stage1_run_option(parser: argparse.ArgumentParser, use: str) -> None:
    """The ``--stage1-run`` option of a script that reads a stage-1 recipe's folder (``make
    stage1-cpu``'s by default); ``use``: what the script does with it, for the help."""
    parser.add_argument(
        "--stage1-run",
        type=Path,
        default=Path("stage1_cpu"),
        help=f"A stage-1 recipe's folder (benchmarks/stage1.py --out, make stage1-cpu), {use}.",
    )


def add_run_options(parser: argparse.ArgumentParser, written: str) -> None:
    """The ``--resume`` / ``--overwrite`` options of a recipe; ``written``: what it writes in
    its folder besides results.csv, for the help."""
    parser.add_argument(
        "--resume",
        action="store_true",
        help="Continue an earlier run in --out: training goes on from its last checkpoint (or "
        "starts, where none was saved yet), then the held-out cohorts are scored again with "
        f"the final model, replacing the earlier run's scores (test_* folders) and {RESULTS}.",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"Start afresh in an --out that holds an earlier run: its {written} and "
        f"{RESULTS} are removed first (other files in the folder are left alone).",
    )


def open_run(out: Path, outputs: Sequence[str], resume: bool, overwrite: bool) -> None:
    """Check a recipe's work folder before any work.

    A folder holding any of the recipe's ``outputs`` (names inside ``out``) is an earlier run:
    refused unless ``resume`` (continued, its scores and table replaced) or ``overwrite`` (those
    outputs removed here).

    Raises:
        TsscError: If ``out`` cannot be a folder, both flags are given, or an earlier run is
            there without either.
    """
    check_folder(out)
    if resume and overwrite:
        raise TsscError("--resume and --overwrite exclude each other")
    earlier = [name for name in outputs if (out / name).exists()]
    if earlier and not (resume or overwrite):
        shown = ", ".join(earlier[:4]) + (", ..." if len(earlier) > 4 else "")
        raise TsscError(
            f"holds an earlier run ({shown}): use --resume to continue it or --overwrite "
            "to start afresh",
            out,
        )
    if overwrite and earlier:
        for name in earlier:
            path = out / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        print(f"--overwrite: removed the earlier run's {', '.join(earlier)} in {out}", flush=True)


def training_mode(folder: Path, resume: bool) -> dict[str, bool]:
    """The ``resume`` / ``overwrite`` arguments of a trainer for the run folder ``folder``.

    With ``resume`` the training continues from its checkpoint, or starts afresh where the
    earlier run saved none yet (it stopped in its first steps: a log and no checkpoint).
    Without it the folder is new (:func:`open_run` refused or removed an earlier run).
    """
    saved = (folder / "checkpoint").exists()
    return {"resume": resume and saved, "overwrite": resume and not saved}


def note_rescoring(out: Path, resume: bool) -> None:
    """Say, before the scoring, that a resumed run replaces the earlier scores."""
    if resume and (out / RESULTS).exists():
        print(
            f"--resume: scoring the held-out cohorts again; the earlier scores and {out / RESULTS}"
            " are replaced",
            flush=True,
        )


def write_results(table: pd.DataFrame, out: Path, replace: bool) -> Path:
    """Write ``out/results.csv`` atomically; an existing one is replaced only if ``replace``."""
    with atomic_path(out / RESULTS, overwrite=replace) as tmp:
        table.to_csv(tmp, index=False)
    return out / RESULTS


def show(table: pd.DataFrame) -> str:
    """A recipe's table as printed: PSNR columns named with their unit, 4 decimals."""
    shown = table.rename(columns=PSNR_UNITS)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        return shown.to_string(index=False, float_format=lambda v: f"{v:.4f}")


def check_cohort(folder: Path, cohort: Cohort) -> None:
    """Refuse a cohort already in ``folder`` that is not the one asked for.

    Its samplesheet must list ``cohort.subjects`` subjects named as ``write_cohort`` names them
    (after the folder), and each scan's header must be ``SIZE x SIZE x DEPTH x FRAMES``: a
    folder made with other counts or sizes would otherwise be reused silently.

    Raises:
        TsscError: If it differs.
    """
    sheet = folder / "samplesheet.csv"
    with sheet.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = [row.get("subject") for row in rows]
    wanted = [f"{prefix(folder.name)}_{i:03d}" for i in range(cohort.subjects)]
    if names != wanted:
        raise TsscError(
            f"holds {len(names)} subject(s), {cohort.subjects} {cohort.kind} subject(s) "
            "asked: use the options of the earlier run, or --overwrite to make the data again",
            folder,
        )
    expected = (SIZE, SIZE, DEPTH, FRAMES)
    for row in rows:
        shape = scan_shape(folder / str(row["scan"]))
        if shape != expected:
            raise TsscError(
                f"holds {row['scan']} of shape {shape}, this recipe makes {expected}: use "
                "--overwrite to make the data again",
                folder,
            )


def make_data(out: Path, cohorts: Mapping[str, Cohort]) -> None:
    """Synthesise ``cohorts`` (folder name -> cohort) under ``out``, and prepare the training
    subjects (cohorts named ``train_*``) into ``out/prepared``.

    Cohorts already there (a resumed recipe) are kept if they are the ones asked for; every one
    is checked before anything is written.

    Raises:
        TsscError: If a cohort already there has other subjects or sizes, or ``prepared``
            holds subjects of no training cohort.
    """
    started = time.monotonic()
    for name, cohort in cohorts.items():
        if (out / name).exists():
            if not (out / name / "samplesheet.csv").exists():
                raise TsscError(
                    "exists without a samplesheet.csv (an interrupted earlier run?): use "
                    "--overwrite to make the data again",
                    out / name,
                )
            check_cohort(out / name, cohort)
    training = {name: c for name, c in cohorts.items() if name.startswith("train_")}
    wanted = {f"{prefix(name)}_{i:03d}" for name, c in training.items() for i in range(c.subjects)}
    stale = sorted(
        p.name
        for p in (out / "prepared").glob("*.nii.gz")
        if p.name[: -len(".nii.gz")] not in wanted
    )
    if stale:
        raise TsscError(
            f"holds {', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}, of no training "
            "cohort asked for: use --overwrite to make the data again",
            out / "prepared",
        )
    for name, c in cohorts.items():
        if c.subjects and not (out / name).exists():
            write_cohort(
                out / name,
                c.kind,
                c.subjects,
                SIZE,
                DEPTH,
                FRAMES,
                c.seed,
                variation=c.variation,
                prefix=prefix(name),
            )
    for name in training:
        for scan in sorted((out / name).glob("*.nii.gz")):
            target = out / "prepared" / scan.name
            if not target.exists():
                prepare_file(scan, target, PREPARE)
    print(f"data ready in {time.monotonic() - started:.0f} s", flush=True)


def gain_rows(cohort: str, per_subject: dict[str, pd.DataFrame]) -> list[dict[str, object]]:
    """PSNR / SSIM of each method with their gains over ``linear`` (mean, and the worst subject)
    and, where ``demons`` was scored, over ``demons``.

    Args:
        cohort: The held-out cohort (the rows' first column).
        per_subject: Method name -> its per-subject scores indexed by subject.
    """
    linear = per_subject["linear"]
    demons = per_subject.get("demons")
    rows = []
    for method, table in per_subject.items():
        gain = table["psnr"] - linear["psnr"]
        row: dict[str, object] = {
            "cohort": cohort,
            "method": method,
            "psnr": table["psnr"].mean(),
            "ssim": table["ssim"].mean(),
            "psnr_gain": gain.mean(),
            "ssim_gain": (table["ssim"] - linear["ssim"]).mean(),
            "worst_psnr_gain": gain.min(),
            "worst_ssim_gain": (table["ssim"] - linear["ssim"]).min(),
        }
        if demons is not None:
            versus = table["psnr"] - demons["psnr"]
            row["psnr_vs_demons"] = versus.mean()
            row["worst_psnr_vs_demons"] = versus.min()
        rows.append(row)
    return rows
