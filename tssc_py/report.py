"""Cohort report: gather per-frame scores, summarise them per method, plot PSNR per frame.

Inputs are the ``{subject}.{method}.frames.csv`` tables written by
:func:`tssc_py.metrics.evaluate_files`. The report's own ``frames.csv`` does not match the
``*.frames.csv`` pattern, so a report written inside a searched directory is not read back.

Averaging: a subject's score is the mean over its scored frames; a method's score is the mean
and population standard deviation (ddof=0) over subjects, as in the paper's Table 1.

Infinite PSNR (a frame predicted exactly) is kept, not dropped or clipped: it makes the
subject's mean PSNR and the method's ``psnr_mean`` infinite, ``psnr_std`` NaN and the ``PSNR``
text ``inf``, so a perfect (usually copied) frame is visible rather than silently averaged.
The plot leaves such frames out, since they cannot be drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tssc_py.atomic import outputs
from tssc_py.errors import TsscError
from tssc_py.metrics import FRAME_COLUMNS, METRICS, SUMMARY_COLUMNS

PATTERN = "*.frames.csv"
SUMMARY_TABLE_COLUMNS = (
    "method",
    "subjects",
    *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")),
    "MAE",
    "PSNR",
    "SSIM",
)


def _csv_files(paths: Sequence[Path]) -> list[Path]:
    """The per-frame CSVs named by ``paths`` (directories searched recursively), each once."""
    files: list[Path] = []
    seen: set[Path] = set()
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob(PATTERN) if p.is_file())
            if not found:
                raise TsscError(f"no {PATTERN} files in this directory", path)
        elif path.is_file():
            found = [path]
        else:
            raise TsscError("no such file or directory", path)
        for file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                files.append(file)
    return files


def _read_frames(path: Path) -> pd.DataFrame:
    """One per-frame CSV, checked."""
    try:
        table = pd.read_csv(path, dtype={"subject": str, "method": str})
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
        raise TsscError("not a per-frame metrics CSV", path) from None
    missing = [c for c in FRAME_COLUMNS if c not in table.columns]
    if missing:
        raise TsscError(
            f"missing column(s) {', '.join(missing)}; a per-frame metrics CSV has "
            f"{', '.join(FRAME_COLUMNS)}",
            path,
        )
    table = table[list(FRAME_COLUMNS)]
    if table.empty:
        raise TsscError("has no rows", path)
    if table[["subject", "method", "frame"]].isna().any().any():
        raise TsscError("has rows with an empty subject, method or frame", path)
    numeric = table[["frame", *METRICS]].apply(pd.to_numeric, errors="coerce")
    bad = [c for c in numeric.columns if numeric[c].isna().any()]
    if bad:
        raise TsscError(f"non-numeric or empty values in column(s) {', '.join(bad)}", path)
    if (numeric["frame"] != numeric["frame"].round()).any() or (numeric["frame"] < 0).any():
        raise TsscError("frame numbers must be non-negative integers", path)
    table = table.assign(**{c: numeric[c].astype("float64") for c in METRICS})
    return table.assign(frame=numeric["frame"].astype("int64"))


def gather(paths: Sequence[Path]) -> pd.DataFrame:
    """Read and concatenate per-frame metric CSVs.

    Args:
        paths: ``*.frames.csv`` files, or directories searched recursively for them. A file
            named twice (directly and through its directory) is read once.

    Returns:
        Columns ``subject, method, frame, mae, psnr, ssim``, rows in input order.

    Raises:
        TsscError: if a path is missing, a file is not a per-frame CSV or lacks a column, a
            (subject, method, frame) row appears twice, or there is nothing to read.
    """
    if not paths:
        raise TsscError("no metrics files given")
    files = _csv_files(paths)
    tables = [_read_frames(f).assign(_source=str(f)) for f in files]
    frames = pd.concat(tables, ignore_index=True)
    key = ["subject", "method", "frame"]
    duplicated = frames.duplicated(key, keep=False)
    if duplicated.any():
        first = frames[duplicated].iloc[0]
        same = frames[duplicated & (frames[key] == first[key]).all(axis=1)]
        sources = ", ".join(dict.fromkeys(same["_source"]))
        raise TsscError(
            f"duplicate scores for subject {first['subject']!r}, method {first['method']!r}, "
            f"frame {first['frame']} (in {sources})"
        )
    return frames.drop(columns="_source")


def _text(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return str(mean)
    return f"{mean:.3f} ± {std:.3f}"


def summarise(frames: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cohort and summary tables from per-frame scores.

    Args:
        frames: Per-frame scores as returned by :func:`gather`.

    Returns:
        The cohort table (one row per subject and method, first-seen order: ``subject, method,
        frames, mae, psnr, ssim``, means over the subject's frames) and the summary table (one
        row per method, first-seen order: ``method, subjects``, then ``mae_mean, mae_std,
        psnr_mean, psnr_std, ssim_mean, ssim_std`` over subjects, with the population standard
        deviation (ddof=0), and text columns ``MAE, PSNR, SSIM`` such as ``33.256 ± 2.583``).
        An infinite PSNR is kept: it gives an infinite mean, a NaN std and the text ``inf``.

    Raises:
        TsscError: if ``frames`` is empty.
    """
    if frames.empty:
        raise TsscError("no per-frame scores to summarise")
    groups = frames.groupby(["subject", "method"], sort=False)
    cohort = groups.agg(
        frames=("frame", "size"), **{m: (m, "mean") for m in METRICS}
    ).reset_index()[list(SUMMARY_COLUMNS)]
    rows = []
    for method, table in cohort.groupby("method", sort=False):
        row: dict[str, object] = {"method": method, "subjects": len(table)}
        for m in METRICS:
            values = table[m].to_numpy(dtype=np.float64)
            mean = float(np.mean(values))
            # np.std of values with inf is NaN (inf - inf), with a warning we do not need.
            with np.errstate(invalid="ignore"):
                std = float(np.std(values, ddof=0)) if np.isfinite(mean) else float("nan")
            row[f"{m}_mean"], row[f"{m}_std"] = mean, std
            row[m.upper()] = _text(mean, std)
        rows.append(row)
    summary = pd.DataFrame(rows, columns=list(SUMMARY_TABLE_COLUMNS))
    return cohort, summary


