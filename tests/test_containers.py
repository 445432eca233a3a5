"""The image recipes: one torch for both, one that every dependency accepts.

pip would otherwise replace the pinned torch while installing the package (MONAI 1.6 needs torch
2.8), leaving the mamba-ssm kernels compiled against a torch that is no longer there.
"""

from __future__ import annotations

import re
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "containers/Dockerfile").read_text()
DEFINITION = (REPO / "containers/tssc.def").read_text()


def _torch_pins() -> tuple[str, str]:
    docker = re.search(r"^ARG TORCH_VERSION=(\S+)$", DOCKERFILE, re.MULTILINE)
    apptainer = set(re.findall(r"torch==([0-9][^\s\\']*)", DEFINITION))
    assert docker and len(apptainer) == 1
    return docker.group(1), apptainer.pop()


def test_both_recipes_pin_the_same_torch_and_mamba_ssm() -> None:
    docker, apptainer = _torch_pins()
    assert docker == apptainer
    mamba_docker = re.search(r"^ARG MAMBA_SSM_VERSION=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert mamba_docker and f"mamba-ssm=={mamba_docker.group(1)}" in DEFINITION
    cuda = re.search(r"^ARG CUDA_VERSION=(\S+)$", DOCKERFILE, re.MULTILINE)
    assert cuda and DEFINITION.count(f"nvidia/cuda:{cuda.group(1)}-") == 2


def test_pinned_torch_satisfies_every_requirement() -> None:
    torch = Version(_torch_pins()[0])
    # The project's own (from pyproject.toml: the checkout may run uninstalled) and its installed
    # dependencies' torch requirements (monai's: torch>=2.8.0).
    pyproject = (REPO / "pyproject.toml").read_text()
    specs = [Requirement(r) for r in re.findall(r'^\s*"(torch[<>=!~,.0-9]*)"', pyproject, re.M)]
    assert len(specs) == 1
    for dist in ("monai", "ptwt", "pytorch-msssim"):
        specs += [Requirement(r) for r in requires(dist) or [] if Requirement(r).name == "torch"]
    for spec in specs:
        if spec.marker is None or spec.marker.evaluate({"extra": ""}):
            assert spec.specifier.contains(torch), f"torch {torch} breaks {spec}"


def test_installs_are_held_to_the_pinned_torch() -> None:
    for recipe in (DOCKERFILE, DEFINITION):
        installs = [
            line
            for line in recipe.splitlines()
            if re.search(r"pip install .*(mamba-ssm|/src)", line)
        ]
        assert installs and all("-c /opt/constraints.txt" in line for line in installs)
        assert "transformers<5" in recipe
