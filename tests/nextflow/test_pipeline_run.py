"""``nextflow run main.nf -profile test`` for real, on the CPU: tiny models trained on one
synthetic cohort, every method run and scored on the other, the report written; its metrics
equal those of ``tssc-run`` on the same cohort with the same options and models; ``-resume``
runs nothing again; a task killed for memory is retried with more and the run succeeds."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.nextflow.runner import output, processes, run_pipeline, trace

# One worker runs the pipeline once for every test of the group (make test: --dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("pipeline")]

METHODS = ["linear", "nearest", "demons", "voxelmorph", "diffusion"]
SUBJECTS = ["cardiac_000", "cardiac_001", "cardiac_002"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_same_table(ours: Path, theirs: Path) -> None:
    a, b = _rows(ours), _rows(theirs)
    assert len(a) == len(b) and a[0].keys() == b[0].keys(), (ours, theirs)
    for row, other in zip(a, b, strict=True):
        for key, value in row.items():
            try:
                assert math.isclose(float(value), float(other[key]), rel_tol=0, abs_tol=1e-6), key
            except ValueError:
                assert value == other[key], key


def test_every_method_is_run_scored_and_reported(pipeline: Path) -> None:
    results = pipeline / "results"
    ran = processes(trace(results))
    assert all(statuses == {"COMPLETED"} for statuses in ran.values()), ran
    for subject in SUBJECTS:
        for method in [*METHODS, "tssc"]:
            assert (results / method / f"{subject}.nii.gz").stat().st_size > 0
            assert (results / "metrics" / f"{subject}.{method}.metrics.csv").exists()
    summary = {row["method"] for row in _rows(results / "report" / "summary.csv")}
    assert summary == {*METHODS, "tssc"}
    assert (results / "report" / "report.html").stat().st_size > 0


def test_metrics_equal_tssc_run_on_the_same_cohort_and_models(pipeline: Path) -> None:
    results = pipeline / "results"
    training = results / "training"
    out = pipeline / "tssc-run"
    run_cli(
        "tssc-run",
        "--input", results / "synthetic" / "cohort" / "samplesheet.csv",
        "--out", out,
        "--methods", ",".join(METHODS),
        "--size", "32",
        "--depth", "12",
        "--chunk-size", "4",
        "--device", "cpu",
        "--checkpoint", training / "stage1" / "checkpoint",
        "--checkpoint", training / "baselines" / "voxelmorph" / "checkpoint",
        "--refine-checkpoint", training / "stage2" / "checkpoint",
    )  # fmt: skip
    for subject in SUBJECTS:
        for method in [*METHODS, "tssc"]:
            name = f"{subject}.{method}.metrics.csv"
            _assert_same_table(results / "metrics" / name, out / "metrics" / name)


def test_resume_runs_nothing_again(pipeline: Path) -> None:
    first = trace(pipeline / "results")
    proc = run_pipeline("-profile", "test", "-resume", cwd=pipeline, timeout=3000, suffix="resumed")
    assert proc.returncode == 0, output(proc)
    again = trace(pipeline / "results", "resumed")
    assert {row["status"] for row in again} == {"CACHED"}
    assert sorted(row["name"] for row in again) == sorted(row["name"] for row in first)
