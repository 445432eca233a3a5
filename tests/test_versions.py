"""tssc-versions: the versions.yml every Nextflow process emits."""

from __future__ import annotations

import json

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


def test_versions_name_package_torch_cuda_and_backend_on_the_cpu() -> None:
    found = software_versions("cpu")
    assert found["tssc"] == __version__
    assert found["torch"] == torch.__version__
    assert found["cuda"] == (torch.version.cuda or "none")
    assert found["gpu"] == "none"
    assert found["ssm_backend"] == "torch"


def test_yaml_keeps_process_names_and_versions_as_strings() -> None:
    text = versions_yaml("TRAINING:FILL:INTERPOLATE", {"cuda": "12.10", "tssc": "0.1.0"})
    assert text.splitlines()[1] == '    cuda: "12.10"'
    assert _parse(text) == {"TRAINING:FILL:INTERPOLATE": {"cuda": "12.10", "tssc": "0.1.0"}}


def test_script_writes_versions_once(tmp_path) -> None:
    out = tmp_path / "versions.yml"
    run_cli("tssc-versions", "--process", "INFERENCE:PREPARE", "--out", out, "--device", "cpu")
    assert _parse(out.read_text()) == {"INFERENCE:PREPARE": software_versions("cpu")}
    again = run_cli("tssc-versions", "--process", "X", "--out", out, check=False)
    assert_one_line_error(again, "output exists")
