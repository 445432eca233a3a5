"""Cohort report: tables per frame, subject and method, comparison and ablation, figures, HTML.

Inputs are datasets, each a label and files or folders holding the ``{subject}.{method}
.frames.csv`` tables of :func:`tssc_py.metrics.evaluate_files` (folders searched recursively).
The report's own ``frames.csv`` does not match the ``*.frames.csv`` pattern, so a report written
inside a searched folder is not read back.

Averaging: a subject's score is the mean over its scored frames; a method's score is the mean
and population standard deviation (ddof=0) over subjects, as in the paper's Table 1. MAE and
the cross-slice error are better lower, PSNR and SSIM higher.

Infinite PSNR (a frame predicted exactly) is kept, not dropped or clipped: it makes the
subject's mean PSNR and the method's ``psnr_mean`` infinite, ``psnr_std`` NaN and the ``PSNR``
text ``inf``, so a perfect (usually copied) frame is visible rather than silently averaged.
The per-frame plot marks such frames at the top of the panel.

A dataset folder laid out as a ``tssc-run`` output (``prepared/SUBJECT.nii.gz`` and
``prepared/SUBJECT.json``, ``filled/METHOD/SUBJECT.nii.gz``: the filled series in model space)
also gives the example figures of one subject: the truth and every method at six evenly spaced
predicted frames of the mid slice, and the absolute error maps of the same frames.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from tssc_py.atomic import outputs
from tssc_py.errors import TsscError
from tssc_py.io import default_subject, read_scan
from tssc_py.metrics import (
    FRAME_COLUMNS,
    LOWER_IS_BETTER,
    METRICS,
    SSIM_MODES,
    SUMMARY_COLUMNS,
)
from tssc_py.names import check_subject_id, inside
from tssc_py.prepare import load_record
from tssc_py.runs import FILLED, PREPARED, RUN_STATE, refined_pairs

PATTERN = "*.frames.csv"
REPORT_PAGE = "report.html"
FILES_META = "tssc-files"
"""The name of the report page's meta element listing the files of the report."""
EXAMPLE_FRAMES = 6
OPTIONAL_TABLES = ("paired.csv", "ablation.csv")
"""Tables written only when they have rows (an earlier report's are removed on overwrite)."""
LEGEND_INSIDE = 4
"""Above this many methods the per-frame plot's legend goes beside the panel, off the data."""
SUMMARY_TABLE_COLUMNS = (
    "dataset",
    "method",
    "subjects",
    "ssim_mode",
    *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")),
)
COMPARISON_COLUMNS = (
    "dataset",
    "method",
    "subjects",
    "ssim_mode",
    *(m.upper() for m in METRICS),
)
DECIMALS = {"mae": 4, "psnr": 2, "ssim": 4, "cross_slice": 4}
"""Decimals of each metric in the comparison texts (the errors are in hundredths)."""
BASELINE = "linear"
"""The method every other is compared with subject by subject (:func:`paired`)."""
PAIRED_COLUMNS = (
    "dataset",
    "method",
    "baseline",
    "metric",
    "subjects",
    *(f"{name}_{s}" for name in ("baseline", "method", "difference") for s in ("mean", "std")),
    "better_subjects",
    "better",
)
ABLATION_COLUMNS = (
    "dataset",
    "method",
    "refined",
    "metric",
    "subjects",
    *(f"{name}_{s}" for name in ("method", "refined", "difference") for s in ("mean", "std")),
    "better",
)


def folder_label(paths: Sequence[str | Path]) -> str:
    """The name of the deepest folder holding every path (a folder holds itself).

    Characters a label may not have (see :func:`check_label`) become ``_``; a folder without
    a usable name (the file system root) gives ``dataset``.
    """
    folders = [p if p.is_dir() else p.parent for p in (Path(p).absolute() for p in paths)]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(os.path.commonpath(folders)).name)
    return name if name.strip(".") else "dataset"


def check_label(label: str) -> str:
    """Return ``label`` if it is a safe dataset label (it names files), else raise TsscError."""
    return check_subject_id(label, what="dataset label")


def _nothing_scored(folder: Path) -> str:
    """Why ``folder`` has no per-frame CSVs: an upsample run, or none were written there."""
    try:
        mode = json.loads((folder / RUN_STATE).read_text())["settings"]["prepare"]["mode"]
    except (OSError, ValueError, KeyError, TypeError):
        mode = None
    if mode == "upsample":
        return "is an upsample-mode run: nothing is scored in upsample mode, nothing to report"
    return f"no {PATTERN} files in this directory"