def plot_psnr_per_frame(frames: pd.DataFrame, path: Path) -> None:
    """Plot mean PSNR over subjects per frame index, one line and ±std band per method.

    Frames with infinite PSNR are left out (they cannot be drawn); the std is over subjects
    (ddof=0).

    Args:
        frames: Per-frame scores as returned by :func:`gather`.
        path: The PNG file to write.
    """
    # A bare Figure (Agg canvas) rather than pyplot: no display, no global backend switch.
    fig = Figure(figsize=(7, 4.5), dpi=120)
    ax = fig.add_subplot()
    data = frames.assign(psnr=frames["psnr"].replace([np.inf, -np.inf], np.nan))
    for method, table in data.groupby("method", sort=False):
        stats = table.groupby("frame")["psnr"].agg(["mean", lambda v: v.std(ddof=0)])
        stats.columns = ["mean", "std"]
        stats = stats.dropna(subset=["mean"]).fillna({"std": 0.0})
        x = stats.index.to_numpy()
        mean, std = stats["mean"].to_numpy(), stats["std"].to_numpy()
        (line,) = ax.plot(x, mean, marker="o", markersize=3, label=str(method))
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    n_subjects = frames["subject"].nunique()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("Frame index")
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(f"PSNR per frame (mean ± std over {n_subjects} subject(s))")
    ax.grid(True, alpha=0.3)
    ax.legend(title="Method")
    fig.tight_layout()
    fig.savefig(path, format="png")


def write_report(paths: Sequence[Path], out: Path, overwrite: bool = False) -> list[Path]:
    """Gather per-frame scores and write the cohort report.

    Args:
        paths: Per-frame CSVs or directories holding them (see :func:`gather`).
        out: Output directory.
        overwrite: Replace existing outputs.

    Returns:
        ``out/frames.csv`` (all per-frame rows), ``out/cohort.csv``, ``out/summary.csv`` and
        ``out/psnr_per_frame.png``; all are written, or none.

    Raises:
        TsscError: on bad inputs (see :func:`gather`) or a refused overwrite.
    """
    out = Path(out)
    frames = gather(paths)
    cohort, summary = summarise(frames)
    names = ("frames.csv", "cohort.csv", "summary.csv", "psnr_per_frame.png")
    targets = [out / name for name in names]
    with outputs(overwrite) as group:
        tmp = [group.path(target) for target in targets]
        frames.to_csv(tmp[0], index=False)
        cohort.to_csv(tmp[1], index=False)
        summary.to_csv(tmp[2], index=False)
        plot_psnr_per_frame(frames, tmp[3])
    return targets
