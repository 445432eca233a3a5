"""The baselines' networks: the shared warp and frame synthesis, padding, configs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tssc_py.baselines import MODELS
from tssc_py.baselines.model import (
    DEFAULT_FEATURES,
    MAX_FEATURES,
    BaselineConfig,
    Interpolator,
    blend,
    interpolate_pair,
    warp,
)
from tssc_py.errors import TsscError

# The sampling grid is normalised to [-1, 1] and back: exact up to float32 rounding.
ROUNDING = 2e-6


def _frames(n: int = 2, h: int = 20, w: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).random((n, 1, h, w), dtype=np.float32))


def test_zero_flow_warp_returns_the_input() -> None:
    x = _frames()
    zero = torch.zeros(2, 2, 20, 24)
    torch.testing.assert_close(warp(x, zero), x, atol=ROUNDING, rtol=0)
    y = _frames(seed=1)
    # Zero flows: the blend is the linear blend.
    torch.testing.assert_close(blend(x, y, zero, zero, 0.25), 0.75 * x + 0.25 * y)


@pytest.mark.parametrize("model", MODELS)
def test_each_baseline_with_zero_flow_returns_the_input(model: str) -> None:
    net = Interpolator(BaselineConfig(model, DEFAULT_FEATURES[model])).eval()
    x = _frames(h=32, w=32)
    zero = torch.zeros(2, 2, 32, 32)
    with torch.no_grad():
        y, correction = net.synthesize(x, x, zero, zero, 0.4)
    torch.testing.assert_close(y, x, atol=ROUNDING, rtol=0)
    # UVI-Net's refiner starts at zero: untrained, it returns the registration blend.
    assert (correction is None) == (model != "uvinet")


def test_warp_samples_at_p_plus_d_along_each_axis() -> None:
    ramp = torch.arange(12.0)[:, None].expand(12, 10)[None, None]  # value = first index
    ddf = torch.zeros(1, 2, 12, 10)
    ddf[:, 0] = 2.0
    out = warp(ramp, ddf)[0, 0]
    torch.testing.assert_close(out[:8], ramp[0, 0, 2:10])
    ddf[:, 0], ddf[:, 1] = 0.0, 3.0  # along the second axis the ramp is constant
    torch.testing.assert_close(warp(ramp, ddf)[0, 0], ramp[0, 0])


@pytest.mark.parametrize("model", MODELS)
def test_any_frame_size_and_finite(model: str) -> None:
    net = Interpolator(BaselineConfig(model, {"transmorph": 12}.get(model, 4))).eval()
    x = np.random.default_rng(0).random((3, 20, 24), dtype=np.float32)
    out = interpolate_pair(net, x, x[::-1].copy(), [0.25, 0.5], torch.device("cpu"), 2)
    assert out.shape == (3, 2, 20, 24) and np.isfinite(out).all()


@pytest.mark.parametrize("model", MODELS)
def test_loss_decreases_when_overfitting_one_pair(model: str) -> None:
    torch.manual_seed(0)
    net = Interpolator(BaselineConfig(model, {"transmorph": 12}.get(model, 8)))
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = lambda cy: torch.exp(-((yy - cy) ** 2 + (xx - 16) ** 2) / 30)[None, None]  # noqa: E731
    x0, x1 = blob(13.0), blob(19.0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(25):
        loss = net.loss(x0, x1, gen, smooth=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    assert np.mean(losses[-5:]) < np.mean(losses[:5])


def test_config_checks() -> None:
    with pytest.raises(TsscError, match="unknown baseline 'morph'"):
        BaselineConfig("morph", 16)
    with pytest.raises(TsscError, match="transmorph: features must be a multiple of 12"):
        BaselineConfig("transmorph", 16)
    with pytest.raises(TsscError, match="not a baseline config"):
        BaselineConfig.from_dict({"model": "uvinet"})
    config = BaselineConfig("uvinet", 8, (48, 32), {"size": 48})
    assert BaselineConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("model", MODELS)
def test_features_have_an_upper_bound(model: str) -> None:
    assert BaselineConfig(model, MAX_FEATURES).features == MAX_FEATURES
    step = {"transmorph": 12, "uvinet": 4}.get(model, 1)
    for bad in (MAX_FEATURES + step, 10**12, 16.0):
        message = rf"^{model}: features must be a multiple of {step} from .* to {MAX_FEATURES}, got"
        with pytest.raises(TsscError, match=message):
            BaselineConfig(model, bad)  # type: ignore[arg-type]


def test_a_hand_edited_config_is_refused_before_allocation(tmp_path) -> None:
    import json

    from tssc_py.baselines.model import load_baseline
    from tssc_py.checkpoint import save_checkpoint

    config = BaselineConfig("voxelmorph", 4)
    saved = {"kind": "voxelmorph", "baseline": config.to_dict()}
    ckpt = save_checkpoint(tmp_path / "ckpt", saved, {"model": Interpolator(config).state_dict()})
    assert isinstance(load_baseline(ckpt, "voxelmorph"), Interpolator)
    saved["baseline"]["features"] = 10**6  # 10**13 weights a convolution
    (ckpt / "config.json").write_text(json.dumps(saved))
    with pytest.raises(TsscError, match=r"ckpt/config\.json: voxelmorph: features must be a"):
        load_baseline(ckpt, "voxelmorph")
