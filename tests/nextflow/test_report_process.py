"""REPORT's command run for real on the folder layout the process stages.

Nextflow stages every task output as a symlink: the frames CSVs into ``cohort/metrics/``, the
figure subject's prepared volume and record into ``cohort/prepared/``, and the ``METHOD/``
folder holding its series from each ASSEMBLE / REFINE task into ``cohort/filled/``. Rendering
the process's script and stub with known values and running the script's tssc-report checks
that the real command finds the example figures there, that its files match the declared
outputs, and that the stub makes exactly the files the real command writes.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import blob_series, run_cli
from tests.nextflow.nextflow_files import REPO, VERSIONS, _replace_interpolations, processes
from tssc_py.atomic import outputs
from tssc_py.io import Scan, write_scan
from tssc_py.metrics import write_subject_metrics
from tssc_py.prepare import PrepareConfig, prepare_scan, save_record

REPORT = next(p for p in processes([REPO / "modules/local/report/main.nf"]) if p.name == "REPORT")
METHODS = ("linear", "diffusion", "tssc")  # diffusion and tssc: the ablation table too
VALUES = {"dataset": "blobs", "figure_subject": "s0", "task.process": "REPORT", "args": ""}


def render(template: str) -> list[list[str]]:
    """The command lines of a script/stub template with :data:`VALUES` (shell words)."""

    def expression(expr: str) -> str:
        if expr in VALUES:
            return VALUES[expr]
        match = re.fullmatch(r'shellQuote\((?:"(.*)"|([\w.]+))\)', expr)
        assert match, f"no rendering for ${{{expr}}}"
        text = match.group(1) if match.group(1) is not None else VALUES[match.group(2)]
        return shlex.quote(_replace_interpolations(text, lambda inner: VALUES[inner]))

    text = re.sub(r"\\\\\n", " ", _replace_interpolations(template, expression))
    return [shlex.split(line) for line in text.splitlines() if line.strip()]


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)


@pytest.fixture()
def staged(tmp_path: Path) -> Path:
    """A REPORT task folder: task outputs under work/, symlinked as Nextflow stages them."""
    work, task = tmp_path / "work", tmp_path / "task"
    config = PrepareConfig(frames=8, size=16, depth=4)
    rng = np.random.default_rng(0)
    for i, subject in enumerate(("s0", "s1")):
        scan = Scan(blob_series((16, 16, 4, 8), seed=i), np.eye(4))
        prepared, record = prepare_scan(scan, config, subject)
        volume = work / f"prepare_{subject}" / f"{subject}.nii"
        with outputs() as group:
            write_scan(prepared, volume, group=group)
            save_record(record, group.path(volume.with_suffix(".json")))
        for k, method in enumerate(METHODS):
            filled = prepared.data.copy()
            hidden = record.predicted_frames
            noise = 0.1 / (k + 1) * rng.standard_normal(filled[..., hidden].shape)
            filled[..., hidden] += noise
            series = work / f"assemble_{subject}_{method}" / method / f"{subject}.nii"
            metrics = work / f"metrics_{subject}_{method}" / "metrics"
            with outputs() as group:
                write_scan(prepared.replace(data=filled), series, group=group)
                frames, _ = write_subject_metrics(
                    filled, prepared.data, record, method, metrics, "2d", group
                )
            _link(frames, task / "cohort" / "metrics" / frames.name)
            if subject == VALUES["figure_subject"]:
                _link(series.parent, task / "cohort" / "filled" / method)
        if subject == VALUES["figure_subject"]:
            for path in (volume, volume.with_suffix(".json")):
                _link(path, task / "cohort" / "prepared" / path.name)
    return task


def test_report_script_on_the_staged_layout_matches_outputs_and_stub(
    staged: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = [words for words in render(REPORT.template("script")) if words[0] != VERSIONS]
    assert [words[0] for words in lines] == ["tssc-report"]
    monkeypatch.chdir(staged)  # the script's paths are relative to the task folder
    run_cli("tssc-report", *lines[0][1:])
    written = sorted(str(p.relative_to(staged)) for p in (staged / "report").iterdir())
    assert f"report/examples.{VALUES['dataset']}.png" in written
    assert f"report/errors.{VALUES['dataset']}.png" in written
    assert "report/ablation.csv" in written

    declared = [pattern for pattern, _, _ in REPORT.outputs() if pattern != "versions.yml"]
    for pattern in declared:
        assert fnmatch.filter(written, pattern), f"nothing written matches output {pattern}"
    assert all(any(fnmatch.fnmatch(w, p) for p in declared) for w in written), written

    touched = sorted(
        word
        for words in render(REPORT.template("stub"))
        if words[0] == "touch"
        for word in words[1:]
    )
    assert touched == written
