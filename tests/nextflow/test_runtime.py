"""The Nextflow runtime `make nextflow` resolves from Maven Central runs workflows offline."""

from __future__ import annotations

import re
from pathlib import Path

from tests.nextflow.nextflow_files import REPO
from tests.nextflow.runner import nextflow

POM = REPO / "tools" / "nextflow" / "pom.xml"


def test_version_is_the_pinned_one(tmp_path: Path) -> None:
    pinned = re.search(r"<nextflow.version>([^<]+)<", POM.read_text())
    assert pinned is not None
    proc = nextflow("-version", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"version {pinned.group(1)} " in proc.stdout


def test_a_workflow_runs_its_tasks_and_resumes_from_the_cache(tmp_path: Path) -> None:
    script = tmp_path / "hello.nf"
    script.write_text(
        "process WRITE {\n"
        "    input: val x\n"
        "    output: path 'out.txt'\n"
        '    script: "echo value $x > out.txt"\n'
        "}\n"
        "workflow {\n"
        "    WRITE(channel.of(1, 2)).map { f -> f.text.trim() }.collect().view { v -> v.sort() }\n"
        "}\n"
    )
    first = nextflow("run", script, "-ansi-log", "false", cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "['value 1', 'value 2']" in first.stdout
    again = nextflow("run", script, "-ansi-log", "false", "-resume", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("Cached process > WRITE") == 2
    assert "['value 1', 'value 2']" in again.stdout


def test_a_failing_task_fails_the_run(tmp_path: Path) -> None:
    script = tmp_path / "fail.nf"
    script.write_text("process FAIL {\n    script: 'exit 3'\n}\nworkflow {\n    FAIL()\n}\n")
    proc = nextflow("run", script, "-ansi-log", "false", cwd=tmp_path)
    assert proc.returncode != 0
    assert "exit status (3)" in proc.stdout + proc.stderr
