"""The contract between the Nextflow processes and the bin/ scripts they run.

Every command of every process's script: block is a bin/ script that exists and is executable,
given only options its click command accepts (flags without values, valued options with one),
every option it requires, and, through conf/modules.config's ext.options, only options it has;
every value that reaches a script is shell-quoted. What a stub makes, and that the checkpoints
staged side by side do not collide, the real stub runs show (test_pipeline_stub.py).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.nextflow.nextflow_files import (
    REPEATED,
    REPO,
    VERSIONS,
    Command,
    Process,
    commands,
    ext_args,
    ext_options,
    interpolations,
    option_table,
    processes,
    qualified_names,
    selectors,
)

PROCESSES = processes()
IDS = [p.name for p in PROCESSES]


def check_command(command: Command) -> list[str]:
    """Problems of one command line against its bin/ script (empty: none)."""
    script = REPO / "bin" / command.name
    if not (script.is_file() and os.access(script, os.X_OK)):
        return [f"{command.name}: no executable bin/{command.name}"]
    table = option_table(command.name)
    problems = []
    given = command.options()
    for option, value in given:
        param = table.get(option)
        if param is None:
            problems.append(f"{command.name} has no option {option}")
        elif param.is_flag and value is not None:
            problems.append(f"{command.name} {option} is a flag but gets {value!r}")
        elif not param.is_flag and value is None:
            problems.append(f"{command.name} {option} needs a value")
        elif value == REPEATED and not param.multiple:
            problems.append(f"{command.name} {option} is given once per file but is not repeatable")
    names = {option for option, _ in given}
    for param in table.values():
        if param.required and not names & set(param.opts):
            problems.append(f"{command.name}: required {param.opts[0]} is not given")
    return problems


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_script_commands_match_their_click_commands(process: Process) -> None:
    lines = commands(process.template("script"))
    assert lines, f"{process.name} has no script"
    problems = [p for line in lines for p in check_command(line)]
    assert not problems, f"{process.name}: {problems}"


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_each_process_runs_one_bin_script_and_reports_versions(process: Process) -> None:
    names = [line.name for line in commands(process.template("script"))]
    tools = [n for n in names if n != VERSIONS]
    assert len(tools) == 1 and tools[0].startswith("tssc-"), f"{process.name} runs {names}"
    assert names.count(VERSIONS) == 1, f"{process.name} does not write versions.yml once"
    versions = next(c for c in commands(process.template("script")) if c.name == VERSIONS)
    assert ("--out", "versions.yml") in versions.options()
    assert any(pattern == "versions.yml" for pattern, _, _ in process.outputs())


def _quoted(expression: str) -> bool:
    # shellQuoteAll and optionArgs quote each of a list of staged files
    helpers = ("shellQuote(", "shellQuoteAll(", "optionArg(", "optionArgs(", "stubVersions(")
    return expression in ("args", "options") or expression.startswith(helpers)


@pytest.mark.parametrize("process", PROCESSES, ids=IDS)
def test_every_value_reaching_a_script_is_quoted(process: Process) -> None:
    for section in ("script", "stub"):
        loose = [e for e in interpolations(process.template(section)) if not _quoted(e)]
        assert not loose, f"{process.name} {section}: unquoted {loose}"
        # Options reach the script only through extOptions (quoted) and ext.args.
        groovy = process.groovy(section)
        assert re.findall(r"^\s*def (\w+) =", groovy, re.M) in (
            [],
            ["args"],
            ["options", "args"],
            ["row", "options", "unused", "args"],
        ), groovy
        assert "extOptions(" in groovy or "options" not in groovy
        assert "params." not in groovy and "params." not in process.template(section)


def test_quoting_helpers_escape_single_quotes() -> None:
    text = (REPO / "modules/local/functions.nf").read_text()
    assert """value.toString().replace("'", "'\\\\''")""" in text


QUALIFIED = qualified_names()


def _process_for(selector: str) -> list[Process]:
    """The processes a selector applies to: Nextflow full-matches it against the simple and
    the fully qualified name of each process."""
    return [
        p
        for p in PROCESSES
        if any(re.fullmatch(selector, name) for name in {p.name, *QUALIFIED[p.name]})
    ]


@pytest.mark.parametrize(("path", "selector"), selectors(), ids=[s for _, s in selectors()])
def test_every_selector_applies_to_a_process(path, selector: str) -> None:
    names = sorted({n for p in PROCESSES for n in {p.name, *QUALIFIED[p.name]}})
    for branch in selector.split("|"):  # each alternative on its own: none may be dead
        assert _process_for(branch), (
            f"{path.name}: {branch!r} of {selector!r} matches none of {names}"
        )


def test_every_process_has_a_qualified_name() -> None:
    assert all(QUALIFIED[p.name] for p in PROCESSES), QUALIFIED
    assert "INFERENCE:FILL:ASSEMBLE" in QUALIFIED["ASSEMBLE"]


@pytest.mark.parametrize(
    ("path", "selector", "value"), ext_args(), ids=[f"{s}" for _, s, _ in ext_args()]
)
def test_config_ext_args_are_options_of_the_command(path, selector: str, value: str) -> None:
    for process in _process_for(selector):
        command = next(c for c in commands(process.template("script")) if c.name != VERSIONS)
        given = Command(command.name, value.split(), [])
        problems = [p for p in check_command(given) if "required" not in p]
        assert not problems, f"{path.name} {selector}: {problems}"


@pytest.mark.parametrize(
    ("path", "selector", "names"), ext_options(), ids=[s for _, s, _ in ext_options()]
)
def test_config_ext_options_are_options_of_the_command(path, selector: str, names) -> None:
    for process in _process_for(selector):
        command = next(c for c in commands(process.template("script")) if c.name != VERSIONS)
        assert "options" in command.expressions, f"{process.name} ignores task.ext.options"
        table = option_table(command.name)
        for name in names:
            option = table.get(f"--{name}")
            assert option is not None, f"{path.name} {selector}: {command.name} has no --{name}"
            assert not option.is_flag, f"{path.name} {selector}: --{name} is a flag"


def test_every_process_is_included_and_called() -> None:
    workflows = [REPO / "main.nf", *REPO.glob("workflows/*.nf"), *REPO.glob("subworkflows/**/*.nf")]
    text = "\n".join(p.read_text() for p in workflows)
    for process in PROCESSES:
        assert re.search(rf"include \{{\s*{process.name}\s*\}}", text), process.name
        assert re.search(rf"\b{process.name}\(", text), f"{process.name} is never called"


def test_ext_args_reach_every_script() -> None:
    for process in PROCESSES:
        command = next(c for c in commands(process.template("script")) if c.name != VERSIONS)
        assert "args" in command.expressions, f"{process.name} ignores task.ext.args"


def test_a_repeated_option_must_be_repeatable() -> None:
    given = Command("tssc-interpolate", [], ["optionArgs('--checkpoint', checkpoints)"])
    assert ("--checkpoint", REPEATED) in given.options()
    assert not [p for p in check_command(given) if "--checkpoint" in p]
    once = Command("tssc-interpolate", [], ["optionArgs('--method', methods)"])
    assert "tssc-interpolate --method is given once per file but is not repeatable" in (
        check_command(once)
    )


def test_mode_only_options_reach_only_their_mode() -> None:
    # tssc-prepare refuses --frames-between outside upsample mode and --known-every in it, and
    # the training subjects are prepared in evaluate mode in the same run as an upsample cohort.
    module = (REPO / "modules/local/prepare/main.nf").read_text()
    drop = "def unused = meta.mode == 'upsample' ? ['known-every'] : ['frames-between']"
    assert drop in module
    main = (REPO / "subworkflows/local/utils_tssc_pipeline/main.nf").read_text()
    assert "params.frames_between != null && params.mode != 'upsample'" in main
    assert "params.known_every != null && params.mode == 'upsample'" in main
