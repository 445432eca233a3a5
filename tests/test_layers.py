"""The package's layers follow the data flow: every import of tssc_py points down (read from the
code's syntax trees, so imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tssc_py"

# Core data and what every layer shares: I/O, preparation and its inverse, slice chunks, the
# slice-sequence dataset, devices, checkpoints, training runs, the metrics the trainers
# validate with, run-folder names.
CORE = {
    "tssc_py",
    "atomic",
    "checkpoint",
    "command",
    "device",
    "errors",
    "io",
    "memory",
    "metrics",
    "motion",
    "names",
    "prepare",
    "runs",
    "samplesheet",
    "sequences",
    "signals",
    "slices",
    "synth",
    "training",
    "versions",
}
MODELS = {"stage1", "stage2", "baselines"}
ORCHESTRATION = {"cli", "pipeline", "refinement", "schema"}
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    # Each model knows nothing of the others.
    **{model: {"core", model} for model in MODELS},
    "methods": {"core", "methods", *MODELS},
    # The report reads run folders: it runs no model.
    "report": {"core"},
    "orchestration": {"core", "methods", "report", "orchestration", *MODELS},
}


def layer(module: str) -> str:
    """The layer of a dotted module name under tssc_py."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "tssc_py"
    if top in CORE:
        return "core"
    if top in MODELS or top == "methods" or top == "report":
        return top
    if top in ORCHESTRATION:
        return "orchestration"
    raise AssertionError(f"{module}: in no layer; add it to one in this test")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """The tssc_py modules ``path`` imports (``from tssc_py.x import y``: ``tssc_py.x``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name == "tssc_py" or name.startswith("tssc_py.")}


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE.parent)))
def test_imports_point_down(path: Path) -> None:
    own = layer(module_name(path))
    crossings = sorted(
        f"{module_name(path)} imports {name} ({layer(name)})"
        for name in imported(path)
        if layer(name) not in ALLOWED[own]
    )
    assert not crossings


def test_the_rule_sees_a_crossing(tmp_path: Path) -> None:
    # The crossings this rule was written against, as a module would write them.
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from tssc_py.stage1 import DEVICES\n")
    assert imported(source) == {"tssc_py.stage1"}
    assert layer("tssc_py.stage1") not in ALLOWED[layer("tssc_py.device")]
    assert layer("tssc_py.stage2") not in ALLOWED[layer("tssc_py.report")]
    assert layer("tssc_py.methods.diffusion") not in ALLOWED[layer("tssc_py.stage2.train")]
    assert layer("tssc_py.stage1.data") not in ALLOWED[layer("tssc_py.baselines.train")]
    assert layer("tssc_py.pipeline") not in ALLOWED[layer("tssc_py.runs")]