def _csv_files(paths: Sequence[str | Path] | str | Path) -> list[Path]:
    """The per-frame CSVs named by ``paths`` (directories searched recursively), each once;
    one path alone is taken as such, not as a sequence of characters."""
    files: list[Path] = []
    seen: set[Path] = set()
    for path in map(Path, [paths] if isinstance(paths, str | Path) else paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob(PATTERN) if p.is_file())
            if not found:
                raise TsscError(_nothing_scored(path), path)
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
        # Only an empty field is missing: ids such as NA, None or nan are valid subjects.
        table = pd.read_csv(
            path,
            dtype={"subject": str, "method": str, "ssim_mode": str},
            keep_default_na=False,
            na_values=[""],
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError):
        raise TsscError("not a per-frame metrics CSV", path) from None
    if "cross_slice" not in table.columns:
        table["cross_slice"] = np.nan  # scored before that metric existed: reported as empty
    if "ssim_mode" not in table.columns:
        table["ssim_mode"] = ""  # scored before the mode was written: unknown
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
    # They name figures and files and are set into plots: the same rule as everywhere else.
    for column in ("subject", "method"):
        for name in table[column].unique():
            check_subject_id(name, path, what=f"{column} {'id' if column == 'subject' else 'name'}")
    numeric = table[["frame", *METRICS]].apply(pd.to_numeric, errors="coerce")
    # cross_slice may be empty (NaN: a single-slice volume); anything else must be a number.
    required = numeric.drop(columns="cross_slice").isna()
    text = numeric["cross_slice"].isna() & table["cross_slice"].notna()
    bad = [c for c in required.columns if required[c].any()]
    if text.any():
        bad.append("cross_slice")
    if bad:
        raise TsscError(f"non-numeric or empty values in column(s) {', '.join(bad)}", path)
    if (numeric["frame"] != numeric["frame"].round()).any() or (numeric["frame"] < 0).any():
        raise TsscError("frame numbers must be non-negative integers", path)
    table = table.assign(ssim_mode=table["ssim_mode"].fillna(""))
    if not table["ssim_mode"].isin([*SSIM_MODES, ""]).all():
        raise TsscError(f"ssim_mode must be one of {', '.join(SSIM_MODES)}", path)
    table = table.assign(**{c: numeric[c].astype("float64") for c in METRICS})
    return table.assign(frame=numeric["frame"].astype("int64"))


