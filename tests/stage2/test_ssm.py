"""The selective scan: parallel equals sequential (values and gradients), backends, layer."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
import torch

from tssc_py.errors import TsscError
from tssc_py.stage2 import ssm
from tssc_py.stage2.ssm import (
    Mamba,
    mamba_ssm_available,
    parallel_scan,
    resolve_backend,
    selective_scan_reference,
    selective_scan_torch,
)


def _inputs(length: int, b: int = 2, d: int = 3, n: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float32)  # noqa: E731
    return {
        "u": r(b, d, length),
        "delta": r(b, d, length),
        "A": -torch.rand(d, n, generator=g) * 2 - 0.1,
        "B": r(b, n, length),
        "C": r(b, n, length),
        "D": r(d),
        "z": r(b, d, length),
        "delta_bias": r(d) * 0.1,
    }


@pytest.mark.parametrize("length", [1, 2, 3, 7, 16, 33, 100, 257])
def test_parallel_scan_equals_sequential(length: int) -> None:
    kw = _inputs(length)
    ref = selective_scan_reference(**kw, delta_softplus=True)
    par = selective_scan_torch(**kw, delta_softplus=True)
    torch.testing.assert_close(par, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length", [5, 64, 131])
def test_parallel_scan_gradients_equal_sequential(length: int) -> None:
    kw = _inputs(length, seed=1)
    names = ["u", "delta", "A", "B", "C", "D", "z", "delta_bias"]
    grads = []
    for fn in (selective_scan_reference, selective_scan_torch):
        leaves = {k: v.clone().requires_grad_(True) for k, v in kw.items()}
        out = fn(**leaves, delta_softplus=True)
        weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
        (out * weights).sum().backward()
        grads.append([leaves[k].grad for k in names])
    for name, a, b in zip(names, *grads, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4, msg=name)


def test_scan_without_optional_terms() -> None:
    kw = _inputs(9)
    for key in ("D", "z", "delta_bias"):
        kw.pop(key)
    torch.testing.assert_close(
        selective_scan_torch(**kw), selective_scan_reference(**kw), atol=1e-5, rtol=1e-5
    )


def test_parallel_scan_of_a_plain_recurrence() -> None:
    decay = torch.full((1, 1, 6, 1), 0.5)
    drive = torch.ones(1, 1, 6, 1)
    h = parallel_scan(decay, drive).flatten().tolist()
    expected, state = [], 0.0
    for _ in range(6):
        state = 0.5 * state + 1
        expected.append(state)
    assert h == pytest.approx(expected)


def test_backend_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "torch"
    assert resolve_backend("torch", cpu) == "torch"
    with pytest.raises(TsscError, match="unknown state-space backend"):
        resolve_backend("triton", cpu)
    if not mamba_ssm_available():
        with pytest.raises(TsscError, match=r"mamba_ssm (is not installed|does not import here)"):
            resolve_backend("mamba_ssm", cpu)


def test_broken_mamba_ssm_install_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Installed but not importable (e.g. compiled against another torch): not silent on a GPU.
    package = tmp_path / "mamba_ssm"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('undefined symbol: _ZN3c10')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    # A working mamba_ssm imported earlier (a GPU machine) would be found in sys.modules.
    for name in [m for m in sys.modules if m.split(".")[0] == "mamba_ssm"]:
        monkeypatch.delitem(sys.modules, name)
    ssm._mamba_ssm_import.cache_clear()
    ssm._warn_broken.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=ssm.__name__):
            assert resolve_backend("auto", torch.device("cuda")) == "torch"
        assert "mamba_ssm is installed but does not import (ImportError: undefined symbol" in (
            caplog.text
        )
        with pytest.raises(TsscError, match=r"does not import here \(ImportError: undefined"):
            resolve_backend("mamba_ssm", torch.device("cuda"))
        caplog.clear()
        assert resolve_backend("auto", torch.device("cpu")) == "torch"
        assert caplog.text == ""  # a CPU run loses nothing: no warning
    finally:
        ssm._mamba_ssm_import.cache_clear()
        ssm._warn_broken.cache_clear()


def test_layer_has_mamba_ssm_parameter_names_and_shapes() -> None:
    layer = Mamba(d_model=16, d_state=8)
    shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    assert shapes == {
        "A_log": (32, 8),
        "D": (32,),
        "in_proj.weight": (64, 16),
        "conv1d.weight": (32, 1, 4),
        "conv1d.bias": (32,),
        "x_proj.weight": (1 + 16, 32),
        "dt_proj.weight": (32, 1),
        "dt_proj.bias": (32,),
        "out_proj.weight": (16, 32),
    }


def test_layer_is_causal_and_differentiable() -> None:
    torch.manual_seed(0)
    layer = Mamba(d_model=8, d_state=4)
    x = torch.randn(2, 20, 8, requires_grad=True)
    y = layer(x)
    assert y.shape == x.shape
    y[:, 9].sum().backward()
    assert x.grad[:, :10].abs().sum() > 0
    assert torch.equal(x.grad[:, 10:], torch.zeros_like(x.grad[:, 10:]))
    assert all(p.grad is not None for p in layer.parameters())
