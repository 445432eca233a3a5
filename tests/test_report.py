"""Tests of tssc_py.report and bin/tssc-report."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from tests.conftest import assert_one_line_error, blob_series, run_cli
from tssc_py import report, runs
from tssc_py.atomic import outputs
from tssc_py.errors import TsscError
from tssc_py.io import Scan, read_scan, write_scan
from tssc_py.metrics import METRICS, write_subject_metrics
from tssc_py.prepare import PrepareConfig, prepare_scan, save_record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Per-frame scores (frame, mae, psnr, ssim, cross_slice) with round numbers: subject means
# (in the comments) are easy to check by hand.
ROWS = {
    ("001", "linear"): [(1, 0.010, 30.0, 0.90, 0.004), (2, 0.020, 32.0, 0.80, 0.006)],
    # 0.015, 31, 0.85, 0.005
    ("002", "linear"): [(1, 0.030, 36.0, 0.70, 0.010), (2, 0.050, 38.0, 0.90, 0.012)],
    # 0.040, 37, 0.80, 0.011
    ("001", "diffusion"): [(1, 0.008, 34.0, 0.92, 0.006), (2, 0.010, 36.0, 0.94, 0.008)],
    # 0.009, 35, 0.93, 0.007
    ("002", "diffusion"): [(1, 0.006, 38.0, 0.96, 0.004), (2, 0.008, 40.0, 0.96, 0.006)],
    # 0.007, 39, 0.96, 0.005
    ("001", "tssc"): [(1, 0.004, 40.0, 0.95, 0.002), (2, 0.006, 42.0, 0.97, 0.002)],
    # 0.005, 41, 0.96, 0.002
    ("002", "tssc"): [(1, 0.002, 44.0, 0.99, 0.001), (2, 0.004, 46.0, 0.97, 0.003)],
    # 0.003, 45, 0.98, 0.002
}
COLUMNS = ["frame", *METRICS]


def _write(
    directory: Path, subject: str, method: str, rows: list[tuple], ssim_mode: str | None = "3d"
) -> Path:
    """A per-frame CSV; ``ssim_mode`` None writes one of an older tssc, without that column."""
    directory.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows, columns=COLUMNS)
    table.insert(0, "method", method)
    table.insert(0, "subject", subject)
    if ssim_mode is not None:
        table["ssim_mode"] = ssim_mode
    path = directory / f"{subject}.{method}.frames.csv"
    table.to_csv(path, index=False)
    return path


@pytest.fixture()
def scores(tmp_path: Path) -> Path:
    """The per-frame CSVs of the dataset ``knee`` (one sub-directory per method)."""
    root = tmp_path / "knee"
    for (subject, method), rows in ROWS.items():
        _write(root / method, subject, method, rows)
    return root


@pytest.fixture()
def cardiac(tmp_path: Path) -> Path:
    """A second dataset, ``linear`` only, whose subject ids repeat the knee ones."""
    root = tmp_path / "cardiac"
    _write(root, "001", "linear", [(1, 0.02, 28.0, 0.8, 0.01), (2, 0.04, 26.0, 0.6, 0.03)])
    return root


def test_gather_reads_directories_recursively(scores: Path) -> None:
    frames = report.gather([scores])
    assert list(frames.columns) == ["subject", "method", "frame", *METRICS, "ssim_mode"]
    assert len(frames) == 12
    assert set(frames["subject"]) == {"001", "002"}  # ids stay text: no "1"
    assert frames["frame"].dtype == np.int64
    # One path alone, as text or Path, is that path (not a sequence of characters).
    assert len(report.gather(str(scores))) == len(report.gather(scores)) == 12
    assert report.datasets_of(str(scores)) == {"knee": [scores]}
    # Naming a file again (directly and through its directory) reads it once.
    again = report.gather([scores, scores / "tssc" / "001.tssc.frames.csv"])
    assert len(again) == 12


def test_datasets_and_labels(scores: Path, cardiac: Path, tmp_path: Path) -> None:
    # Paths without a label form one dataset named after the folder holding them all.
    assert report.datasets_of([scores / "linear", scores / "tssc"]) == {
        "knee": [scores / "linear", scores / "tssc"]
    }
    assert report.folder_label([scores / "tssc" / "001.tssc.frames.csv"]) == "tssc"
    grouped = report.datasets_of([scores], [("heart", cardiac), ("heart", cardiac / "x")])
    assert grouped == {"knee": [scores], "heart": [cardiac, cardiac / "x"]}
    with pytest.raises(TsscError, match=r"dataset label 'a b' has characters other than"):
        report.datasets_of([], [("a b", scores)])
    (tmp_path / "my scans (2)").mkdir()
    assert report.folder_label([tmp_path / "my scans (2)"]) == "my_scans_2_"
    assert report.folder_label([Path("/")]) == "dataset"
    with pytest.raises(TsscError, match="no metrics files given"):
        report.datasets_of()
    # The same subject id in two datasets is no duplicate.
    frames = report.gather_datasets(report.datasets_of([scores], [("cardiac", cardiac)]))
    assert list(frames.columns) == [
        "dataset", "subject", "method", "frame", *METRICS, "ssim_mode",
    ]  # fmt: skip
    assert frames.groupby("dataset").size().to_dict() == {"cardiac": 2, "knee": 12}


def test_summary_comparison_ablation_known_numbers(scores: Path, cardiac: Path) -> None:
    frames = report.gather_datasets({"knee": [scores], "cardiac": [cardiac]})
    cohort, summary = report.summarise(frames)
    assert list(cohort.columns) == [
        "dataset", "subject", "method", "frames", *METRICS, "ssim_mode",
    ]  # fmt: skip
    rows = {(r.dataset, r.subject, r.method): r for r in cohort.itertuples()}
    assert rows["knee", "001", "linear"].frames == 2
    assert rows["knee", "001", "linear"].mae == pytest.approx(0.015)
    assert rows["knee", "002", "linear"].psnr == pytest.approx(37.0)
    assert rows["knee", "002", "tssc"].ssim == pytest.approx(0.98)
    assert rows["knee", "002", "linear"].cross_slice == pytest.approx(0.011)
    assert rows["cardiac", "001", "linear"].psnr == pytest.approx(27.0)

    assert list(summary.columns) == [
        "dataset", "method", "subjects", "ssim_mode", "mae_mean", "mae_std", "psnr_mean",
        "psnr_std",
        "ssim_mean", "ssim_std", "cross_slice_mean", "cross_slice_std",
    ]  # fmt: skip
    assert list(zip(summary["dataset"], summary["method"], strict=True)) == [
        ("knee", "diffusion"),
        ("knee", "linear"),
        ("knee", "tssc"),
        ("cardiac", "linear"),
    ]  # fmt: skip  (first-seen order: the knee folders are read sorted)
    # The numbers are the mean and population std (ddof=0) of the per-subject table.
    for row in summary.itertuples():
        table = cohort[(cohort["dataset"] == row.dataset) & (cohort["method"] == row.method)]
        assert row.subjects == len(table)
        for m in METRICS:
            assert getattr(row, f"{m}_mean") == pytest.approx(table[m].mean(), rel=1e-12)
            assert getattr(row, f"{m}_std") == pytest.approx(np.std(table[m]), abs=1e-15)
    linear = summary.set_index(["dataset", "method"]).loc["knee", "linear"]
    assert linear["mae_mean"] == pytest.approx(0.0275)
    assert linear["mae_std"] == pytest.approx(0.0125)
    assert linear["psnr_mean"] == pytest.approx(34.0)
    assert linear["psnr_std"] == pytest.approx(3.0)
    assert linear["cross_slice_mean"] == pytest.approx(0.008)
    assert linear["cross_slice_std"] == pytest.approx(0.003)

    table = report.comparison(summary)
    assert list(table.columns) == [
        "dataset", "method", "subjects", "ssim_mode", "MAE", "PSNR", "SSIM", "CROSS_SLICE",
    ]  # fmt: skip
    assert len(table) == 4  # one row per dataset and method
    assert set(table["ssim_mode"]) == {"3d"}
    text = table.set_index(["dataset", "method"])
    assert text.loc[("knee", "linear"), "PSNR"] == "34.00 ± 3.00"
    assert text.loc[("knee", "tssc"), "MAE"] == "0.0040 ± 0.0010"
    assert text.loc[("knee", "tssc"), "SSIM"] == "0.9700 ± 0.0100"
    assert text.loc[("knee", "linear"), "CROSS_SLICE"] == "0.0080 ± 0.0030"
    assert text.loc[("cardiac", "linear"), "PSNR"] == "27.00"  # one subject: no spread

    ablation = report.ablation(cohort).set_index("metric")
    assert set(ablation["dataset"]) == {"knee"}  # cardiac lacks both methods
    assert list(ablation.index) == list(METRICS)
    assert set(zip(ablation["method"], ablation["refined"], strict=True)) == {("diffusion", "tssc")}
    psnr = ablation.loc["psnr"]
    assert (psnr["method_mean"], psnr["method_std"]) == pytest.approx((37.0, 2.0))
    assert (psnr["refined_mean"], psnr["refined_std"]) == pytest.approx((43.0, 2.0))
    assert (psnr["difference_mean"], psnr["difference_std"]) == pytest.approx((6.0, 0.0))
    cross = ablation.loc["cross_slice"]  # per subject: 0.002 - 0.007, 0.002 - 0.005
    assert (cross["difference_mean"], cross["difference_std"]) == pytest.approx((-0.004, 0.001))
    # Lower MAE and cross-slice error, higher PSNR and SSIM: tssc is better on all four.
    assert ablation["better"].tolist() == ["tssc"] * 4
    worse = cohort.assign(mae=np.where(cohort["method"] == "tssc", 1.0, cohort["mae"]))
    assert report.ablation(worse).set_index("metric").loc["mae", "better"] == "diffusion"
    assert report.ablation(cohort[cohort["method"] != "tssc"]).empty


def test_ablation_compares_each_refined_method_with_its_own_input(scores: Path) -> None:
    frames = report.gather_datasets({"knee": [scores]})
    cohort, _ = report.summarise(frames)
    # Stage 2 over linear as well: linear_sc, better than linear by 1 dB of PSNR everywhere.
    over_linear = cohort[cohort["method"] == "linear"].assign(method="linear_sc")
    over_linear["psnr"] += 1.0
    table = report.ablation(pd.concat([cohort, over_linear])).set_index(["refined", "metric"])
    assert sorted(set(table.index.get_level_values(0))) == ["linear_sc", "tssc"]
    linear = table.loc[("linear_sc", "psnr")]
    assert linear["method"] == "linear" and linear["difference_mean"] == pytest.approx(1.0)
    assert table.loc[("tssc", "psnr"), "method"] == "diffusion"
    # A refinement whose input was not scored has nothing to be compared with.
    alone = cohort[cohort["method"] != "diffusion"]
    assert report.ablation(alone).empty

    paired = report.paired(cohort)
    assert list(paired.columns) == list(report.PAIRED_COLUMNS)
    assert set(paired["dataset"]) == {"knee"}  # cardiac has linear alone
    assert list(dict.fromkeys(paired["method"])) == ["diffusion", "tssc"]
    assert set(paired["baseline"]) == {"linear"}
    psnr = paired.set_index(["method", "metric"]).loc["diffusion", "psnr"]
    # Per subject: 35 - 31 and 39 - 37.
    assert (psnr["baseline_mean"], psnr["baseline_std"]) == pytest.approx((34.0, 3.0))
    assert (psnr["method_mean"], psnr["method_std"]) == pytest.approx((37.0, 2.0))
    assert (psnr["difference_mean"], psnr["difference_std"]) == pytest.approx((3.0, 1.0))
    assert (psnr["subjects"], psnr["better_subjects"], psnr["better"]) == (2, 2, "diffusion")
    ssim = paired.set_index(["method", "metric"]).loc["diffusion", "ssim"]
    assert ssim["difference_mean"] == pytest.approx(0.12)  # 0.93 - 0.85, 0.96 - 0.80
    # Better on one subject only, worse on average: both counts are shown.
    mixed = cohort.assign(
        mae=np.where(
            (cohort["method"] == "tssc") & (cohort["subject"] == "002"), 0.5, cohort["mae"]
        )
    )
    mae = report.paired(mixed).set_index(["method", "metric"]).loc["tssc", "mae"]
    assert (mae["better_subjects"], mae["better"]) == (1, "linear")
    assert report.paired(cohort[cohort["method"] == "linear"]).empty


def test_paired_ties_unmeasured_metrics_and_odd_method_names(tmp_path: Path) -> None:
    exact = (0.0, math.inf, 1.0, math.nan)  # a single-slice volume: no cross-slice error
    _write(tmp_path, "s1", "linear", [(1, *exact)])
    _write(tmp_path, "s2", "linear", [(1, 0.02, 30.0, 0.9, math.nan)])
    # Named like the table's own columns: must not clobber them.
    _write(tmp_path, "s1", "difference", [(1, *exact)])
    _write(tmp_path, "s2", "difference", [(1, 0.01, 33.0, 0.95, math.nan)])
    cohort, _ = report.summarise(report.gather_datasets({"d": [tmp_path]}))
    rows = report.paired(cohort).set_index("metric")
    psnr = rows.loc["psnr"]
    # Both exact on s1: a tie (0), not inf - inf; better on s2 by 3 dB.
    assert (psnr["method"], psnr["baseline_mean"], psnr["method_mean"]) == (
        "difference", math.inf, math.inf,
    )  # fmt: skip
    assert psnr["difference_mean"] == pytest.approx(1.5)
    assert (psnr["better_subjects"], psnr["better"]) == (1, "difference")
    cross = rows.loc["cross_slice"]
    assert math.isnan(cross["difference_mean"]) and cross["better"] == ""
    assert pd.isna(cross["better_subjects"])  # not measured: no count, not 0


def test_infinite_psnr_and_empty_cross_slice(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "d", "s1", "copy", [(1, 0.0, math.inf, 1.0, 0.0), (2, 0.01, 40.0, 0.9, 0.0)]
    )
    # A single-slice volume: no cross-slice error (an empty cell), still a valid table.
    _write(tmp_path / "d", "s2", "copy", [(1, 0.011, 30.0, 0.9, math.nan)])
    frames = report.gather_datasets({"d": [tmp_path / "d"]})
    assert frames.loc[frames["frame"].eq(1) & frames["subject"].eq("s1"), "psnr"].item() == math.inf
    cohort, summary = report.summarise(frames)
    assert cohort["psnr"].tolist() == [math.inf, 30.0]
    assert summary["psnr_mean"].item() == math.inf
    assert math.isnan(summary["psnr_std"].item())
    assert math.isnan(summary["cross_slice_mean"].item())
    text = report.comparison(summary)
    assert text["PSNR"].item() == "inf"
    assert text["MAE"].item() == "0.0080 ± 0.0030"
    assert text["CROSS_SLICE"].item() == ""  # missing, as in the CSVs: not the text "nan"
    png = report._png(report.plot_psnr_per_frame(frames))
    assert png.startswith(PNG_MAGIC)
    assert path.is_file()


def test_plot_marks_infinite_frames_at_the_top(tmp_path: Path) -> None:
    # "copy" is exact on frame 1 in one subject: the mean there is infinite, as in the tables.
    rows = {
        ("s1", "copy"): [math.inf, 20.0, 30.0],
        ("s2", "copy"): [21.0, 22.0, 32.0],
        ("s1", "blend"): [25.0, 24.0, 20.0],
        ("s2", "blend"): [23.0, 26.0, 22.0],
    }
    for (subject, method), psnr in rows.items():
        frame_rows = [(f, 0.1, p, 0.5, 0.1) for f, p in enumerate(psnr, start=1)]
        _write(tmp_path / "d", subject, method, frame_rows)
    fig = report.plot_psnr_per_frame(report.gather_datasets({"d": [tmp_path / "d"]}))
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    copy_y = np.asarray(lines["copy (n=2)"].get_ydata(), dtype=float)
    assert math.isnan(copy_y[0])  # not the finite subject's 21 dB
    assert copy_y[1:].tolist() == [21.0, 31.0]
    assert lines["blend (n=2)"].get_ydata().tolist() == [24.0, 25.0, 21.0]
    markers = [line for line in ax.get_lines() if line.get_marker() == "^"]
    assert len(markers) == 1 and markers[0].get_xdata().tolist() == [1]
    assert markers[0].get_color() == lines["copy (n=2)"].get_color()
    assert markers[0].get_ydata()[0] == ax.get_ylim()[1] > 31.0
    assert "infinite" in ax.get_title()


def test_plot_breaks_lines_at_known_frames_and_marks_them(tmp_path: Path) -> None:
    # Every third frame known (--known-every 3): frames 1, 2, 4, 5 scored, 3 not.
    for subject in ("s1", "s2"):
        rows = [(f, 0.1, 20.0 + f, 0.5, 0.1) for f in (1, 2, 4, 5)]
        _write(tmp_path / "d", subject, "blend", rows)
    fig = report.plot_psnr_per_frame(report.gather_datasets({"d": [tmp_path / "d"]}))
    ax = fig.axes[0]
    line = next(line for line in ax.get_lines() if line.get_label() == "blend (n=2)")
    assert np.asarray(line.get_xdata()).tolist() == [1, 2, 3, 4, 5]
    y = np.asarray(line.get_ydata(), dtype=float)
    assert math.isnan(y[2]) and y[[0, 1, 3, 4]].tolist() == [21.0, 22.0, 24.0, 25.0]
    dotted = [line for line in ax.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_xdata()[0] for line in dotted] == [3]
    assert "not scored (known)" in ax.get_title()
    assert not [line for line in ax.get_lines() if line.get_marker() == "^"]  # not "infinite"


def test_plot_colours_counts_and_markers_side_by_side(tmp_path: Path) -> None:
    # Dataset a: methods first seen as blend, copy; dataset b: copy, blend, one subject of
    # blend. Both exact at frame 1 of b, so their markers must not cover each other.
    row = (0.1, 20.0, 0.5, 0.1)
    exact = (0.0, math.inf, 1.0, 0.1)
    for method in ("blend", "copy"):
        _write(tmp_path / "a", "s1", method, [(1, *row), (2, *row)])
        _write(tmp_path / "b", "s1", method, [(1, *exact), (2, *row), (3, *row)])
    _write(tmp_path / "b", "s2", "copy", [(1, *row), (2, *row), (3, *row)])
    b = tmp_path / "b"
    frames = report.gather_datasets({"a": [tmp_path / "a"], "b": [b / "s1.copy.frames.csv", b]})
    fig = report.plot_psnr_per_frame(frames)
    colours = []
    for ax in fig.axes[:2]:
        drawn = {line.get_label(): line.get_color() for line in ax.get_lines()}
        colours.append({label.split(" ")[0]: c for label, c in drawn.items() if "(n=" in label})
    assert colours[0] == colours[1]  # a method keeps its colour in every panel
    assert sorted(colours[1]) == ["blend", "copy"]
    labels = [line.get_label() for line in fig.axes[1].get_lines() if "(n=" in line.get_label()]
    assert sorted(labels) == ["blend (n=1)", "copy (n=2)"]
    markers = [line for line in fig.axes[1].get_lines() if line.get_marker() == "^"]
    assert len(markers) == 2
    xs = [float(m.get_xdata()[0]) for m in markers]
    assert xs[0] != xs[1] and all(abs(x - 1) < 0.5 for x in xs)


def test_names_from_the_csvs(tmp_path: Path) -> None:
    # Pandas reads NA, None or nan as missing by default: valid subject ids all the same.
    for subject in ("NA", "None", "nan"):
        _write(tmp_path / "ok", subject, "linear", [(1, 0.1, 20.0, 0.5, math.nan)])
    frames = report.gather([tmp_path / "ok"])
    assert sorted(set(frames["subject"])) == ["NA", "None", "nan"]
    assert frames["cross_slice"].isna().all()
    bad = _write(tmp_path / "bad", "s1", "$\\foo$", [(1, 0.1, 20.0, 0.5, 0.1)])
    with pytest.raises(TsscError, match=r"method name '\$\\\\foo\$' has characters") as err:
        report.gather([bad])
    assert err.value.path == bad


def test_notes_on_different_subject_sets(scores: Path) -> None:
    frames = report.gather_datasets({"knee": [scores]})
    cohort, _ = report.summarise(frames)
    assert report.subject_notes(cohort) == []
    fewer = cohort[~((cohort["method"] == "tssc") & (cohort["subject"] == "002"))]
    (note,) = report.subject_notes(fewer)
    assert "Dataset knee" in note and "diffusion 2, linear 2, tssc 1" in note


def test_frame_notes_name_the_scored_and_known_frames(tmp_path: Path, scores: Path) -> None:
    row = (0.01, 30.0, 0.9, 0.01)
    for subject in ("s1", "s2"):  # every 3rd of 0-9 known
        _write(tmp_path / "x3", subject, "linear", [(f, *row) for f in (1, 2, 4, 5, 7, 8)])
    _write(tmp_path / "mixed", "s1", "linear", [(1, *row), (2, *row)])
    _write(tmp_path / "mixed", "s2", "linear", [(1, *row), (2, *row), (3, *row)])
    frames = report.gather_datasets(
        {"knee": [scores], "x3": [tmp_path / "x3"], "mixed": [tmp_path / "mixed"]}
    )
    assert report.frame_notes(frames) == [
        "Dataset knee: frames 1-2 of 0-3 predicted and scored; 0, 3 known (given to every "
        "method, not scored).",
        "Dataset x3: frames 1-2, 4-5, 7-8 of 0-9 predicted and scored; 0, 3, 6, 9 known (given "
        "to every method, not scored).",
        "Dataset mixed: the subjects' series were scored at 2 different sets of frames (series "
        "of different lengths or known frames).",
    ]


def test_ssim_modes_are_not_mixed_within_a_dataset(tmp_path: Path) -> None:
    row = [(1, 0.01, 30.0, 0.9, 0.01)]
    _write(tmp_path / "a", "s1", "linear", row, "3d")
    _write(tmp_path / "a", "s2", "linear", row, "2d")
    with pytest.raises(TsscError, match="dataset 'a' mixes scores of SSIM computed as 2d and 3d"):
        report.gather_datasets({"a": [tmp_path / "a"]})
    # An older tssc's CSV (no ssim_mode column) reads as unknown: not mixed with a known mode.
    _write(tmp_path / "b", "s1", "linear", row, "2d")
    _write(tmp_path / "b", "s2", "linear", row, None)
    with pytest.raises(TsscError, match="2d and unknown \\(an older tssc's CSV"):
        report.gather_datasets({"b": [tmp_path / "b"]})
    _write(tmp_path / "c", "s1", "linear", row, "2d")
    _write(tmp_path / "d", "s1", "linear", row, None)
    # Datasets may differ (e.g. a thin knee scan needs 2D SSIM): each row says which it is.
    frames = report.gather_datasets(
        {
            "c": [tmp_path / "c"],
            "k": [tmp_path / "a" / "s1.linear.frames.csv"],
            "d": [tmp_path / "d"],
        }
    )
    text = report.comparison(report.summarise(frames)[1]).set_index("dataset")
    assert text["ssim_mode"].to_dict() == {"c": "2d", "k": "3d", "d": ""}
    bad = _write(tmp_path / "e", "s1", "linear", row, "4d")
    with pytest.raises(TsscError, match="ssim_mode must be one of 3d, 2d") as err:
        report.gather([bad])
    assert err.value.path == bad


def test_an_upsample_run_is_named_as_such(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(TsscError, match=r"run: no \*\.frames\.csv files in this directory"):
        report.gather([run])
    (run / runs.RUN_STATE).write_text(json.dumps({"settings": {"prepare": {"mode": "upsample"}}}))
    with pytest.raises(TsscError, match="run: is an upsample-mode run: nothing is scored"):
        report.gather([run])


def test_gather_errors(tmp_path: Path, scores: Path) -> None:
    copy = tmp_path / "copy"
    _write(copy, "001", "linear", ROWS["001", "linear"][:1])
    with pytest.raises(TsscError, match=r"duplicate scores for subject '001', method 'linear'"):
        report.gather([scores, copy])

    bad = tmp_path / "bad.frames.csv"
    pd.DataFrame({"subject": ["a"], "method": ["m"], "frame": [1], "mae": [0.1]}).to_csv(
        bad, index=False
    )
    with pytest.raises(TsscError, match=r"missing column\(s\) psnr, ssim;") as err:
        report.gather([bad])
    assert err.value.path == bad
    older = tmp_path / "older.frames.csv"  # scored before the cross-slice error existed
    pd.read_csv(bad).assign(psnr=20.0, ssim=0.5).to_csv(older, index=False)
    assert report.gather([older])["cross_slice"].isna().all()

    binary = tmp_path / "binary.frames.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 10)
    with pytest.raises(TsscError, match="not a per-frame metrics CSV") as err:
        report.gather([binary])
    assert err.value.path == binary

    empty = tmp_path / "empty.frames.csv"
    empty.write_text("")
    with pytest.raises(TsscError, match="not a per-frame metrics CSV"):
        report.gather([empty])

    header = "subject,method,frame,mae,psnr,ssim,cross_slice\n"
    text = tmp_path / "text.frames.csv"
    text.write_text(header + "a,m,1,0.1,high,0.9,0.01\n")
    with pytest.raises(TsscError, match=r"non-numeric .* psnr"):
        report.gather([text])
    text.write_text(header + "a,m,1,0.1,30,0.9,low\n")
    with pytest.raises(TsscError, match=r"non-numeric .* cross_slice"):
        report.gather([text])
    text.write_text(header + "a,m,1,,30,0.9,0.01\n")
    with pytest.raises(TsscError, match=r"non-numeric or empty values in column\(s\) mae"):
        report.gather([text])

    with pytest.raises(TsscError, match="no metrics files"):
        report.gather([])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(TsscError, match=r"no \*\.frames\.csv files"):
        report.gather([tmp_path / "nothing"])
    with pytest.raises(TsscError, match="no such file"):
        report.gather([tmp_path / "missing.frames.csv"])


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    """A tssc-run-like folder of two subjects: truth, records, filled series and metrics."""
    root = tmp_path / "runs" / "blobs"
    config = PrepareConfig(frames=10, size=16, depth=4)
    rng = np.random.default_rng(0)
    for i, subject in enumerate(("s1", "s0")):
        prepared, record = prepare_scan(Scan(blob_series((16, 16, 4, 10), seed=i), np.eye(4)),
                                        config, subject)  # fmt: skip
        with outputs() as group:
            write_scan(prepared, root / runs.PREPARED / f"{subject}.nii.gz", group=group)
            save_record(record, group.path(root / runs.PREPARED / f"{subject}.json"))
            for method, noise in (("nearest", 0.2), ("linear", 0.05)):
                filled = prepared.data.copy()
                predicted = record.predicted_frames
                filled[..., predicted] += noise * rng.standard_normal(filled[..., predicted].shape)
                target = root / runs.FILLED / method / f"{subject}.nii.gz"
                write_scan(prepared.replace(data=filled), target, group=group)
                write_subject_metrics(
                    filled, prepared.data, record, method, root / "metrics", "2d", group
                )
    return root


def test_load_example(run: Path) -> None:
    example = report.load_example(run, "blobs", ["linear", "nearest"])
    assert example is not None
    assert example.subject == "s0"  # the first, sorted
    assert example.slice == 2
    # Six of the predicted frames 1..8, evenly spaced and including both ends.
    assert example.frames == [1, 2, 4, 5, 7, 8]
    assert list(example.predictions) == ["linear", "nearest"]
    assert example.truth.shape == (16, 16, 6)
    truth = read_scan(run / runs.PREPARED / "s0.nii.gz").data
    np.testing.assert_array_equal(example.truth, truth[:, :, 2, example.frames])
    assert report.load_example(run, "blobs", ["nearest"], "s1").subject == "s1"
    assert list(report.load_example(run, "blobs", ["nearest"]).predictions) == [
        "nearest", "linear",
    ]  # fmt: skip
    assert report.load_example(run / "metrics", "blobs", []) is None
    # A one-slice scan padded to 4 slices (placed at slice 3): its own slice is shown.
    path = run / runs.PREPARED / "s0.json"
    padded = json.loads(path.read_text())
    path.write_text(json.dumps({**padded, "original_shape": [16, 16, 1, 10], "z_offset": 3}))
    assert report.load_example(run, "blobs", []).slice == 3
    path.write_text(json.dumps(padded))

    assert report.load_example(run, "blobs", [], "x") is None  # another dataset may have it
    with pytest.raises(TsscError, match="no dataset has a filled series of the figure subject"):
        report.write_report(run / "report_x", [], [("blobs", run)], figure_subject="x")
    short = read_scan(run / runs.PREPARED / "s0.nii.gz")
    bad = run / runs.FILLED / "linear" / "s0.nii.gz"
    write_scan(short.replace(data=short.data[..., :3]), bad, overwrite=True)
    with pytest.raises(TsscError, match="has shape") as err:
        report.load_example(run, "blobs", [])
    assert err.value.path == bad


def test_write_report(scores: Path, run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    written = report.write_report(out, [scores], [("blobs", run)])
    names = [p.name for p in written]
    assert names == [
        "comparison.csv", "paired.csv", "ablation.csv", "summary.csv", "cohort.csv",
        "frames.csv", "psnr_per_frame.png", "examples.blobs.png", "errors.blobs.png",
        "report.html",
    ]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    comparison = pd.read_csv(out / "comparison.csv")
    assert len(comparison) == 5  # knee x 3 methods, blobs x 2
    assert len(pd.read_csv(out / "frames.csv")) == 12 + 2 * 2 * 8
    # The run's per-subject CSVs (tssc-metrics') against the report's numbers.
    subjects = pd.concat(pd.read_csv(p) for p in sorted((run / "metrics").glob("*.metrics.csv")))
    summary = pd.read_csv(out / "summary.csv").set_index(["dataset", "method"])
    for method, table in subjects.groupby("method"):
        for m in METRICS:
            mean, std = summary.loc[("blobs", method), [f"{m}_mean", f"{m}_std"]]
            assert mean == pytest.approx(table[m].mean(), rel=1e-9)
            assert std == pytest.approx(np.std(table[m], ddof=0), rel=1e-6)
    assert pd.read_csv(out / "ablation.csv")["dataset"].unique().tolist() == ["knee"]
    paired = pd.read_csv(out / "paired.csv")
    assert paired.groupby("dataset")["method"].unique().map(list).to_dict() == {
        "knee": ["diffusion", "tssc"],
        "blobs": ["nearest"],
    }

    for name in names:
        if name.endswith(".png"):
            image = imread(out / name)  # decodes: a valid PNG
            assert image.ndim == 3 and min(image.shape[:2]) > 200
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "http" not in page and "<script" not in page and "<link" not in page
    assert page.count("<table") == 6
    for name in names[:6]:
        assert f"({name})</h2>" in page
    for name in names[6:9]:
        assert base64.b64encode((out / name).read_bytes()).decode("ascii") in page
    assert "34.00 ± 3.00" in page and "PSNR (dB) ↑" in page and "CROSS_SLICE ↓" in page
    assert "Note:" not in page  # every method has every subject of its dataset
    assert "<p>Dataset knee: frames 1-2 of 0-3 predicted and scored; 0, 3 known" in page

    before = (out / "frames.csv").read_bytes()
    with pytest.raises(TsscError, match="output exists"):
        report.write_report(out, [scores])
    assert (out / "frames.csv").read_bytes() == before
    assert report.write_report(out, [scores], [("blobs", run)], overwrite=True) == written
    # Replaced by a report without the blobs dataset: its figures go with it.
    fewer = report.write_report(out, [scores], overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in fewer)
    assert not (out / "examples.blobs.png").exists()
    report.write_report(out, [scores], [("blobs", run)], overwrite=True)
    # The report's frames.csv does not match *.frames.csv: gathering its parent is unchanged.
    assert len(report.gather([tmp_path])) == 12 + 32


def test_no_ablation_without_both_methods(scores: Path, tmp_path: Path) -> None:
    written = report.write_report(tmp_path / "r", [scores / "linear", scores / "diffusion"])
    assert "ablation.csv" not in [p.name for p in written]
    assert "paired.csv" in [p.name for p in written]
    alone = report.write_report(tmp_path / "alone", [scores / "linear"])
    assert "paired.csv" not in [p.name for p in alone]  # nothing to pair linear with
    assert pd.read_csv(tmp_path / "r" / "comparison.csv")["dataset"].tolist() == ["knee"] * 2
    assert "(ablation.csv)" not in (tmp_path / "r" / "report.html").read_text()


def test_cli(scores: Path, cardiac: Path, run: Path, tmp_path: Path) -> None:
    # The old form: metrics paths only, one dataset named after their folder.
    out = tmp_path / "report"
    done = run_cli("tssc-report", "--out", out, scores / "linear", scores / "tssc")
    assert "comparison.csv" in done.stdout
    assert pd.read_csv(out / "comparison.csv")["dataset"].unique().tolist() == ["knee"]
    assert (out / "psnr_per_frame.png").read_bytes().startswith(PNG_MAGIC)

    both = tmp_path / "both"
    run_cli(
        "tssc-report", "--out", both, "--dataset", f"knee={scores}",
        "--dataset", f"cardiac={cardiac}", "--dataset", f"blobs={run}", "--figure-subject", "s1",
    )  # fmt: skip
    comparison = pd.read_csv(both / "comparison.csv")
    assert comparison.groupby("dataset", sort=False).size().to_dict() == {
        "knee": 3, "cardiac": 1, "blobs": 2,
    }  # fmt: skip
    assert (both / "examples.blobs.png").is_file() and (both / "ablation.csv").is_file()

    done = run_cli("tssc-report", "--out", tmp_path / "again", scores, scores / "x", check=False)
    assert_one_line_error(done, f"Error: {scores / 'x'}: no such file or directory")
    done = run_cli("tssc-report", "--out", tmp_path / "again", "--dataset", "knee", check=False)
    assert done.returncode != 0 and "'knee' is not NAME=PATH" in done.stderr
    done = run_cli("tssc-report", "--out", tmp_path / "again", check=False)
    assert_one_line_error(done, "no metrics files given")
    assert not (tmp_path / "again").exists()


def test_overwrite_removes_only_what_the_earlier_report_wrote(
    scores: Path, run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    written = report.write_report(out, [scores], [("blobs", run)])
    assert sorted(report.report_files(out)) == sorted(written)
    mine = [out / "examples.mine.png", out / "ablation.notes.csv", out / "errors.x.png"]
    for path in mine:
        path.write_bytes(PNG_MAGIC)
    fewer = report.write_report(out, [scores], overwrite=True)
    # The earlier report's figures of the blobs dataset go; the user's files stay.
    assert not (out / "examples.blobs.png").exists()
    assert sorted(out.iterdir()) == sorted([*fewer, *mine])
    # A page listing files outside its folder is refused before anything is written.
    page = (out / "report.html").read_text(encoding="utf-8")
    (out / "report.html").write_text(page.replace('content="', 'content="../victim.csv '))
    with pytest.raises(TsscError, match=r"report\.html: names '\.\./victim\.csv'"):
        report.write_report(out, [scores], overwrite=True)
