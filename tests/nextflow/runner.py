"""Running the project's real Nextflow (``make nextflow``) from tests: offline, with a home and
a work folder of the test's own."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nextflow.nextflow_files import REPO

NEXTFLOW = Path(sys.executable).parent / "nextflow"
VENV_BIN = Path(sys.executable).parent


def nextflow(
    *args: str | Path,
    cwd: Path,
    path: str | None = None,
    timeout: int = 900,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``nextflow ARGS`` in ``cwd``; ``path`` replaces the tasks' PATH (default: this
    environment's, the virtual environment first); ``env`` adds variables."""
    if not NEXTFLOW.exists():
        pytest.fail(f"{NEXTFLOW} missing: run `make nextflow` (make test does)")
    env = {
        **os.environ,
        **(env or {}),
        "NXF_HOME": str(cwd / ".nxf-home"),
        "PATH": path if path is not None else f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("NXF_SYNTAX_PARSER", None)
    return subprocess.run(
        [str(NEXTFLOW), *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_pipeline(
    *args: str | Path,
    cwd: Path,
    path: str | None = None,
    timeout: int = 900,
    suffix: str = "test",
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``nextflow run main.nf ARGS --outdir results`` in ``cwd`` (results under ``cwd``), its
    run reports named with ``suffix`` (a second run into the same folder needs another)."""
    return nextflow(
        "run",
        REPO / "main.nf",
        "-ansi-log",
        "false",
        *args,
        "--outdir",
        cwd / "results",
        "--trace_report_suffix",
        suffix,
        cwd=cwd,
        path=path,
        timeout=timeout,
        env=env,
    )


def output(proc: subprocess.CompletedProcess[str]) -> str:
    """Both streams of a run, for assertion messages."""
    return proc.stdout + proc.stderr


def trace(outdir: Path, suffix: str = "test") -> list[dict[str, str]]:
    """The rows of a run's trace (``pipeline_info/execution_trace_SUFFIX.txt``)."""
    with (outdir / "pipeline_info" / f"execution_trace_{suffix}.txt").open(newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def processes(rows: list[dict[str, str]]) -> dict[str, set[str]]:
    """Each process's statuses in a trace, by the last part of its name (``INFERENCE:PREPARE``
    and ``TRAINING:PREPARE`` are both ``PREPARE``)."""
    found: dict[str, set[str]] = {}
    for row in rows:
        name = row["name"].split(" ")[0].split(":")[-1]
        found.setdefault(name, set()).add(row["status"])
    return found


def launched_tasks(cwd: Path) -> list[Path]:
    """The task folders a run made under ``cwd/work``."""
    work = cwd / "work"
    return [p for p in work.glob("*/*") if p.is_dir()] if work.exists() else []
