"""tssc-versions: the versions.yml every Nextflow process emits."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy
import torch

from tests.conftest import assert_one_line_error, run_cli
from tssc_py import __version__
from tssc_py.versions import software_versions, versions_yaml


def _parse(text: str) -> dict[str, dict[str, str]]:
    """The two-level YAML mapping tssc writes (JSON-quoted scalars)."""
    lines = text.splitlines()
    process = json.loads(lines[0].removesuffix(":"))
    tools = {}
    for line in lines[1:]:
        assert line.startswith("    ")
        key, value = line.strip().split(": ", 1)
        tools[key] = json.loads(value)
    return {process: tools}


def test_versions_name_package_torch_and_its_cuda_build_without_importing_torch() -> None:
    found = software_versions()
    assert found["tssc"] == __version__
    assert found["torch"] == torch.__version__
    assert found["cuda"] == (torch.version.cuda or "none")
    assert found["numpy"] == numpy.__version__
    assert found["mamba-ssm"] == "none"  # not installable without CUDA
    code = "import sys, tssc_py.versions as v; v.software_versions(); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_yaml_keeps_process_names_and_versions_as_strings() -> None:
    text = versions_yaml("TRAINING:FILL:INTERPOLATE", {"cuda": "12.10", "tssc": "0.1.0"})
    assert text.splitlines()[1] == '    cuda: "12.10"'
    assert _parse(text) == {"TRAINING:FILL:INTERPOLATE": {"cuda": "12.10", "tssc": "0.1.0"}}


def test_script_writes_versions_once(tmp_path) -> None:
    out = tmp_path / "versions.yml"
    run_cli("tssc-versions", "--process", "INFERENCE:PREPARE", "--out", out)
    assert _parse(out.read_text()) == {"INFERENCE:PREPARE": software_versions()}
    again = run_cli("tssc-versions", "--process", "X", "--out", out, check=False)
    assert_one_line_error(again, "output exists")
