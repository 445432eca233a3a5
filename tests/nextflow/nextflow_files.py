"""Reading the pipeline's Nextflow files from Python: processes, their sections and commands.

The real runs (tests/nextflow/test_pipeline_*.py) show what the pipeline does; these readers let
the contract tests check what a run cannot reach in minutes: every option of every command a
process may be given, for every value of the params. reftrace parses the files and gives each
process's directives; what it does not expose (sections, commands) is read here.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[2]
NF_FILES = sorted(
    [
        REPO / "main.nf",
        *REPO.glob("workflows/*.nf"),
        *REPO.glob("subworkflows/**/*.nf"),
        *REPO.glob("modules/**/*.nf"),
    ]
)
CONFIG_FILES = [REPO / "nextflow.config", *sorted(REPO.glob("conf/*.config"))]
SECTIONS = ("input", "output", "when", "script", "shell", "exec", "stub")
VERSIONS = "tssc-versions"


def _skip_string(text: str, i: int) -> int:
    """Index just past the string literal starting at ``text[i]`` (', ", ''' or \"\"\")."""
    quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else text[i]
    j = i + len(quote)
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text.startswith(quote, j):
            return j + len(quote)
        j += 1
    raise ValueError(f"unterminated string at offset {i}")


def matching_brace(text: str, start: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``start``, skipping strings and comments."""
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char in "'\"":
            i = _skip_string(text, i)
            continue
        if text.startswith("//", i):
            i = text.index("\n", i)
            continue
        if text.startswith("/*", i):
            i = text.index("*/", i) + 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"no closing brace for offset {start}")


def interpolations(template: str) -> list[str]:
    """The Groovy expressions of every ``${...}`` in a GString template, outermost only."""
    found = []
    i = template.find("${")
    while i != -1:
        end = matching_brace(template, i + 1)
        found.append(template[i + 2 : end])
        i = template.find("${", end)
    return found


def _replace_interpolations(template: str, replace) -> str:
    out, i = [], 0
    start = template.find("${", i)
    while start != -1:
        end = matching_brace(template, start + 1)
        out.append(template[i:start])
        out.append(replace(template[start + 2 : end]))
        i = end + 1
        start = template.find("${", i)
    out.append(template[i:])
    return "".join(out)


@dataclass
class Command:
    """One command line of a script or stub block."""

    name: str
    words: list[str]  # after the command; interpolations appear as «expr»
    expressions: list[str]

    def options(self) -> list[tuple[str, str | None]]:
        """Every ``--option`` with its literal value word (None: a flag or an interpolation).

        Options inside ``optionArg('--x', ...)`` count as options with a value, those inside
        ``optionArgs('--x', ...)`` (once per file) as :data:`REPEATED` values.
        """
        found: list[tuple[str, str | None]] = []
        for k, word in enumerate(self.words):
            if word.startswith("--"):
                nxt = self.words[k + 1] if k + 1 < len(self.words) else None
                takes = nxt is not None and not nxt.startswith("--") and not _is_option_expr(nxt)
                found.append((word, nxt if takes else None))
        for expr in self.expressions:
            match = re.match(r"(optionArgs?)\('(--[a-z0-9-]+)'", expr)
            if match:
                value = REPEATED if match.group(1) == "optionArgs" else "«value»"
                found.append((match.group(2), value))
        return found


REPEATED = "«values»"
"""The value of an option given once per file (``optionArgs``): the option must be repeatable."""


def _is_option_expr(word: str) -> bool:
    return word.startswith(("«optionArg(", "«optionArgs(")) or word in ("«args»", "«options»")


def commands(template: str) -> list[Command]:
    """The command lines of a process template (``\\`` continuations joined)."""
    expressions: list[str] = []

    def mark(expr: str) -> str:
        expressions.append(expr)
        return f"«{len(expressions) - 1}»"

    marked = _replace_interpolations(template, mark)
    logical = re.sub(r"\\\\\n", " ", marked)
    result = []
    for line in logical.splitlines():
        if not line.strip():
            continue
        words = shlex.split(line, posix=True)
        index = [int(n) for n in re.findall(r"«(\d+)»", line)]
        exprs = [expressions[n] for n in index]
        words = [
            re.sub(r"«(\d+)»", lambda m: f"«{expressions[int(m.group(1))]}»", w) for w in words
        ]
        result.append(Command(words[0], words[1:], exprs))
    return result


@dataclass
class Process:
    """A process definition: its file, name, directives text and sections."""

    path: Path
    name: str
    directives: str
    sections: dict[str, str] = field(default_factory=dict)

    def template(self, section: str) -> str:
        """The triple-quoted shell template of ``script`` or ``stub``."""
        body = self.sections.get(section, "")
        match = re.search(r'"""(.*?)"""', body, re.S)
        return match.group(1) if match else ""

    def groovy(self, section: str) -> str:
        """The Groovy statements of a section before its template (e.g. ``def args = ...``)."""
        return self.sections.get(section, "").split('"""')[0]

    def outputs(self) -> list[tuple[str, str | None, bool]]:
        """Declared output files: (pattern, emit name, is a folder)."""
        found = []
        for line in self.sections.get("output", "").splitlines():
            for match in re.finditer(r"""path\(?\s*("([^"]*)"|'([^']*)')([^)\n]*)""", line):
                pattern = match.group(2) if match.group(2) is not None else match.group(3)
                emit = re.search(r"emit:\s*(\w+)", line)
                folder = "type: 'dir'" in match.group(4) or "type: 'dir'" in line
                found.append((pattern, emit.group(1) if emit else None, folder))
        return found


def processes(paths: list[Path] = NF_FILES) -> list[Process]:
    """Every process of the given .nf files (default: all of the pipeline's)."""
    found = []
    for path in paths:
        text = path.read_text()
        for match in re.finditer(r"^process\s+(\w+)\s*\{", text, re.M):
            body = text[match.end() : matching_brace(text, match.end() - 1)]
            parts = re.split(rf"^\s*({'|'.join(SECTIONS)}):\s*$", body, flags=re.M)
            sections = {parts[k]: parts[k + 1] for k in range(1, len(parts) - 1, 2)}
            found.append(Process(path, match.group(1), parts[0], sections))
    return found


class Expression(str):
    """A param default that Nextflow computes (e.g. ``new java.util.Date().format(...)``)."""


def config_params(path: Path = REPO / "nextflow.config") -> dict[str, object]:
    """The ``params { }`` defaults of a config file (null, booleans, numbers, strings, and
    :class:`Expression` for any other expression)."""
    text = path.read_text()
    match = re.search(r"^params\s*\{", text, re.M)
    if match is None:
        return {}
    block = text[match.end() : matching_brace(text, match.end() - 1)]
    values: dict[str, object] = {}
    for name, raw in re.findall(r"^\s*(\w+)\s*=\s*(.+?)\s*$", block, re.M):
        values[name] = _literal(raw)
    return values


def _literal(raw: str) -> object:
    if raw == "null":
        return None
    if raw in ("true", "false"):
        return raw == "true"
    if raw[0] in "'\"":
        return raw[1:-1]
    if re.fullmatch(r"-?\d+(\.\d+)?", raw):
        return float(raw) if "." in raw else int(raw)
    return Expression(raw)


INCLUDE = re.compile(r"include\s*\{([^}]*)\}\s*from\s*'([^']+)'")


def _include_target(path: Path, source: str) -> Path:
    """The file an ``include ... from 'source'`` in ``path`` reads (Nextflow's resolution)."""
    target = (path.parent / source).resolve()
    if target.is_dir():
        return target / "main.nf"
    return target if target.suffix == ".nf" else target.with_suffix(".nf")


def qualified_names() -> dict[str, set[str]]:
    """Each process's fully qualified names (``WORKFLOW:SUBWORKFLOW:PROCESS``), as Nextflow
    forms them from the includes below the unnamed entry workflow of main.nf.
    """
    known = {p.name for p in processes()}
    names: dict[str, set[str]] = {name: set() for name in known}

    def walk(path: Path, prefix: str) -> None:
        for items, source in INCLUDE.findall(path.read_text()):
            if source.startswith("plugin/"):
                continue
            target = _include_target(path, source)
            for item in items.split(";"):
                name = item.split(" as ")[-1].strip()
                if name in known:
                    names[name].add(prefix + name)
                elif re.search(rf"^workflow\s+{name}\b", target.read_text(), re.M):
                    walk(target, f"{prefix}{name}:")

    walk(REPO / "main.nf", "")
    return names


def selectors() -> list[tuple[Path, str]]:
    """Every ``withName`` selector of the configs: (file, pattern)."""
    return [
        (path, match)
        for path in CONFIG_FILES
        for match in re.findall(r"withName:\s*'([^']+)'", path.read_text())
    ]


def ext_args() -> list[tuple[Path, str, str]]:
    """Every ``ext.args = '...'`` of the configs: (file, withName selector, value)."""
    found = []
    for path in CONFIG_FILES:
        text = path.read_text()
        for match in re.finditer(r"withName:\s*'([^']+)'\s*\{", text):
            block = text[match.end() : matching_brace(text, match.end() - 1)]
            for value in re.findall(r"ext\.args\s*=\s*'([^']*)'", block):
                found.append((path, match.group(1), value))
    return found


def ext_options() -> list[tuple[Path, str, list[str]]]:
    """Every ``ext.options = { [name: value, ...] }`` of the configs: (file, withName selector,
    the option names)."""
    found = []
    for path in CONFIG_FILES:
        text = path.read_text()
        for match in re.finditer(r"withName:\s*'([^']+)'\s*\{", text):
            block = text[match.end() : matching_brace(text, match.end() - 1)]
            start = block.find("ext.options")
            if start == -1:
                continue
            brace = block.index("{", start)
            body = block[brace : matching_brace(block, brace) + 1]
            names = re.findall(r"(?:\[|,)\s*(?:'([a-z0-9-]+)'|([a-z0-9]+))\s*:", body)
            found.append((path, match.group(1), [a or b for a, b in names]))
    return found


@cache
def click_command(name: str) -> click.Command:
    """The click command object of ``bin/NAME``, loaded from the script file."""
    path = REPO / "bin" / name
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module.main


def option_table(name: str) -> dict[str, click.Option]:
    """Every spelling of every option (``--x``, ``--no-x``) of ``bin/NAME`` -> its click option."""
    table = {}
    for param in click_command(name).params:
        if isinstance(param, click.Option):
            for spelling in [*param.opts, *param.secondary_opts]:
                table[spelling] = param
    return table
