"""The two state-space backends agree on a GPU: pure-PyTorch scan vs mamba_ssm's fused kernel.

Skipped where CUDA or ``mamba_ssm`` is missing (CI, CPU workstations); run on a GPU machine
with ``pytest tests/stage2/test_ssm_cuda.py``. The measured differences are in
benchmarks/RESULTS.md (stage-2 speed section).
"""

from __future__ import annotations

import pytest
import torch

from tests.stage2.test_ssm import _inputs
from tssc_py.device import autocast
from tssc_py.stage2.model import build_refine
from tssc_py.stage2.ssm import Mamba, mamba_ssm_available, selective_scan_torch

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and mamba_ssm_available()),
    reason="needs a CUDA GPU and an importable mamba_ssm",
)
CUDA = torch.device("cuda")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 difference of ``a`` from the reference ``b`` (0 when both are zero)."""
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("length", [1, 7, 64, 1000, 4096, 65536])
def test_torch_scan_equals_fused_kernel(length: int) -> None:
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    kw = {k: v.to(CUDA) for k, v in _inputs(length, d=64, n=16, seed=length).items()}
    names = list(kw)
    results = []
    for fn in (selective_scan_torch, selective_scan_fn):
        leaves = {k: v.clone().requires_grad_(True) for k, v in kw.items()}
        out = fn(**leaves, delta_softplus=True)
        weights = torch.linspace(-1, 1, out.numel(), device=CUDA).reshape(out.shape)
        (out * weights).sum().backward()
        results.append((out.detach(), [leaves[k].grad for k in names]))
    (ours, our_grads), (fused, fused_grads) = results
    assert _relative(ours, fused) < 1e-5
    for name, a, b in zip(names, our_grads, fused_grads, strict=True):
        # Gradients summed over the whole sequence (A, D, delta_bias) accumulate in another
        # order in the kernel; per-element ones agree to float32 rounding.
        assert _relative(a, b) < 1e-4, (name, _relative(a, b))


def test_layer_loads_into_mamba_ssm_module_and_back() -> None:
    from mamba_ssm import Mamba as FusedMamba

    torch.manual_seed(0)
    ours = Mamba(d_model=48, d_state=16, backend="torch").to(CUDA)
    theirs = FusedMamba(d_model=48, d_state=16, d_conv=4, expand=2, use_fast_path=False).to(CUDA)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    x = torch.randn(2, 3000, 48, device=CUDA)
    with torch.no_grad():
        assert _relative(ours(x), theirs(x)) < 1e-5
        # A layer trained with mamba_ssm loads into ours unchanged, on any backend.
        back = Mamba(d_model=48, d_state=16, backend="mamba_ssm").to(CUDA)
        back.load_state_dict(theirs.state_dict(), strict=True)
        assert _relative(back(x), theirs(x)) < 1e-5


@pytest.mark.parametrize("preset", ["tiny", "base"])
def test_refine_net_backends_agree_in_float32_and_bf16(preset: str) -> None:
    torch.manual_seed(0)
    nets = {b: build_refine(preset, backend=b).to(CUDA).eval() for b in ("torch", "mamba_ssm")}
    # Non-zero correction heads: an untrained network is the identity whatever its backend.
    weights = nets["torch"].state_dict()
    for name, value in weights.items():
        if value.is_floating_point() and not value.any():
            weights[name] = torch.randn_like(value) * 0.02
    for net in nets.values():
        net.load_state_dict(weights)
    volume = torch.rand(1, 1, 64, 64, 16, device=CUDA)
    with torch.no_grad():
        reference = nets["torch"](volume)
        correction = reference - volume
        fused = nets["mamba_ssm"](volume)
        assert _relative(fused - volume, correction) < 1e-3  # measured 1.7e-4 (tiny)
        with autocast(CUDA):
            for net in nets.values():
                assert _relative(net(volume).float() - volume, correction) < 3e-2
