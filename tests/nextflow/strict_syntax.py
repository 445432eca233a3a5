"""Static checks for Nextflow's strict syntax parser (NXF_SYNTAX_PARSER=v2, the default since
Nextflow 26.04), for code that must also stay valid for the legacy parser (v1).

Nextflow 25.04.4 (``make nextflow``) cannot check this: its v2 parser stops at a bug of its own
(a module included from two workflows has its functions "already defined"; fixed in
25.12.0-edge), and its ``nextflow lint`` fails on any file with a warning (its nf-lang is
25.04.0, the only one on Maven Central). So these checks read the files as text. They cover the
rules of https://nextflow.io/docs/latest/strict-syntax.html that this pipeline could break:
config files hold only assignments, blocks and includes (statements only inside closures,
closures only in the process scope, no settings read as variables), scripts hold only
declarations, and the removed or deprecated script syntax (loops, switch, imports, soft casts,
typed declarations, interpolated slashy strings, ``it``, ``Channel.``, ``shell:``,
``addParams``, unquoted ``env`` names, ``nextflow.enable.dsl``, workflow handlers outside the
entry workflow).
Each check
returns ``(line, problem)`` pairs; an empty list means the text passes.
"""

from __future__ import annotations

import re

# Config scopes whose settings the strict parser refuses to read as variables outside
# closures (only params can be referenced); inside process closures `workflow` and `task` are
# the runtime objects, not settings.
CONFIG_SCOPES = (
    "apptainer",
    "dag",
    "docker",
    "executor",
    "manifest",
    "plugins",
    "process",
    "profiles",
    "report",
    "singularity",
    "timeline",
    "trace",
    "validation",
    "workflow",
)


def mask(text: str) -> str:
    """``text`` with comments blanked and string contents replaced by ``x`` (same length and
    line breaks), so that braces and keywords inside them do not count."""
    out = list(text)
    i = 0
    n = len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j == -1 else j
            out[i:j] = " " * (j - i)
            i = j
        elif text.startswith("/*", i):
            j = text.index("*/", i) + 2
            out[i:j] = [c if c == "\n" else " " for c in text[i:j]]
            i = j
        elif text[i] in "'\"":
            quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else text[i]
            j = i + len(quote)
            while not text.startswith(quote, j):
                j += 2 if text[j] == "\\" else 1
            for k in range(i + len(quote), j):
                if out[k] != "\n":
                    out[k] = "x"
            i = j + len(quote)
        else:
            i += 1
    return "".join(out)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _close(masked: str, start: int) -> int:
    """Index of the bracket closing the one at ``start`` (in masked text)."""
    pairs = {"{": "}", "[": "]", "(": ")"}
    stack = []
    for i in range(start, len(masked)):
        char = masked[i]
        if char in pairs:
            stack.append(pairs[char])
        elif char in ")]}":
            if not stack or stack.pop() != char:
                raise ValueError(f"unbalanced {char!r} at offset {i}")
            if not stack:
                return i
    raise ValueError(f"no closing bracket for offset {start}")


def _expression_end(masked: str, start: int) -> int:
    """End of an expression starting at ``start``: the first line break outside brackets."""
    i = start
    while i < len(masked):
        char = masked[i]
        if char in "{[(":
            i = _close(masked, i) + 1
            continue
        if char == "\n":
            return i
        i += 1
    return i


# -- config files ----------------------------------------------------------------------------

_SELECTOR = re.compile(r"(withLabel|withName)\s*:\s*(?:'[^']*'|\"[^\"]*\"|[\w!|]+)\s*\{")
_BLOCK = re.compile(r"([A-Za-z_][\w.]*)\s*\{")
_ASSIGN = re.compile(r"([A-Za-z_][\w.]*)\s*=(?!=)\s*")
_INCLUDE = re.compile(r"includeConfig\b")
_PLUGIN = re.compile(r"id\s+'[^']*'")


def config_problems(text: str) -> list[tuple[int, str]]:
    """Strict-parser problems of a config file."""
    masked = mask(text)
    problems: list[tuple[int, str]] = []
    _config_block(text, masked, 0, len(masked), [], problems)
    return problems


def _config_block(
    text: str, masked: str, start: int, end: int, scopes: list[str], problems: list
) -> None:
    i = start
    while i < end:
        while i < end and masked[i].isspace():
            i += 1
        if i >= end:
            return
        rest = masked[i:end]
        if match := _SELECTOR.match(rest):
            body = i + match.end() - 1
            close = _close(masked, body)
            _config_block(text, masked, body + 1, close, [*scopes, match.group(1)], problems)
            i = close + 1
        elif match := _INCLUDE.match(rest):
            i = _expression_end(masked, i + match.end())
        elif scopes[-1:] == ["plugins"] and (match := _PLUGIN.match(rest)):
            i += match.end()
        elif match := _ASSIGN.match(rest):
            names = [*scopes, *match.group(1).split(".")]
            value = i + match.end()
            i = _expression_end(masked, value)
            _config_value(text, masked, value, i, names, problems)
        elif match := _BLOCK.match(rest):
            body = i + match.end() - 1
            close = _close(masked, body)
            names = [*scopes, *match.group(1).split(".")]
            _config_block(text, masked, body + 1, close, names, problems)
            i = close + 1
        else:
            statement = masked[i : _expression_end(masked, i)].strip()
            problems.append(
                (
                    _line(text, i),
                    f"statement outside a closure ({statement[:40]!r}): a config file holds "
                    "only assignments, blocks and includes",
                )
            )
            i = _expression_end(masked, i)


def _setting_scopes(names: list[str]) -> list[str]:
    """The setting's scopes, without ``profiles.NAME``."""
    return names[2:] if names[:1] == ["profiles"] else names


