"""Wall time of the Nextflow test profile, locally and through SLURM, against tssc-run.

One command (``.venv/bin/python benchmarks/pipeline.py --out OUT``):

1. ``nextflow run main.nf -profile test`` on the local executor into ``OUT/local`` (tiny models
   trained on one synthetic cohort, every method run, scored and reported on the other);
2. ``tssc-run`` on that run's cohort with the same options and the models it trained, into
   ``OUT/tssc-run`` (inference only: the pipeline's training has no tssc-run counterpart);
3. with ``--slurm``, the same pipeline run through SLURM (``-profile test,slurm_gpu``, Nextflow
   polling every second) on a one-machine cluster the script starts in ``OUT/slurm-cluster``
   (``tests/nextflow/slurm.py``; needs root, munge and slurm-wlm);
4. the per-task cost of ``tssc-versions``, which every task runs after its step.

It prints one table: seconds of each run and its task count; inference tasks are counted
apart, so the local run's inference can be set beside tssc-run's.
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_common import Parser, run_script

from tssc_py.errors import TsscError

REPO = Path(__file__).resolve().parents[1]
VENV = Path(sys.executable).parent
METHODS = "linear,nearest,demons,voxelmorph,diffusion"


def _timed(command: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise TsscError(f"{command[0]} failed in {cwd}:\n{(done.stdout + done.stderr)[-3000:]}")
    return time.perf_counter() - start


def _pipeline(where: Path, profile: str, extra: list[str], env: dict[str, str] | None) -> float:
    """Seconds of one pipeline run in ``where``, the tasks finding this environment's tssc."""
    where.mkdir(parents=True, exist_ok=False)
    env = {**(env or os.environ), "PATH": f"{VENV}{os.pathsep}{os.environ['PATH']}"}
    command = [VENV / "nextflow", "run", REPO / "main.nf", "-ansi-log", "false", "-profile"]
    command += [profile, *extra, "--outdir", where / "results", "--trace_report_suffix", "run"]
    return _timed(command, where, env)


def _tasks(where: Path) -> tuple[int, int]:
    """(all tasks, inference tasks) of a pipeline run's trace."""
    with (where / "results/pipeline_info/execution_trace_run.txt").open(newline="") as handle:
        names = [row["name"] for row in csv.DictReader(handle, delimiter="\t")]
    return len(names), sum(name.startswith("INFERENCE:") for name in names)


def _versions_seconds(folder: Path, runs: int = 5) -> float:
    times = []
    for k in range(runs):
        out = folder / f"versions_{k}.yml"
        times.append(_timed([VENV / "tssc-versions", "--process", "X", "--out", out], folder))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = Parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="A new folder for the runs.")
    parser.add_argument("--slurm", action="store_true", help="Also run through a local SLURM.")
    args = parser.parse_args(argv)
    if args.out.exists():
        raise TsscError(f"{args.out}: exists; give a new folder")
    args.out.mkdir(parents=True)
    rows = []
    local = args.out / "local"
    seconds = _pipeline(local, "test", [], None)
    rows.append(("nextflow -profile test (local executor)", seconds, *_tasks(local)))
    training = local / "results/training"
    command: list[str | Path] = [VENV / "tssc-run", "--input"]
    command += [local / "results/synthetic/cohort/samplesheet.csv", "--out", args.out / "tssc-run"]
    command += ["--methods", METHODS, "--size", "32", "--depth", "12", "--chunk-size", "4"]
    command += ["--device", "cpu", "--checkpoint", training / "stage1/checkpoint"]
    command += ["--checkpoint", training / "baselines/voxelmorph/checkpoint"]
    command += ["--refine-checkpoint", training / "stage2/checkpoint"]
    rows.append(
        ("tssc-run, inference only (same cohort and models)", _timed(command, args.out), 0, 0)
    )
    if args.slurm:
        sys.path.insert(0, str(REPO))
        from tests.nextflow import slurm

        config = args.out / "poll.config"
        config.write_text(slurm.FAST_POLLING)
        with slurm.cluster(args.out / "slurm-cluster") as env:
            where = args.out / "slurm"
            seconds = _pipeline(where, "test,slurm_gpu", ["-c", config], env)
            rows.append(
                ("nextflow -profile test,slurm_gpu (one-machine SLURM)", seconds, *_tasks(where))
            )
    print("| run | seconds | tasks | inference tasks |")
    print("|---|---:|---:|---:|")
    for name, seconds, tasks, inference in rows:
        print(f"| {name} | {seconds:.0f} | {tasks or ''} | {inference or ''} |")
    print(f"\ntssc-versions, per task (median of 5): {_versions_seconds(args.out):.2f} s")


if __name__ == "__main__":
    sys.exit(run_script(main))
