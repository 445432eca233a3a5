"""The GPU profiles: which files each includes, and what follows the `accelerator` request."""

from __future__ import annotations

import re

from tests.nextflow.nextflow_files import REPO, matching_brace

CONFIG = (REPO / "nextflow.config").read_text()
GPU = (REPO / "conf/gpu.config").read_text()
GPU_LOCAL = (REPO / "conf/gpu_local.config").read_text()
LOCAL = (REPO / "conf/local.config").read_text()


def _profile(name: str) -> str:
    match = re.search(rf"^    {name}\s*\{{", CONFIG, re.M)
    assert match is not None, name
    return CONFIG[match.end() : matching_brace(CONFIG, match.end() - 1)]


def _includes(name: str) -> list[str]:
    return re.findall(r"includeConfig '([^']+)'", _profile(name))


def test_only_the_one_machine_profiles_cap_resources_at_the_machine() -> None:
    assert _includes("standard") == ["conf/local.config"]
    assert _includes("gpu") == ["conf/gpu.config", "conf/local.config", "conf/gpu_local.config"]
    assert _includes("slurm_gpu") == ["conf/gpu.config", "conf/slurm_gpu.config"]
    assert "resourceLimits" not in GPU + (REPO / "conf/slurm_gpu.config").read_text()
    limits = re.search(r"resourceLimits = \[(.*?)\n    \]", LOCAL, re.S)
    assert limits is not None
    assert "cpus  : nextflow.util.SysHelper.getAvailCpus()" in limits.group(1)
    assert "memory: nextflow.util.SysHelper.getAvailMemory()" in limits.group(1)
    # the local executor names each GPU task's GPU in CUDA_VISIBLE_DEVICES; Docker drops it
    assert "docker.envWhitelist = 'CUDA_VISIBLE_DEVICES'" in GPU_LOCAL


def _directive(name: str) -> str:
    match = re.search(rf"^\s*{name}\s*=\s*(\{{.*\}})\s*$", GPU, re.M)
    assert match is not None, name
    return match.group(1)


def test_container_gpu_option_and_memory_follow_the_accelerator_request() -> None:
    # One condition decides whether a task is a GPU task: the accelerator request (0 for the
    # INTERPOLATE tasks of --cpu_methods); the container option and memory read it.
    assert "params.cpu_methods" in _directive("accelerator")
    for name in ("containerOptions", "memory"):
        closure = _directive(name)
        assert "task.accelerator?.request" in closure, name
        assert "cpu_methods" not in closure, name
    options = _directive("containerOptions")
    assert options.startswith("{ !task.accelerator?.request ? '' :")
    assert "'--nv'" in options and "'--gpus all'" in options
