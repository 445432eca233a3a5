"""Software versions of one pipeline task, as the ``versions.yml`` every Nextflow process emits.

The record names the software that decides a task's numbers: this package, Python, torch and
the CUDA version torch was built for, and the libraries the steps compute with. Every task
writes one, so nothing here imports torch (about 1.5 s a task on a CPU): versions come from the
installed packages' metadata, torch's CUDA build from its ``torch/version.py`` read as text.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import platform
from collections.abc import Mapping
from pathlib import Path

from tssc_py import __version__
from tssc_py.atomic import atomic_path

LIBRARIES = ("numpy", "nibabel", "SimpleITK", "monai", "ptwt", "mamba-ssm")
"""The libraries reported besides torch; ``none`` for one not installed (mamba-ssm on CPUs)."""


def _installed(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def torch_build() -> dict[str, str]:
    """torch's version and the CUDA version it was built for (``none`` for a CPU build, or
    where torch is not installed), read from ``torch/version.py`` without importing torch."""
    found = {"torch": "none", "cuda": "none"}
    try:
        source = importlib.metadata.distribution("torch").locate_file("torch/version.py")
        tree = ast.parse(Path(str(source)).read_text())
    except (importlib.metadata.PackageNotFoundError, OSError, SyntaxError):
        return found
    names = {"__version__": "torch", "cuda": "cuda"}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id in names and value is not None:
            literal = ast.literal_eval(value)
            found[names[target.id]] = str(literal) if literal else "none"
    return found


def software_versions() -> dict[str, str]:
    """Versions of this package, Python, torch (and its CUDA build) and :data:`LIBRARIES`."""
    return {
        "tssc": __version__,
        "python": platform.python_version(),
        **torch_build(),
        **{name: _installed(name) for name in LIBRARIES},
    }


def versions_yaml(process: str, versions: Mapping[str, str]) -> str:
    """nf-core's ``versions.yml`` layout: the process name, then one ``tool: version`` a line.

    Every scalar is written as a JSON string, which YAML reads as a double-quoted string, so
    names with ``:`` and versions such as ``12.10`` stay strings.
    """
    lines = [f"{json.dumps(process)}:"]
    lines += [f"    {key}: {json.dumps(value)}" for key, value in versions.items()]
    return "\n".join(lines) + "\n"


def write_versions(process: str, out: Path, overwrite: bool = False) -> Path:
    """Write the ``versions.yml`` of ``process`` to ``out``."""
    text = versions_yaml(process, software_versions())
    with atomic_path(out, overwrite) as tmp:
        tmp.write_text(text)
    return Path(out)
