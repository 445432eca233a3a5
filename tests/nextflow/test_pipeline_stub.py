"""``nextflow run main.nf -stub-run`` of every entry (evaluate, upsample, train, train then
evaluate) under the real Nextflow: every process runs, every output lands where
conf/modules.config says, and no stub needs Python (a ``python3`` that fails is first on the
tasks' PATH)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.nextflow.runner import output, processes, run_pipeline, trace

TRAINING = {
    "SYNTH",
    "PREPARE",
    "TRAIN_STAGE1",
    "TRAIN_BASELINE",
    "SPLIT",
    "INTERPOLATE",
    "ASSEMBLE",
    "TRAIN_STAGE2",
}
INFERENCE = {
    "PREPARE",
    "SPLIT",
    "INTERPOLATE",
    "ASSEMBLE",
    "REFINE",
    "RESTORE",
    "METRICS",
    "REPORT",
}
SUBJECTS = ("stub_000", "stub_001")  # the SYNTH stub's cohort


def _no_python(tmp_path: Path) -> str:
    """A PATH whose ``python3`` and ``python`` fail the task that calls them."""
    shims = tmp_path / "no-python"
    shims.mkdir()
    for name in ("python3", "python"):
        shim = shims / name
        shim.write_text("#!/bin/sh\necho 'a stub called Python' >&2\nexit 97\n")
        shim.chmod(0o755)
    return f"{shims}{os.pathsep}/usr/bin{os.pathsep}/bin"


def _checkpoint(folder: Path, kind: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"kind": kind}))
    return folder


def _stub(tmp_path: Path, *args: str | Path) -> Path:
    proc = run_pipeline(
        "-profile", "test", "-stub-run", *args, cwd=tmp_path, path=_no_python(tmp_path)
    )
    assert proc.returncode == 0, output(proc)
    return tmp_path / "results"


def _assert_inference(results: Path, methods: list[str], scored: bool) -> None:
    for subject in SUBJECTS:
        assert (results / "prepared" / f"{subject}.json").exists()
        for method in methods:
            assert (results / "filled" / method / f"{subject}.nii").exists()
            assert (results / method / f"{subject}.nii.gz").exists()
            for table in ("frames", "metrics"):
                assert (results / "metrics" / f"{subject}.{method}.{table}.csv").exists() is scored
    report = ["comparison.csv", "summary.csv", "report.html", "examples.synthetic.png"]
    assert all((results / "report" / name).exists() is scored for name in report)


def _assert_trained(results: Path) -> None:
    for folder in ("stage1", "stage2", "baselines/voxelmorph"):
        assert (results / "training" / folder / "checkpoint" / "config.json").exists()
        assert (results / "training" / folder / "log.csv").exists()
    assert all((results / "training/prepared" / f"{s}.json").exists() for s in SUBJECTS)
    assert all((results / "training/stage1_outputs" / f"{s}.nii").exists() for s in SUBJECTS)


def _assert_versions(results: Path, ran: set[str]) -> None:
    text = (results / "pipeline_info" / "software_versions.yml").read_text()
    reported = {line[:-1] for line in text.splitlines() if not line.startswith(" ")}
    assert reported == ran


@pytest.mark.slow
def test_train_then_evaluate(tmp_path: Path) -> None:
    results = _stub(tmp_path)
    ran = processes(trace(results))
    assert set(ran) == TRAINING | INFERENCE
    assert all(statuses == {"COMPLETED"} for statuses in ran.values())
    _assert_trained(results)
    methods = ["linear", "nearest", "demons", "voxelmorph", "diffusion", "tssc"]
    _assert_inference(results, methods, scored=True)
    _assert_versions(results, set(ran))


@pytest.mark.slow
def test_evaluate_with_given_models(tmp_path: Path) -> None:
    stage1 = _checkpoint(tmp_path / "models/stage1/checkpoint", "stage1")
    uvinet = _checkpoint(tmp_path / "models/uvinet/checkpoint", "uvinet")
    stage2 = _checkpoint(tmp_path / "models/stage2/checkpoint", "stage2")
    results = _stub(
        tmp_path,
        "--synth_train",
        "false",
        "--methods",
        "linear,uvinet,diffusion",
        "--checkpoint",
        f"{stage1},{uvinet}",
        "--refine_checkpoint",
        stage2,
    )
    ran = processes(trace(results))
    assert set(ran) == INFERENCE | {"SYNTH"}
    _assert_inference(results, ["linear", "uvinet", "diffusion", "tssc"], scored=True)
    assert not (results / "training").exists()


@pytest.mark.slow
def test_stage_2_over_another_method_is_named_after_it(tmp_path: Path) -> None:
    stage2 = _checkpoint(tmp_path / "models/stage2/checkpoint", "stage2")
    args = ["--synth_train", "false", "--methods", "linear,demons", "--refine_method", "demons"]
    results = _stub(tmp_path, *args, "--refine_checkpoint", stage2)
    _assert_inference(results, ["linear", "demons", "demons_sc"], scored=True)
    assert not list(results.glob("**/tssc*"))


@pytest.mark.slow
def test_upsample(tmp_path: Path) -> None:
    results = _stub(
        tmp_path, "--mode", "upsample", "--synth_train", "false", "--methods", "linear,demons"
    )
    ran = processes(trace(results))
    assert set(ran) == {"SYNTH", "PREPARE", "SPLIT", "INTERPOLATE", "ASSEMBLE", "RESTORE"}
    _assert_inference(results, ["linear", "demons"], scored=False)


@pytest.mark.slow
def test_train(tmp_path: Path) -> None:
    results = _stub(tmp_path, "--mode", "train")
    ran = processes(trace(results))
    assert set(ran) == TRAINING
    _assert_trained(results)
    assert not (results / "report").exists()
    assert not (results / "metrics").exists()


def _failing_once(tmp_path: Path, status: int) -> Path:
    """A config making every SPLIT task exit with ``status`` on its first attempt, and the trace
    report the attempt and the resources each attempt asked for."""
    config = tmp_path / "fail_once.config"
    config.write_text(
        "process {\n"
        "    resourceLimits = [cpus: 2, memory: 16.GB, time: 1.h]\n"
        "    withName: 'SPLIT' {\n"
        f"        beforeScript = {{ task.attempt == 1 ? 'exit {status}' : 'true' }}\n"
        "    }\n"
        "}\n"
        "trace.fields = 'name,status,exit,attempt,cpus,memory'\n"
    )
    return config


@pytest.mark.slow
def test_a_task_killed_for_memory_is_retried_with_more(tmp_path: Path) -> None:
    config = _failing_once(tmp_path, 137)
    results = _stub(
        tmp_path,
        "-c",
        config,
        "--mode",
        "upsample",
        "--synth_train",
        "false",
        "--methods",
        "linear",
    )
    splits = [row for row in trace(results) if ":SPLIT " in row["name"]]
    assert len(splits) == 2 * len(SUBJECTS)
    first = [row for row in splits if row["attempt"] == "1"]
    second = [row for row in splits if row["attempt"] == "2"]
    assert {(r["status"], r["exit"], r["memory"]) for r in first} == {("FAILED", "137", "6 GB")}
    assert {(r["status"], r["exit"], r["memory"]) for r in second} == {("COMPLETED", "0", "12 GB")}
    _assert_inference(results, ["linear"], scored=False)


@pytest.mark.slow
def test_a_task_failing_otherwise_stops_the_run(tmp_path: Path) -> None:
    config = _failing_once(tmp_path, 1)
    args = ["-c", config, "--mode", "upsample", "--synth_train", "false", "--methods", "linear"]
    proc = run_pipeline(
        "-profile", "test", "-stub-run", *args, cwd=tmp_path, path=_no_python(tmp_path)
    )
    assert proc.returncode != 0
    assert "SPLIT" in output(proc) and "terminated with an error exit status (1)" in output(proc)
    splits = [row for row in trace(tmp_path / "results") if ":SPLIT " in row["name"]]
    assert {row["attempt"] for row in splits} == {"1"}