def _config_value(
    text: str, masked: str, start: int, end: int, names: list[str], problems: list
) -> None:
    value = masked[start:end]
    scopes = _setting_scopes(names)
    if value.startswith("{"):
        handler = scopes[:1] == ["workflow"] and scopes[-1] in ("onComplete", "onError")
        if scopes[:1] != ["process"] and not handler:
            problems.append(
                (
                    _line(text, start),
                    f"{'.'.join(scopes)}: a closure outside the process scope",
                )
            )
        return
    for match in re.finditer(r"(?<![\w.$])([a-z]\w*)\s*\.\s*[A-Za-z_]", value):
        if match.group(1) in CONFIG_SCOPES:
            problems.append(
                (
                    _line(text, start + match.start()),
                    f"{'.'.join(scopes)}: reads the setting scope {match.group(1)!r} as a "
                    "variable (only params can be referenced)",
                )
            )
    for match in re.finditer(r"\$\{\s*([a-z]\w*)\s*\.", text[start:end]):
        if match.group(1) in CONFIG_SCOPES:
            problems.append(
                (
                    _line(text, start),
                    f"{'.'.join(scopes)}: reads the setting scope {match.group(1)!r} in a "
                    "string (only params can be referenced)",
                )
            )


# -- script files ----------------------------------------------------------------------------

_DECLARATIONS = (
    re.compile(r"#!.*"),
    re.compile(r"include\s*\{[^}]*\}\s*from\s*'x*'"),
    re.compile(r"nextflow\.(enable|preview)\.\w+\s*=\s*[^\n]+"),
    re.compile(r"params\.\w+\s*=\s*[^\n]+"),
)
_BODIES = (
    re.compile(r"workflow(\s+\w+)?\s*\{"),
    re.compile(r"process\s+\w+\s*\{"),
    re.compile(r"def\s+\w+\s*\([^)]*\)\s*\{"),
    re.compile(r"(output|params)\s*\{"),
    re.compile(r"(enum|record)\s+\w+\s*\{"),
)

_SCRIPT_RULES = (
    (re.compile(r"\bnextflow\.enable\.dsl\b"), "nextflow.enable.dsl is deprecated (DSL2 only)"),
    (re.compile(r"\bChannel\s*\."), "Channel.xxx is deprecated: use channel.xxx"),
    (re.compile(r"(?<![\w.$])it(?![\w$])"), "implicit closure parameter `it`: name it"),
    (re.compile(r"^\s*(for|while)\s*\(", re.M), "for/while loops are not supported"),
    (re.compile(r"^\s*switch\s*\(", re.M), "switch statements are not supported"),
    (re.compile(r"^\s*import\s", re.M), "import declarations are not supported"),
    (re.compile(r"^\s*shell\s*:", re.M), "the shell: section is deprecated: use script:"),
    (re.compile(r"\baddParams\b|\}\s*from\s*'x*'\s*params\s*\("), "include addParams/params"),
    (re.compile(r"^\s*env\s+[A-Za-z_]", re.M), "env input/output names must be quoted"),
    (re.compile(r"\+\+|--"), "++/-- are not supported: use += 1 / -= 1"),
    (re.compile(r"[\[(,]\s*\*\s*[A-Za-z_]"), "spread operator *list: list the elements"),
    (re.compile(r"^\s*(final|static)\s", re.M), "declare variables with def"),
    (
        re.compile(r"^\s*(def\s+)?[A-Z]\w*(<[^>]*>)?\s+[a-z]\w*\s*=(?!=)", re.M),
        "typed declaration: use def (valid for both parsers)",
    ),
    (
        re.compile(r"\bdef\s+\(?[a-z]\w*\s*:\s*[A-Z]"),
        "Nextflow-style type annotations need the strict parser (25.10+); the legacy one "
        "cannot parse them",
    ),
    (
        re.compile(r"\bdef\s+\w+\s*\([^)]*\b[A-Z]\w*(<[^>]*>)?\s+[a-z]\w*"),
        "typed function parameter: leave it untyped (valid for both parsers)",
    ),
    (
        re.compile(r"(?<![\w)\]])\(\s*[A-Z]\w*(\.\w+)*\s*\)\s*[\w(\[]"),
        "soft cast (Type) value: use `value as Type`",
    ),
)


def script_problems(text: str) -> list[tuple[int, str]]:
    """Strict-parser problems of a .nf script (a module, workflow or the main script)."""
    masked = mask(text)
    problems = [
        (_line(text, match.start()), message)
        for pattern, message in _SCRIPT_RULES
        for match in pattern.finditer(masked)
    ]
    for match in re.finditer(r"[(,=~]\s*/(?![/*])([^/\n]*)/", masked):
        if "$" in match.group(1):
            problems.append((_line(text, match.start()), "interpolated slashy string"))
    problems += _top_level_problems(text, masked)
    return problems


def _top_level_problems(text: str, masked: str) -> list[tuple[int, str]]:
    """Statements mixed with declarations at the top level of a script."""
    problems = []
    i = 0
    while i < len(masked):
        while i < len(masked) and masked[i].isspace():
            i += 1
        if i >= len(masked):
            break
        rest = masked[i:]
        if body := next((b.match(rest) for b in _BODIES if b.match(rest)), None):
            i = _close(masked, i + body.end() - 1) + 1
        elif declaration := next((d.match(rest) for d in _DECLARATIONS if d.match(rest)), None):
            i += declaration.end()
        else:
            end = _expression_end(masked, i)
            problems.append(
                (
                    _line(text, i),
                    f"top-level statement {masked[i:end].strip()[:40]!r} among declarations",
                )
            )
            i = end
    return problems
