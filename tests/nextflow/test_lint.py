"""Lint of the Nextflow files with reftrace and the project's own rules.

reftrace parses every .nf and .config file and runs the rules below: every process has a tag,
one standard resource label, nf-core's ext.when switch, a stub, a script and a versions.yml
output on the versions topic; exactly the processes that run a network (their bin/ script has a
``--device`` option) carry the GPU label; config directives that read params are closures.
"""

from __future__ import annotations

import re

import pytest
import reftrace
from reftrace.fixtures.rules import must_use_closures
from reftrace.linting import LintError, LintResults, rule

from tests.nextflow.nextflow_files import (
    CONFIG_FILES,
    NF_FILES,
    REPO,
    VERSIONS,
    commands,
    option_table,
    processes,
)

RESOURCE_LABELS = {"process_single", "process_low", "process_medium", "process_high"}
EXTRA_LABELS = {"process_long", "process_gpu"}
GPU_LABEL = "process_gpu"
SECTIONS = {(p.path, p.name): p for p in processes()}


def _module(path) -> reftrace.Module:
    module = reftrace.Module.from_file(str(path))
    assert not isinstance(module, reftrace.ParseError), f"{path}: {module.error}"
    return module


def runs_a_network(command: str) -> bool:
    """Whether a bin/ script runs a network: it lets the user pick the ``--device``."""
    return "--device" in option_table(command)


@rule
def tag_and_labels(module: reftrace.Module, results: LintResults) -> None:
    for process in module.processes:
        labels = [label.label for label in process.labels]
        if not process.tags:
            results.errors.append(LintError(process.line, f"{process.name} has no tag"))
        if len([lab for lab in labels if lab in RESOURCE_LABELS]) != 1:
            results.errors.append(
                LintError(process.line, f"{process.name} needs one of {sorted(RESOURCE_LABELS)}")
            )
        unknown = set(labels) - RESOURCE_LABELS - EXTRA_LABELS
        if unknown:
            results.errors.append(LintError(process.line, f"{process.name}: labels {unknown}"))


@rule
def gpu_label(module: reftrace.Module, results: LintResults) -> None:
    for process in module.processes:
        script = SECTIONS[(REPO / module.path, process.name)].template("script")
        tools = [c.name for c in commands(script) if c.name != VERSIONS]
        needs = any(runs_a_network(tool) for tool in tools)
        has = GPU_LABEL in [label.label for label in process.labels]
        if needs != has:
            why = "runs a network" if needs else "runs no network"
            results.errors.append(
                LintError(process.line, f"{process.name} {why}: GPU label {has}, expected {needs}")
            )


@rule
def script_stub_and_versions(module: reftrace.Module, results: LintResults) -> None:
    for process in module.processes:
        found = SECTIONS[(REPO / module.path, process.name)]
        for section in ("script", "stub"):
            if not found.template(section).strip():
                results.errors.append(LintError(process.line, f"{process.name}: no {section}"))
        # nf-core's switch: a config can turn a process off with ext.when = false
        if found.sections.get("when", "").strip() != "task.ext.when == null || task.ext.when":
            results.errors.append(LintError(process.line, f"{process.name}: no ext.when switch"))
        if not re.search(
            r"^\s*path 'versions.yml'\s*, topic: versions$", found.sections.get("output", ""), re.M
        ):
            results.errors.append(
                LintError(
                    process.line, f"{process.name}: no 'versions.yml' output (topic: versions)"
                )
            )


RULES = (tag_and_labels, gpu_label, script_stub_and_versions)


@pytest.mark.parametrize("path", NF_FILES, ids=[str(p.relative_to(REPO)) for p in NF_FILES])
def test_nextflow_file_parses_and_passes_the_rules(path) -> None:
    module = _module(path.relative_to(REPO))
    errors = [f"{path.name}:{e.line}: {e.error}" for r in RULES for e in r(module).errors]
    assert not errors, errors


def test_rules_see_every_process() -> None:
    seen = {
        (REPO / m.path, p.name)
        for path in NF_FILES
        for m in [_module(path.relative_to(REPO))]
        for p in m.processes
    }
    assert seen == set(SECTIONS) and len(seen) >= 11


@pytest.mark.parametrize("path", CONFIG_FILES, ids=[p.name for p in CONFIG_FILES])
def test_config_parses_and_reads_params_in_closures(path) -> None:
    result = reftrace.ConfigFile.from_file(str(path))
    assert result.error is None, result.error
    errors = must_use_closures(result.config_file).errors
    assert not errors, [f"{path.name}:{e.line}: {e.error}" for e in errors]


def test_rules_catch_a_process_without_tag_stub_or_versions(tmp_path, monkeypatch) -> None:
    bad = tmp_path / "bad.nf"
    bad.write_text(
        "process BAD {\n    label 'process_gpu'\n\n    output:\n    path 'x'\n\n"
        '    script:\n    """\n    tssc-split --out x\n    """\n}\n'
    )
    monkeypatch.setitem(SECTIONS, (bad, "BAD"), processes([bad])[0])
    module = _module(bad)
    errors = [e.error for r in RULES for e in r(module).errors]
    assert "BAD has no tag" in errors
    assert any("needs one of" in e for e in errors)
    assert any("runs no network" in e for e in errors)
    assert "BAD: no stub" in errors and any("versions.yml" in e for e in errors)
    assert "BAD: no ext.when switch" in errors