def gather(paths: Sequence[str | Path] | str | Path) -> pd.DataFrame:
    """Read and concatenate the per-frame metric CSVs of one dataset.

    Args:
        paths: ``*.frames.csv`` files, or directories searched recursively for them. A file
            named twice (directly and through its directory) is read once.

    Returns:
        Columns ``subject, method, frame, mae, psnr, ssim, cross_slice, ssim_mode`` (empty for
        an older tssc's CSV without it), rows in input order.

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


def datasets_of(
    paths: Sequence[str | Path] | str | Path = (),
    datasets: Sequence[tuple[str, str | Path]] = (),
) -> dict[str, list[Path]]:
    """The paths of each dataset, in first-given order.

    Args:
        paths: Paths of one dataset labelled by :func:`folder_label` (a run's folder name).
        datasets: ``(label, path)`` pairs; a label given several times collects its paths.

    Raises:
        TsscError: if nothing is given or a label is not a safe name.
    """
    grouped: dict[str, list[Path]] = {}
    if isinstance(paths, str | Path):
        paths = [Path(paths)]
    if paths:
        grouped[check_label(folder_label(paths))] = list(map(Path, paths))
    for label, path in datasets:
        grouped.setdefault(check_label(label), []).append(Path(path))
    if not grouped:
        raise TsscError("no metrics files given")
    return grouped


def gather_datasets(datasets: dict[str, list[Path]]) -> pd.DataFrame:
    """Per-frame scores of every dataset (:func:`gather`) with a leading ``dataset`` column.

    Raises:
        TsscError: As :func:`gather`, and for a dataset whose SSIM was computed in more than
            one way (``ssim_mode``), which its means would mix.
    """
    tables = [gather(paths).assign(dataset=label) for label, paths in datasets.items()]
    for label, table in zip(datasets, tables, strict=True):
        modes = sorted(set(table["ssim_mode"]), key=lambda mode: (mode == "", mode))
        if len(modes) > 1:
            named = [m or "unknown (an older tssc's CSV, no ssim_mode column)" for m in modes]
            raise TsscError(
                f"dataset {label!r} mixes scores of SSIM computed as {' and '.join(named)}; "
                "score every subject with the same --ssim"
            )
    return pd.concat(tables, ignore_index=True)[["dataset", *FRAME_COLUMNS]]


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and population std; an infinite mean gives a NaN std (not a warning)."""
    mean = float(np.mean(values))
    with np.errstate(invalid="ignore"):
        std = float(np.std(values, ddof=0)) if np.isfinite(mean) else float("nan")
    return mean, std


def _text(mean: float, std: float, decimals: int, subjects: int) -> str:
    """``mean ± std``; the mean alone for one subject (no spread was measured), ``inf`` for
    an infinite mean and an empty text for a missing one (no cross-slice error)."""
    if np.isnan(mean):
        return ""
    if not np.isfinite(mean):
        return str(mean)
    if subjects == 1:
        return f"{mean:.{decimals}f}"
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def summarise(frames: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-subject and per-method tables from per-frame scores.

    Args:
        frames: Per-frame scores as returned by :func:`gather_datasets`.

    Returns:
        The cohort table (one row per dataset, subject and method, first-seen order:
        ``dataset, subject, method, frames``, the means over the subject's frames and
        ``ssim_mode``) and the summary table (one row per dataset and method: ``dataset, method,
        subjects, ssim_mode`` and ``{metric}_mean, {metric}_std`` over subjects, population std
        (ddof=0)). An infinite PSNR is kept: it gives an infinite mean and a NaN std.

    Raises:
        TsscError: if ``frames`` is empty.
    """
    if frames.empty:
        raise TsscError("no per-frame scores to summarise")
    groups = frames.groupby(["dataset", "subject", "method"], sort=False)
    cohort = groups.agg(
        frames=("frame", "size"),
        **{m: (m, "mean") for m in METRICS},
        ssim_mode=("ssim_mode", "first"),
    ).reset_index()[["dataset", *SUMMARY_COLUMNS]]
    rows = []
    for (dataset, method), table in cohort.groupby(["dataset", "method"], sort=False):
        row: dict[str, object] = {
            "dataset": dataset,
            "method": method,
            "subjects": len(table),
            "ssim_mode": table["ssim_mode"].iloc[0],
        }
        for m in METRICS:
            row[f"{m}_mean"], row[f"{m}_std"] = _mean_std(table[m].to_numpy(dtype=np.float64))
        rows.append(row)
    return cohort, pd.DataFrame(rows, columns=list(SUMMARY_TABLE_COLUMNS))


def comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 1: one row per dataset and method, each metric as ``mean ± std``.

    Args:
        summary: The summary table of :func:`summarise`.

    Returns:
        Columns ``dataset, method, subjects, ssim_mode, MAE, PSNR, SSIM, CROSS_SLICE``, texts
        such as ``33.26 ± 2.58`` (:data:`DECIMALS`; the mean alone for one subject, ``inf``
        for an infinite mean, empty for a missing one).
    """
    table = summary[["dataset", "method", "subjects", "ssim_mode"]].copy()
    for m in METRICS:
        rows = zip(summary[f"{m}_mean"], summary[f"{m}_std"], summary["subjects"], strict=True)
        table[m.upper()] = [_text(mean, std, DECIMALS[m], n) for mean, std, n in rows]
    return table[list(COMPARISON_COLUMNS)]


def _improves(metric: str, difference: np.ndarray | float) -> np.ndarray:
    """Where a difference ``method - baseline`` of ``metric`` favours the method."""
    return np.less(difference, 0) if metric in LOWER_IS_BETTER else np.greater(difference, 0)


def _better(metric: str, difference: float, method: str, baseline: str) -> str:
    """The name of the better of ``method`` and ``baseline`` by their mean difference
    ``method - baseline``; ``equal``, or empty when the difference is not finite."""
    if not np.isfinite(difference):
        return ""
    if difference == 0:
        return "equal"
    return method if _improves(metric, difference) else baseline


def _paired_rows(
    dataset: str, table: pd.DataFrame, method: str, baseline: str
) -> list[dict[str, object]]:
    """Per metric: the differences ``method - baseline`` over the subjects scored by both
    (``baseline_*``, ``method_*``, ``difference_*``, ``better_subjects``, ``better``).

    A subject on which both are exact (infinite PSNR) is a tie, difference 0; a metric that
    was not measured (no cross-slice error) has no count of subjects better."""
    ours = table[table["method"] == method].set_index("subject")
    theirs = table[table["method"] == baseline].set_index("subject")
    subjects = [s for s in ours.index if s in theirs.index]
    if not subjects:
        return []
    rows = []
    for m in METRICS:
        after = ours.loc[subjects, m].to_numpy(dtype=np.float64)
        before = theirs.loc[subjects, m].to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore"):
            difference = np.where(after == before, 0.0, after - before)
        row: dict[str, object] = {"dataset": dataset, "metric": m, "subjects": len(subjects)}
        for name, values in (("baseline", before), ("method", after)):
            row[f"{name}_mean"], row[f"{name}_std"] = _mean_std(values)
        shift, spread = _mean_std(difference)
        row["difference_mean"], row["difference_std"] = shift, spread
        measured = not np.isnan(difference).all()
        row["better_subjects"] = int(_improves(m, difference).sum()) if measured else None
        row["better"] = _better(m, shift, method, baseline)
        rows.append(row)
    return rows


def ablation(cohort: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 2, for every refined method: stage 1 alone (``diffusion``) against
    both stages (``tssc``), and any other method against stage 2 over it (``demons`` against
    ``demons_sc``, :func:`tssc_py.runs.refined_name`).

    Only subjects scored with both methods count; the difference is ``refined - method`` per
    subject, its mean and population std over those subjects.

    Args:
        cohort: The cohort table of :func:`summarise`.

    Returns:
        One row per dataset, refined method (whose input method the dataset has too) and
        metric: ``dataset, method, refined, metric, subjects``, ``method_mean, method_std``
        and ``refined_mean, refined_std`` over the shared subjects, ``difference_mean,
        difference_std`` and ``better`` (the better method's name, ``equal``, or empty when
        not finite). Empty when no dataset has a refined method and its input.
    """
    named = {
        f"{role}_{s}": f"{name}_{s}"
        for role, name in (("baseline", "method"), ("method", "refined"))
        for s in ("mean", "std")
    }
    rows = []
    for dataset, table in cohort.groupby("dataset", sort=False):
        for source, refined in refined_pairs(table["method"]):
            for row in _paired_rows(str(dataset), table, refined, source):
                row = {named.get(key, key): value for key, value in row.items()}
                rows.append({**row, "method": source, "refined": refined})
    return pd.DataFrame(rows, columns=list(ABLATION_COLUMNS))


def paired(cohort: pd.DataFrame, baseline: str = BASELINE) -> pd.DataFrame:
    """Every method against ``baseline``, subject by subject.

    The comparison table's spreads are between subjects, which differ far more than methods
    do: a method better on every subject can look level there. Here only the subjects scored
    by both count, and the difference is taken per subject.

    Args:
        cohort: The cohort table of :func:`summarise`.
        baseline: The method the others are compared with.

    Returns:
        One row per dataset, method (other than ``baseline``, sharing subjects with it) and
        metric: ``dataset, method, baseline, metric, subjects``, ``baseline_mean, baseline_std,
        method_mean, method_std`` over the shared subjects, ``difference_mean,
        difference_std`` of ``method - baseline``, ``better_subjects`` (subjects on which the
        method is better) and ``better`` (the better by the mean difference, ``equal``, or
        empty when not finite). Empty when no method shares subjects with ``baseline``.
    """
    rows = []
    for dataset, table in cohort.groupby("dataset", sort=False):
        methods = [m for m in dict.fromkeys(table["method"]) if m != baseline]
        for method in methods:
            for row in _paired_rows(str(dataset), table, method, baseline):
                rows.append({**row, "method": method, "baseline": baseline})
    return pd.DataFrame(rows, columns=list(PAIRED_COLUMNS))


def plot_psnr_per_frame(frames: pd.DataFrame) -> Figure:
    """Mean PSNR over subjects per frame index, one line and ±std band per method.

    One panel per dataset; the std is over subjects (ddof=0); each method keeps its colour in
    every panel and its legend entry gives its subjects (``n``). A frame whose PSNR is infinite
    in some subject (predicted exactly) has an infinite mean, as in the tables: it cannot be
    drawn as a value, so it is marked by a triangle at the top of the panel (side by side where
    several methods are exact at one frame) and breaks the line. Frames no method scored
    between scored ones (known frames, ``--known-every``) break the lines too and are marked
    by dotted vertical lines.

    Args:
        frames: Per-frame scores as returned by :func:`gather_datasets`.
    """
    datasets = list(dict.fromkeys(frames["dataset"]))
    # One colour per method in every panel (matplotlib's cycle, in first-seen order).
    colors = {m: f"C{i % 10}" for i, m in enumerate(dict.fromkeys(frames["method"]))}
    # A bare Figure (Agg canvas) rather than pyplot: no display, no global backend switch.
    fig = Figure(figsize=(7 * len(datasets), 4.5), dpi=120)
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, dataset in zip(axes, datasets, strict=True):
        subset = frames[frames["dataset"] == dataset]
        frames_shown = sorted(subset["frame"].unique())
        # Every frame index from the first scored to the last: the unscored ones are gaps.
        x = np.arange(frames_shown[0], frames_shown[-1] + 1)
        infinite: list[tuple[np.ndarray, str]] = []
        for method, table in subset.groupby("method", sort=False):
            color = colors[str(method)]
            label = f"{method} (n={table['subject'].nunique()})"
            psnr = table.groupby("frame")["psnr"]
            mean = psnr.mean().reindex(x).to_numpy()  # NaN: not scored
            # np.std of values holding inf warns and gives nan: only finite means get a band.
            std = psnr.agg(lambda v: v.std(ddof=0) if np.isfinite(v).all() else 0.0)
            std = std.reindex(x).to_numpy()
            finite = np.isfinite(mean)
            exact = np.isinf(mean)
            shown = np.where(finite, mean, np.nan)
            if finite.sum() == 1:  # a band of one frame has no width: an error bar instead
                ax.errorbar(
                    x[finite],
                    shown[finite],
                    yerr=std[finite],
                    marker="o",
                    capsize=4,
                    color=color,
                    label=label,
                )
            elif finite.any():
                ax.plot(x, shown, marker="o", markersize=3, color=color, label=label)
                ax.fill_between(x, shown - std, shown + std, color=color, alpha=0.2)
            else:  # nothing to draw but the markers: keep the method in the legend
                ax.plot([], [], marker="^", linestyle="none", color=color, label=label)
            if exact.any():
                infinite.append((x[exact], color))
        if infinite and not np.isfinite(subset["psnr"]).any():
            ax.set_ylim(0, 1)  # no finite value sets a scale: the markers alone, no numbers
            ax.set_yticks([])
        top = ax.get_ylim()[1]
        # Methods exact at the same frame: side by side, not one over the other.
        width = 0.5 / len(infinite) if infinite else 0.0
        for k, (x_inf, color) in enumerate(infinite):
            ax.plot(
                x_inf + (k - (len(infinite) - 1) / 2) * width,
                np.full(len(x_inf), top),
                linestyle="none",
                marker="^",
                markersize=8,
                color=color,
                clip_on=False,
            )
        if infinite:
            ax.set_ylim(top=top)
        gaps = sorted(set(x.tolist()) - set(frames_shown))
        for gap in gaps:
            ax.axvline(gap, color="0.5", linestyle=":", linewidth=1)
        if len(frames_shown) <= 20:
            ax.set_xticks(frames_shown)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        # Subjects with fewer frames leave the last frames' means to the others: say so.
        counts = subset.groupby("frame")["subject"].nunique()
        low, high = counts.min(), counts.max()
        over = f"{high}" if low == high else f"{low}-{high}"
        ax.set_xlabel("Frame index (in the filled series)")
        ax.set_ylabel("PSNR (dB)")
        title = f"{dataset}: PSNR per frame (mean ± std over {over} subject(s) per frame)"
        if infinite:
            title += "\n▲ at the top: infinite (a frame predicted exactly in some subject)"
        if gaps:
            title += "\ndotted: frames not scored (known)"
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        if subset["method"].nunique() > LEGEND_INSIDE:
            ax.legend(title="Method", loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
        else:
            ax.legend(title="Method")
    fig.tight_layout()
    return fig


@dataclass
class Example:
    """One subject's mid slice at the example frames: the truth and every method's prediction.

    Attributes:
        dataset: Dataset label.
        subject: Subject id.
        slice: The slice shown, in the prepared volume (the middle one of the scan's own).
        frames: Positions in the filled series, evenly spaced over the predicted frames.
        truth: ``(x, y, len(frames))`` in model space.
        predictions: Method name -> array shaped like ``truth``.
    """

    dataset: str
    subject: str
    slice: int
    frames: list[int]
    truth: np.ndarray
    predictions: dict[str, np.ndarray]


def _image_of(folder: Path, subject: str) -> Path | None:
    """The image of ``subject`` in ``folder`` (any image suffix; not its record), if any."""
    found = sorted(
        p
        for p in folder.glob(f"{subject}.*")
        if p.is_file() and default_subject(p) == subject and p.suffix != ".json"
    )
    return found[0] if found else None


def load_example(
    folder: Path, dataset: str, methods: Sequence[str], subject: str | None = None
) -> Example | None:
    """The example figures' data from a ``tssc-run`` folder.

    None if it has no ``filled/``, or no filled series of the given ``subject``.

    Args:
        folder: The run folder (``prepared/`` and ``filled/METHOD/`` in it).
        dataset: Dataset label.
        methods: Method order (methods not in it follow, sorted).
        subject: The subject to show; default the first (sorted) with a filled series.

    Raises:
        TsscError: if the subject's truth or record is missing, the record is not in
            evaluate mode, or a filled series does not have the truth's shape.
    """
    filled = Path(folder) / FILLED
    if not filled.is_dir():
        return None
    files = {
        method.name: {default_subject(p): p for p in method.iterdir() if p.is_file()}
        for method in sorted(filled.iterdir())
        if method.is_dir()
    }
    subjects = sorted({s for by_subject in files.values() for s in by_subject})
    if subject is None:
        if not subjects:
            return None
        subject = subjects[0]
    elif subject not in subjects:
        return None  # another dataset of the report may have it
    prepared = Path(folder) / PREPARED
    record = load_record(prepared / f"{subject}.json")
    if record.mode != "evaluate":
        raise TsscError("upsample mode has no ground truth to show", prepared / f"{subject}.json")
    truth_path = _image_of(prepared, subject)
    if truth_path is None:
        raise TsscError(f"no prepared image of subject {subject!r}", prepared)
    truth = read_scan(truth_path).data
    predicted = record.predicted_frames
    picks = np.round(np.linspace(0, len(predicted) - 1, min(EXAMPLE_FRAMES, len(predicted))))
    frames = [predicted[int(i)] for i in picks]
    # The middle of the scan's own slices (the middle of the volume may be depth padding).
    real = record.scan_slices
    z = (real.start + real.stop) // 2
    order = [m for m in methods if m in files] + sorted(m for m in files if m not in methods)
    predictions = {}
    for method in order:
        path = files[method].get(subject)
        if path is None:
            continue
        data = read_scan(path).data
        if data.shape != truth.shape:
            raise TsscError(
                f"has shape {data.shape}, the prepared truth {truth_path} has {truth.shape}", path
            )
        predictions[method] = np.asarray(data[:, :, z, frames], dtype=np.float64)
    truth_slice = np.asarray(truth[:, :, z, frames], dtype=np.float64)
    return Example(dataset, subject, z, frames, truth_slice, predictions)


def _grid(example: Example, rows: list[str]) -> tuple[Figure, np.ndarray]:
    fig = Figure(
        figsize=(1.9 * len(example.frames) + 1.2, 1.9 * len(rows) + 0.6),
        dpi=110,
        layout="constrained",
    )
    axes = fig.subplots(len(rows), len(example.frames), squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax, name in zip(axes[:, 0], rows, strict=True):
        ax.set_ylabel(name)
    for ax, t in zip(axes[0], example.frames, strict=True):
        ax.set_title(f"frame {t}", fontsize=9)
    return fig, axes


def plot_examples(example: Example) -> Figure:
    """The paper's Fig. 3: rows truth and methods, columns the example frames (mid slice)."""
    rows = ["truth", *example.predictions]
    fig, axes = _grid(example, rows)
    images = [example.truth, *example.predictions.values()]
    for row, image in zip(axes, images, strict=True):
        for j, ax in enumerate(row):
            # Transposed with the origin low: x to the right, y up, as viewers show a slice.
            ax.imshow(image[..., j].T, cmap="gray", vmin=0, vmax=1, origin="lower")
    fig.suptitle(f"{example.dataset}: subject {example.subject}, slice {example.slice}")
    return fig


def plot_errors(example: Example) -> Figure:
    """Absolute error maps ``|prediction - truth|`` of the example frames, one row per method.

    All panels share one colour scale, so methods compare by eye.
    """
    fig, axes = _grid(example, list(example.predictions))
    errors = [np.abs(p - example.truth) for p in example.predictions.values()]
    top = max(max(float(e.max()) for e in errors), 1e-6)
    for row, error in zip(axes, errors, strict=True):
        for j, ax in enumerate(row):
            image = ax.imshow(error[..., j].T, cmap="inferno", vmin=0, vmax=top, origin="lower")
    fig.colorbar(
        image,
        ax=axes.ravel().tolist(),
        shrink=0.8,
        label="|prediction - truth| (model intensity, 0 to 1)",
    )
    fig.suptitle(
        f"{example.dataset}: absolute error, subject {example.subject}, slice {example.slice}"
    )
    return fig


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f0f0; }
img { max-width: 100%; display: block; margin: 0.5em 0 1.5em; }
"""


FOLDED_ROWS = 20
"""Longer tables start folded in the page."""


def _arrow(column: str) -> str:
    metric = column.lower()
    if metric not in METRICS:
        return column
    unit = " (dB)" if metric == "psnr" else ""
    return f"{column}{unit} {'↓' if metric in LOWER_IS_BETTER else '↑'}"


def subject_notes(cohort: pd.DataFrame) -> list[str]:
    """One sentence per dataset whose methods were not all scored on the same subjects."""
    notes = []
    for dataset, table in cohort.groupby("dataset", sort=False):
        sets = {str(m): frozenset(t["subject"]) for m, t in table.groupby("method", sort=False)}
        if len(set(sets.values())) > 1:
            counts = ", ".join(f"{m} {len(s)}" for m, s in sets.items())
            notes.append(
                f"Dataset {dataset}: the methods were scored on different subjects ({counts}), "
                "so their means in the comparison are over different subjects; the paired "
                "table compares each method with the baseline on the subjects both have."
            )
    return notes


def _ranges(values: Sequence[int]) -> str:
    """Sorted frame indices as ranges: ``[1, 2, 3, 5]`` -> ``"1-3, 5"``."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def frame_notes(frames: pd.DataFrame) -> list[str]:
    """One sentence per dataset: which frames were predicted and scored, which were known.

    In evaluate mode the first and last chosen frames and, with ``--known-every``, every Kth
    one between are given to the methods and not scored; the per-frame scores hold the other
    frames only, so the known ones are those missing from 0 to one past the last scored.
    """
    notes = []
    for dataset, table in frames.groupby("dataset", sort=False):
        patterns = {tuple(sorted(set(t["frame"]))) for _, t in table.groupby(["subject", "method"])}
        if len(patterns) > 1:
            notes.append(
                f"Dataset {dataset}: the subjects' series were scored at {len(patterns)} "
                "different sets of frames (series of different lengths or known frames)."
            )
            continue
        (scored,) = patterns
        known = sorted(set(range(scored[-1] + 2)) - set(scored))
        notes.append(
            f"Dataset {dataset}: frames {_ranges(scored)} of 0-{scored[-1] + 1} predicted and "
            f"scored; {_ranges(known)} known (given to every method, not scored)."
        )
    return notes


def render_html(
    tables: Sequence[tuple[str, str, pd.DataFrame]],
    figures: Sequence[tuple[str, bytes]],
    notes: Sequence[str] = (),
    frames: Sequence[str] = (),
) -> str:
    """A self-contained page: tables as HTML, figures embedded as base64 PNG.

    The page's ``tssc-files`` meta element lists the files written with it (tables, figures,
    the page), so that a later report in the folder knows what it may replace
    (:func:`report_files`).

    Args:
        tables: ``(title, file name, table)`` per table, in page order.
        figures: ``(file name, PNG bytes)`` per figure, in page order.
        notes: Sentences shown above the tables (see :func:`subject_notes`).
        frames: The frames scored per dataset, shown above the tables (see
            :func:`frame_notes`).
    """
    lower = ", ".join(m for m in METRICS if m in LOWER_IS_BETTER)
    higher = ", ".join(m for m in METRICS if m not in LOWER_IS_BETTER)
    files = [*(name for _, name, _ in tables), *(name for name, _ in figures), REPORT_PAGE]
    parts = [
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">',
        f'<meta name="{FILES_META}" content="{html.escape(" ".join(files))}">',
        f"<title>tssc report</title>\n<style>{STYLE}</style>\n</head>\n<body>",
        "<h1>tssc report</h1>",
        f"<p>Lower is better (↓) for {html.escape(lower)}; higher is better (↑) for "
        f"{html.escape(higher)}; PSNR in dB. Means and population standard deviations are "
        "over subjects (the mean alone for one subject); a subject's score is the mean over "
        "its predicted frames.</p>",
        *(f"<p>{html.escape(line)}</p>" for line in frames),
        *(f"<p><strong>Note:</strong> {html.escape(note)}</p>" for note in notes),
    ]
    for title, name, table in tables:
        shown = table.rename(columns=_arrow)
        body = shown.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.6g}")
        if len(table) > FOLDED_ROWS:
            body = f"<details><summary>{len(table)} rows</summary>\n{body}\n</details>"
        parts += [f"<h2>{html.escape(title)} ({html.escape(name)})</h2>", body]
    parts.append("<h2>Figures</h2>")
    for name, png in figures:
        data = base64.b64encode(png).decode("ascii")
        parts += [
            f"<h3>{html.escape(name)}</h3>",
            f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">',
        ]
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


class _FilesMeta(HTMLParser):
    """Reads the ``tssc-files`` meta element of a report page."""

    def __init__(self) -> None:
        super().__init__()
        self.files: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "meta" and values.get("name") == FILES_META and self.files is None:
            self.files = (values.get("content") or "").split()


def report_files(folder: str | Path) -> list[Path]:
    """The files an earlier report in ``folder`` wrote, as its ``report.html`` lists them:
    none without a page, or with a page that is not a tssc report's.

    Raises:
        TsscError: If the page lists a file outside ``folder``.
    """
    folder = Path(folder)
    page = folder / REPORT_PAGE
    if not page.is_file():
        return []
    reader = _FilesMeta()
    # The meta element is in the head: the first block holds it.
    with page.open(encoding="utf-8", errors="replace") as handle:
        reader.feed(handle.read(1 << 16))
    return [inside(folder, name, page) for name in reader.files or []]


def write_report(
    out: str | Path,
    paths: Sequence[str | Path] | str | Path = (),
    datasets: Sequence[tuple[str, str | Path]] = (),
    figure_subject: str | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Gather per-frame scores of one or more datasets and write the report.

    Args:
        out: Output directory.
        paths: Per-frame CSVs or folders holding them (see :func:`gather`), one dataset
            labelled with the name of the folder holding them all (:func:`folder_label`).
        datasets: ``(label, path)`` pairs of further (or the only) datasets.
        figure_subject: The subject of the example figures (default: the first with a filled
            series, see :func:`load_example`).
        overwrite: Replace existing outputs.

    Returns:
        In ``out``: ``frames.csv`` (per frame), ``cohort.csv`` (per subject),
        ``summary.csv`` (per dataset and method: means and stds), ``comparison.csv`` (the
        same as ``mean ± std`` texts), ``paired.csv`` (every method against ``linear``, only
        when another method shares subjects with it), ``ablation.csv`` (only when a dataset
        has a method and stage 2 over it, e.g. ``diffusion`` and ``tssc``),
        ``psnr_per_frame.png``, ``examples.DATASET.png`` and ``errors.DATASET.png`` (for
        each dataset folder that is a ``tssc-run`` output with filled series) and
        ``report.html``; all are written, or none.

    Raises:
        TsscError: on bad inputs (see :func:`gather` and :func:`load_example`) or a refused
            overwrite.
    """
    out = Path(out)
    grouped = datasets_of(paths, datasets)
    frames = gather_datasets(grouped)
    cohort, summary = summarise(frames)
    tables = [
        ("Comparison: mean ± std over subjects", "comparison.csv", comparison(summary)),
        (
            f"Paired: each method against {BASELINE}, subject by subject",
            "paired.csv",
            paired(cohort),
        ),
        (
            "Ablation: each method against stage 2 over it (tssc: over diffusion)",
            "ablation.csv",
            ablation(cohort),
        ),
        ("Summary per dataset and method", "summary.csv", summary),
        ("Per subject", "cohort.csv", cohort),
        ("Per frame", "frames.csv", frames),
    ]
    tables = [t for t in tables if not (t[1] in OPTIONAL_TABLES and t[2].empty)]
    methods = list(dict.fromkeys(frames["method"]))
    figures = [("psnr_per_frame.png", _png(plot_psnr_per_frame(frames)))]
    for label, folders in grouped.items():
        for folder in folders:
            example = load_example(folder, label, methods, figure_subject)
            if example is not None:
                figures.append((f"examples.{label}.png", _png(plot_examples(example))))
                figures.append((f"errors.{label}.png", _png(plot_errors(example))))
                break
    if figure_subject is not None and len(figures) == 1:
        raise TsscError(f"no dataset has a filled series of the figure subject {figure_subject!r}")
    written = []
    # What an earlier report wrote and this one does not (an ablation, another dataset's
    # figures) would pass for part of this one: read before the page listing it is replaced.
    earlier = report_files(out) if overwrite else []
    with outputs(overwrite) as group:
        for _, name, table in tables:
            written.append(out / name)
            table.to_csv(group.path(written[-1]), index=False)
        for name, png in figures:
            written.append(out / name)
            group.path(written[-1]).write_bytes(png)
        written.append(out / REPORT_PAGE)
        page = render_html(tables, figures, subject_notes(cohort), frame_notes(frames))
        group.path(written[-1]).write_text(page, encoding="utf-8")
    for stale in set(earlier) - set(written):
        stale.unlink(missing_ok=True)
    return written
