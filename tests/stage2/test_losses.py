"""The stage-2 loss: each term, its gradient, float32 under autocast, configuration."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

from tssc_py.errors import TsscError
from tssc_py.stage2.losses import LossConfig, refine_loss, tv_loss, wavelet_loss


def test_wavelet_loss_matches_pywavelets() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 1, 8, 8, 4, generator=g, dtype=torch.float64)
    b = torch.rand(1, 1, 8, 8, 4, generator=g, dtype=torch.float64)
    ca = pywt.wavedecn(a[0, 0].numpy(), "haar", level=2, mode="zero")
    cb = pywt.wavedecn(b[0, 0].numpy(), "haar", level=2, mode="zero")
    bands = [np.abs(ca[0] - cb[0]).mean()]
    for da, db in zip(ca[1:], cb[1:], strict=True):
        bands += [np.abs(da[k] - db[k]).mean() for k in da]
    expected = float(np.mean(bands))
    assert wavelet_loss(a, b, "haar", 2).item() == pytest.approx(expected, rel=1e-5)
    assert wavelet_loss(a, a, "haar", 2).item() == 0.0


def test_wavelet_gradient_reaches_the_network() -> None:
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 1, 3, padding=1)
    x = torch.rand(2, 1, 8, 8, 4)
    truth = torch.rand(2, 1, 8, 8, 4)
    wavelet_loss(net(x), truth, "haar", 3).backward()
    assert net.weight.grad is not None and net.weight.grad.abs().sum() > 0


def test_wavelet_loss_in_float32_under_autocast() -> None:
    a = torch.rand(1, 1, 8, 8, 4, dtype=torch.bfloat16)
    b = torch.rand(1, 1, 8, 8, 4, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = wavelet_loss(a, b, "haar", 2)
    assert value.dtype == torch.float32


def test_level_is_capped_for_small_volumes() -> None:
    a, b = torch.rand(1, 1, 16, 16, 2), torch.rand(1, 1, 16, 16, 2)
    assert torch.isfinite(wavelet_loss(a, b, "db2", 5))


def test_tv_loss() -> None:
    flat = torch.ones(1, 1, 4, 4, 4)
    assert tv_loss(flat).item() == 0.0
    ramp = torch.arange(4.0).reshape(1, 1, 4, 1, 1).expand(1, 1, 4, 4, 4)
    assert tv_loss(ramp).item() == pytest.approx(1.0)


def test_refine_loss_weights_and_terms() -> None:
    g = torch.Generator().manual_seed(1)
    pred, truth = torch.rand(1, 1, 8, 8, 4, generator=g), torch.rand(1, 1, 8, 8, 4, generator=g)
    total, terms = refine_loss(pred, truth, LossConfig())
    assert set(terms) == {"mse", "wavelet", "tv"}
    assert total.item() == pytest.approx(sum(terms.values()), rel=1e-6)
    only_mse, _ = refine_loss(pred, truth, LossConfig(w_wavelet=0, w_tv=0))
    assert only_mse.item() == pytest.approx(terms["mse"], rel=1e-6)
    with pytest.raises(TsscError, match="unknown discrete wavelet"):
        LossConfig(wavelet="morlet")
    with pytest.raises(TsscError, match=">= 0"):
        LossConfig(w_tv=-1)
