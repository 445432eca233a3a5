"""Every Nextflow file keeps to the strict syntax parser (the default since Nextflow 26.04) and
stays valid for the legacy one; the plugin and Nextflow versions they need are pinned."""

from __future__ import annotations

import re

import pytest

from tests.nextflow.nextflow_files import CONFIG_FILES, NF_FILES, REPO
from tests.nextflow.strict_syntax import config_problems, script_problems

CONFIGS = CONFIG_FILES


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(REPO)) for p in CONFIGS])
def test_config_keeps_to_the_strict_syntax(path) -> None:
    assert not config_problems(path.read_text())


@pytest.mark.parametrize("path", NF_FILES, ids=[str(p.relative_to(REPO)) for p in NF_FILES])
def test_script_keeps_to_the_strict_syntax(path) -> None:
    assert not script_problems(path.read_text())


BAD_CONFIGS = {
    "top-level def": "def stamp = new Date().format('yyyy')\ntrace.file = \"t_${stamp}\"\n",
    "top-level if": "if (params.big) {\n    process.cpus = 8\n}\n",
    "function": "def cpus() {\n    return 4\n}\n",
    "statement in a block": "process {\n    println 'x'\n}\n",
    "closure outside process": 'timeline.file = { "${params.outdir}/t.html" }\n',
    "setting read as a variable": "manifest.version = '1'\nparams.tag = manifest.version\n",
    "setting read in a string": 'report.file = "r_${manifest.version}.html"\n',
}


@pytest.mark.parametrize("text", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_config_checks_catch_what_the_strict_parser_refuses(text: str) -> None:
    assert config_problems(text)


def test_config_checks_accept_what_the_strict_parser_accepts() -> None:
    text = (
        "params {\n    stamp = new java.util.Date().format('yyyy')\n}\n"
        "includeConfig 'conf/base.config'\n"
        "profiles {\n    docker {\n"
        '        process.container = { "img:${workflow.manifest.version}" }\n'
        "        docker.runOptions = '-u $(id -u)'\n    }\n}\n"
        "process {\n    withName: 'A|B' {\n        cpus = { if (task.attempt > 1) { return 2 }\n"
        "            return 1 }\n    }\n"
        "    resourceLimits = [cpus: Runtime.getRuntime().availableProcessors()]\n}\n"
        "plugins {\n    id 'nf-schema@2.7.2'\n}\n"
        'timeline.file = "${params.outdir}/t_${params.stamp}.html"\n'
    )
    assert config_problems(text) == []


BAD_SCRIPTS = {
    "dsl flag": "nextflow.enable.dsl = 2\nworkflow {\n}\n",
    "Channel": "workflow {\n    Channel.of(1)\n}\n",
    "implicit it": "workflow {\n    channel.of(1).map { it * 2 }\n}\n",
    "for loop": "def f(xs) {\n    for (x in xs) {\n        println x\n    }\n}\n",
    "switch": "def f(x) {\n    switch (x) {\n    }\n}\n",
    "import": "import groovy.json.JsonSlurper\nworkflow {\n}\n",
    "typed variable": "def f() {\n    String s = 'a'\n    return s\n}\n",
    "typed parameter": "def f(String s) {\n    return s\n}\n",
    "Nextflow-style type": "def f() {\n    def s: String = 'a'\n    return s\n}\n",
    "soft cast": "def f(x) {\n    return (Map) x\n}\n",
    "increment": "def f(x) {\n    x++\n    return x\n}\n",
    "spread": "workflow {\n    channel.of([1, [2]]).map { a, b -> [a, *b] }\n}\n",
    "slashy interpolation": "def f(id) {\n    return 'a' ==~ /${id}\\.q/\n}\n",
    "shell section": 'process P {\n    shell:\n    """\n    echo\n    """\n}\n',
    "unquoted env": "process P {\n    input:\n    env FOO\n\n    script:\n    'true'\n}\n",
    "addParams": "include { A } from './a' addParams(x: 1)\nworkflow {\n}\n",
    "top-level statement": "process P {\n    script:\n    'true'\n}\nprintln 'hello'\n",
    "handler at top level": "workflow {\n}\nworkflow.onComplete {\n    println 'done'\n}\n",
}


@pytest.mark.parametrize("text", BAD_SCRIPTS.values(), ids=BAD_SCRIPTS.keys())
def test_script_checks_catch_what_the_strict_parser_refuses(text: str) -> None:
    assert script_problems(text)


def test_script_checks_accept_spread_dot_and_plain_slashy_strings() -> None:
    # The syntax reference documents the spread-dot (`list*.trim()`) as a property or method
    # call; slashy strings are allowed when they interpolate nothing.
    text = (
        "include { A } from './a'\n\n"
        "workflow {\n    def xs = 'a, b'.tokenize(',')*.trim()\n"
        "    def y = 'a b'.replaceAll(/[^a-z]+/, '_')\n    A(xs, y)\n}\n\n"
        "def f(x) {\n    return x as Map\n}\n"
    )
    assert script_problems(text) == []


def test_workflow_handlers_only_in_the_entry_workflow() -> None:
    for path in NF_FILES:
        if path != REPO / "main.nf":
            assert not re.search(r"\bworkflow\s*\.\s*on(Complete|Error)\b", path.read_text()), path


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_pipeline_needs_the_nextflow_make_test_runs() -> None:
    """manifest.nextflowVersion is the version tools/nextflow/pom.xml pins; no plugin is used
    (none can be had offline: the pipeline checks its params and samplesheets itself)."""
    config = (REPO / "nextflow.config").read_text()
    pinned = re.search(r"<nextflow.version>([^<]+)<", (REPO / "tools/nextflow/pom.xml").read_text())
    assert pinned is not None
    assert f"nextflowVersion = '!>={pinned.group(1)}'" in config
    assert "plugins" not in config and "plugin/" not in (REPO / "main.nf").read_text()


def test_boolean_and_number_params_are_read_as_such() -> None:
    """Params a script tests for truth or computes with go through isTrue() / toInteger():
    'false' from the command line is a string, and a true one under the strict parser."""
    booleans = ("synth", "synth_train", "skip_refine", "scratch")
    texts = {path: path.read_text() for path in [*NF_FILES, *CONFIG_FILES]}
    for path, text in texts.items():
        for name in booleans:
            for match in re.finditer(rf"params\.{name}\b", text):
                line = text[text.rfind("\n", 0, match.start()) + 1 : text.find("\n", match.end())]
                assert f"isTrue(params.{name})" in line or (
                    f"params.{name}.toString().toLowerCase() == 'true'" in line
                ), f"{path.name}: {line.strip()}"
        for match in re.finditer(r"params\.synth_seed\b(?!\.toString\(\)\.toInteger\(\))", text):
            line = text[text.rfind("\n", 0, match.start()) + 1 : text.find("\n", match.end())]
            raise AssertionError(f"{path.name}: synth_seed used as a number: {line.strip()}")
