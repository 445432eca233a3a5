"""The pipeline on a real SLURM cluster (one machine, tests/nextflow/slurm.py): every task a
job, GPU tasks asking for the GPU with --gres and CPU tasks not, the same metrics as the local
run, and a job SLURM stops at its time limit retried as conf/base.config says."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.nextflow import slurm
from tests.nextflow.runner import output, run_pipeline, trace
from tests.nextflow.test_pipeline_run import METHODS, SUBJECTS, _assert_same_table

MISSING = slurm.missing()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("pipeline"),
    pytest.mark.skipif(
        bool(MISSING), reason=f"{', '.join(MISSING)} missing (make test installs slurm-wlm, munge)"
    ),
]

GPU_PROCESSES = {"INTERPOLATE", "REFINE", "TRAIN_STAGE1", "TRAIN_STAGE2", "TRAIN_BASELINE"}
CPU_METHODS = {"linear", "nearest", "demons"}  # --cpu_methods: INTERPOLATE tasks without a GPU
FIELDS = "name,status,exit,attempt,native_id,workdir"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    with slurm.cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


def _slurm_run(cluster: dict[str, str], where: Path, extra: str = "", *args: str):
    """``-profile test,slurm_gpu`` in ``where``, Nextflow looking for finished jobs every second
    (slurm_gpu: every 30 s), the trace naming each task's job and folder."""
    config = where / "slurm_test.config"
    config.write_text(f"{slurm.FAST_POLLING}trace.fields = '{FIELDS}'\n{extra}")
    env = {"SLURM_CONF": cluster["SLURM_CONF"]}
    return run_pipeline(
        "-profile", "test,slurm_gpu", "-c", config, *args, cwd=where, timeout=3000, env=env
    )


def _wants_gpu(task: str) -> bool:
    """Whether a task (its trace name, e.g. ``INFERENCE:FILL:INTERPOLATE (s1:linear:c0)``) is
    a GPU task under the gpu profiles."""
    process = task.split(" ")[0].split(":")[-1]
    if process == "INTERPOLATE":
        return task.split("(")[1].split(":")[1] not in CPU_METHODS
    return process in GPU_PROCESSES


def test_a_gpu_job_gets_the_gpu(cluster: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "job.out"
    command = ["sbatch", "--wait", "--gres=gpu:1", f"--output={out}"]
    proc = subprocess.run(
        [*command, "--wrap", "echo $CUDA_VISIBLE_DEVICES"],
        env=cluster,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert out.read_text().strip() == "0"


def test_the_test_pipeline_runs_through_slurm_with_the_local_metrics(
    cluster: dict[str, str], pipeline: Path, tmp_path: Path
) -> None:
    proc = _slurm_run(cluster, tmp_path)
    assert proc.returncode == 0, output(proc)
    results = tmp_path / "results"
    rows = trace(results)
    assert {row["status"] for row in rows} == {"COMPLETED"}
    assert len({row["native_id"] for row in rows}) == len(rows)
    assert all(row["native_id"].isdigit() for row in rows)  # a SLURM job id each
    gpu = {True: 0, False: 0}
    for row in rows:
        header = (Path(row["workdir"]) / ".command.run").read_text()
        asks = "#SBATCH --gres=gpu:1" in header
        assert asks is _wants_gpu(row["name"]), row["name"]
        gpu[asks] += 1
    assert gpu[True] and gpu[False]
    for subject in SUBJECTS:
        for method in [*METHODS, "tssc"]:
            name = f"{subject}.{method}.metrics.csv"
            _assert_same_table(results / "metrics" / name, pipeline / "results" / "metrics" / name)


def test_a_job_stopped_at_its_time_limit_is_retried(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    # Each SPLIT job's first attempt sleeps past a one-minute limit; SLURM stops it.
    extra = (
        "process {\n    withName: 'SPLIT' {\n"
        "        time = { task.attempt == 1 ? 1.min : 1.h }\n"
        "        beforeScript = { task.attempt == 1 ? 'sleep 600' : 'true' }\n    }\n}\n"
    )
    args = ("-stub-run", "--mode", "upsample", "--synth_train", "false", "--methods", "linear")
    proc = _slurm_run(cluster, tmp_path, extra, *args)
    assert proc.returncode == 0, output(proc)
    splits = [row for row in trace(tmp_path / "results") if ":SPLIT " in row["name"]]
    first = {(row["status"], row["exit"]) for row in splits if row["attempt"] == "1"}
    second = {(row["status"], row["exit"]) for row in splits if row["attempt"] == "2"}
    assert first == {("FAILED", "143")} and second == {("COMPLETED", "0")}, splits
    assert "terminated with an error exit status (143)" in output(proc)
