"""Tests of tssc_py.report and bin/tssc-report."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tssc_py import report
from tssc_py.errors import TsscError

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Per-frame scores with round numbers: subject means are easy to check by hand.
ROWS = {
    ("001", "linear"): [(1, 0.010, 30.0, 0.90), (2, 0.020, 32.0, 0.80)],  # 0.015, 31, 0.85
    ("002", "linear"): [(1, 0.030, 36.0, 0.70), (2, 0.050, 38.0, 0.90)],  # 0.040, 37, 0.80
    ("001", "tssc"): [(1, 0.004, 40.0, 0.95), (2, 0.006, 42.0, 0.97)],  # 0.005, 41, 0.96
    ("002", "tssc"): [(1, 0.002, 44.0, 0.99), (2, 0.004, 46.0, 0.97)],  # 0.003, 45, 0.98
}


def _write(directory: Path, subject: str, method: str, rows: list[tuple]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(rows, columns=["frame", "mae", "psnr", "ssim"])
    table.insert(0, "method", method)
    table.insert(0, "subject", subject)
    path = directory / f"{subject}.{method}.frames.csv"
    table.to_csv(path, index=False)
    return path


@pytest.fixture()
def scores(tmp_path: Path) -> Path:
    """A directory tree of per-frame CSVs (one sub-directory per method)."""
    root = tmp_path / "metrics"
    for (subject, method), rows in ROWS.items():
        _write(root / method, subject, method, rows)
    return root


def test_gather_reads_directories_recursively(scores: Path) -> None:
    frames = report.gather([scores])
    assert list(frames.columns) == ["subject", "method", "frame", "mae", "psnr", "ssim"]
    assert len(frames) == 8
    assert set(frames["subject"]) == {"001", "002"}  # ids stay text: no "1"
    assert frames["frame"].dtype == np.int64
    # Naming a file again (directly and through its directory) reads it once.
    again = report.gather([scores, scores / "tssc" / "001.tssc.frames.csv"])
    assert len(again) == 8


def test_summarise_known_numbers(scores: Path) -> None:
    cohort, summary = report.summarise(report.gather([scores]))
    assert list(cohort.columns) == ["subject", "method", "frames", "mae", "psnr", "ssim"]
    rows = {(r.subject, r.method): r for r in cohort.itertuples()}
    assert rows["001", "linear"].frames == 2
    assert rows["001", "linear"].mae == pytest.approx(0.015)
    assert rows["002", "linear"].psnr == pytest.approx(37.0)
    assert rows["002", "tssc"].ssim == pytest.approx(0.98)

    assert list(summary.columns) == [
        "method", "subjects", "mae_mean", "mae_std", "psnr_mean", "psnr_std",
        "ssim_mean", "ssim_std", "MAE", "PSNR", "SSIM",
    ]  # fmt: skip
    assert summary["method"].tolist() == ["linear", "tssc"]  # first-seen order
    linear, tssc = (summary.iloc[i] for i in range(2))
    assert linear["subjects"] == 2
    # Mean and population std (ddof=0) of the subject means.
    assert linear["mae_mean"] == pytest.approx(0.0275)
    assert linear["mae_std"] == pytest.approx(0.0125)
    assert linear["psnr_mean"] == pytest.approx(34.0)
    assert linear["psnr_std"] == pytest.approx(3.0)
    assert linear["ssim_mean"] == pytest.approx(0.825)
    assert linear["ssim_std"] == pytest.approx(0.025)
    assert tssc["psnr_mean"] == pytest.approx(43.0)
    assert tssc["psnr_std"] == pytest.approx(2.0)
    assert linear["PSNR"] == "34.000 ± 3.000"
    assert tssc["MAE"] == "0.004 ± 0.001"
    assert tssc["SSIM"] == "0.970 ± 0.010"


def test_infinite_psnr_is_kept(tmp_path: Path) -> None:
    path = _write(tmp_path, "s1", "copy", [(1, 0.0, math.inf, 1.0), (2, 0.01, 40.0, 0.9)])
    _write(tmp_path, "s2", "copy", [(1, 0.011, 30.0, 0.9)])
    frames = report.gather([tmp_path])
    assert frames.loc[frames["frame"].eq(1) & frames["subject"].eq("s1"), "psnr"].item() == math.inf
    cohort, summary = report.summarise(frames)
    assert cohort["psnr"].tolist() == [math.inf, 30.0]
    assert summary["psnr_mean"].item() == math.inf
    assert math.isnan(summary["psnr_std"].item())
    assert summary["PSNR"].item() == "inf"
    assert summary["MAE"].item() == "0.008 ± 0.003"
    report.plot_psnr_per_frame(frames, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes().startswith(PNG_MAGIC)
    assert path.is_file()


def test_gather_errors(tmp_path: Path, scores: Path) -> None:
    copy = tmp_path / "copy"
    _write(copy, "001", "linear", ROWS["001", "linear"][:1])
    with pytest.raises(TsscError, match=r"duplicate scores for subject '001', method 'linear'"):
        report.gather([scores, copy])

    bad = tmp_path / "bad.frames.csv"
    pd.DataFrame({"subject": ["a"], "method": ["m"], "frame": [1], "mae": [0.1]}).to_csv(
        bad, index=False
    )
    with pytest.raises(TsscError, match=r"missing column\(s\) psnr, ssim") as err:
        report.gather([bad])
    assert err.value.path == bad

    binary = tmp_path / "binary.frames.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" * 10)
    with pytest.raises(TsscError, match="not a per-frame metrics CSV") as err:
        report.gather([binary])
    assert err.value.path == binary

    empty = tmp_path / "empty.frames.csv"
    empty.write_text("")
    with pytest.raises(TsscError, match="not a per-frame metrics CSV"):
        report.gather([empty])

    text = tmp_path / "text.frames.csv"
    text.write_text("subject,method,frame,mae,psnr,ssim\na,m,1,0.1,high,0.9\n")
    with pytest.raises(TsscError, match=r"non-numeric .* psnr"):
        report.gather([text])

    with pytest.raises(TsscError, match="no metrics files"):
        report.gather([])
    (tmp_path / "nothing").mkdir()
    with pytest.raises(TsscError, match=r"no \*\.frames\.csv files"):
        report.gather([tmp_path / "nothing"])
    with pytest.raises(TsscError, match="no such file"):
        report.gather([tmp_path / "missing.frames.csv"])


def test_write_report(scores: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    written = report.write_report([scores], out)
    assert [p.name for p in written] == [
        "frames.csv", "cohort.csv", "summary.csv", "psnr_per_frame.png",
    ]  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)
    assert len(pd.read_csv(written[0])) == 8
    assert len(pd.read_csv(written[1])) == 4
    summary = pd.read_csv(written[2])
    assert summary["PSNR"].tolist() == ["34.000 ± 3.000", "43.000 ± 2.000"]
    png = written[3].read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000

    before = written[0].read_bytes()
    with pytest.raises(TsscError, match="output exists"):
        report.write_report([scores], out)
    assert written[0].read_bytes() == before
    assert report.write_report([scores], out, overwrite=True) == written
    # The report's frames.csv does not match *.frames.csv: gathering its parent is unchanged.
    assert len(report.gather([tmp_path])) == 8


def test_cli(scores: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = str(REPO / "bin" / "tssc-report")
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, script, "--out", str(out), str(scores / "linear"), str(scores / "tssc")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "summary.csv" in done.stdout
    assert (out / "psnr_per_frame.png").read_bytes().startswith(PNG_MAGIC)

    done = subprocess.run(
        [sys.executable, script, "--out", str(tmp_path / "again"), str(scores), str(scores / "x")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"Error: {scores / 'x'}: no such file or directory"]
    assert not (tmp_path / "again").exists()
