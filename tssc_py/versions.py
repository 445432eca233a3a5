"""Software versions of one pipeline task, as the ``versions.yml`` every Nextflow process emits.

The record names what decides a task's numbers: this package, Python, torch, the CUDA build of
torch, the GPU the task saw and the state-space backend stage 2 would run on that device.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping
from pathlib import Path

import torch

from tssc_py import __version__
from tssc_py.atomic import atomic_path
from tssc_py.device import resolve_device
from tssc_py.stage2.ssm import resolve_backend


def software_versions(device: str = "auto") -> dict[str, str]:
    """Versions and runtime facts of this process on ``device`` (``auto``, ``cpu``, ``cuda``)."""
    where = resolve_device(device)
    return {
        "tssc": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "gpu": torch.cuda.get_device_name(where) if where.type == "cuda" else "none",
        "ssm_backend": resolve_backend("auto", where),
    }


def versions_yaml(process: str, versions: Mapping[str, str]) -> str:
    """nf-core's ``versions.yml`` layout: the process name, then one ``tool: version`` a line.

    Every scalar is written as a JSON string, which YAML reads as a double-quoted string, so
    names with ``:`` and versions such as ``12.10`` stay strings.
    """
    lines = [f"{json.dumps(process)}:"]
    lines += [f"    {key}: {json.dumps(value)}" for key, value in versions.items()]
    return "\n".join(lines) + "\n"


def write_versions(process: str, out: Path, device: str = "auto", overwrite: bool = False) -> Path:
    """Write the ``versions.yml`` of ``process`` to ``out``."""
    text = versions_yaml(process, software_versions(device))
    with atomic_path(out, overwrite) as tmp:
        tmp.write_text(text)
    return Path(out)
