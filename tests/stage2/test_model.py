"""The stage-2 network: scan orders, identity at initialisation, shapes, presets."""

from __future__ import annotations

import pytest
import torch

from tssc_py.errors import TsscError
from tssc_py.stage2.model import (
    ORDERS,
    REFINE_LIMITS,
    RefineConfig,
    RefineNet,
    TriDirectionalBlock,
    build_refine,
    from_sequence,
    to_sequence,
)


def _indexed(x: int = 3, y: int = 4, z: int = 5) -> torch.Tensor:
    """(1, 1, X, Y, Z) whose value at (i, j, k) is i + 100 j + 10000 k."""
    i, j, k = torch.meshgrid(torch.arange(x), torch.arange(y), torch.arange(z), indexing="ij")
    return (i + 100 * j + 10000 * k).float()[None, None]


@pytest.mark.parametrize(
    ("order", "fastest", "middle"),
    [("xyz", 1, 100), ("yzx", 100, 10000), ("zxy", 10000, 1)],
)
def test_scan_orders(order: str, fastest: int, middle: int) -> None:
    vol = _indexed()
    seq = to_sequence(vol, order)[0, :, 0]
    steps = seq[1:] - seq[:-1]
    # The fastest axis moves by one voxel at every step within a run.
    assert steps[0] == fastest
    sizes = {1: 3, 100: 4, 10000: 5}
    run = sizes[fastest]
    assert seq[run] - seq[0] == middle


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize("shape", [(2, 3, 4, 5, 6), (1, 2, 8, 8, 1), (1, 1, 7, 3, 2)])
def test_orders_round_trip_any_size(order: str, shape: tuple) -> None:
    x = torch.randn(shape)
    seq = to_sequence(x, order)
    assert seq.shape == (shape[0], shape[2] * shape[3] * shape[4], shape[1])
    assert torch.equal(from_sequence(seq, order, x.shape), x)


def test_each_order_reads_the_block_input() -> None:
    # With identity-like layers replaced by spies, every order must see the same voxels
    # (the input tensor), never a tensor another order has already reordered.
    torch.manual_seed(0)
    block = TriDirectionalBlock(4, RefineConfig(d_state=4))
    x = torch.randn(1, 4, 3, 4, 5)
    seen = {}
    for order in ORDERS:

        def spy(seq, order=order):
            seen[order] = from_sequence(seq, order, x.shape)
            return torch.zeros_like(seq)

        block.forward_ssm[order].forward = spy
        block.backward_ssm[order].forward = lambda seq: torch.zeros_like(seq)
    block(x)
    assert torch.allclose(seen["xyz"], seen["yzx"], atol=1e-6)
    assert torch.allclose(seen["xyz"], seen["zxy"], atol=1e-6)


def test_untrained_network_is_the_identity() -> None:
    torch.manual_seed(0)
    net = build_refine("tiny")
    vol = torch.rand(2, 1, 16, 12, 3)
    assert torch.equal(net(vol), vol)


def test_trained_network_changes_and_mixes_slices() -> None:
    torch.manual_seed(0)
    net = build_refine("tiny")
    with torch.no_grad():
        net.head.weight.normal_(std=0.1)
    vol = torch.zeros(1, 1, 8, 8, 6)
    base = net(vol)
    vol2 = vol.clone()
    vol2[0, 0, :, :, 0] = 1.0  # change only the first slice
    changed = (net(vol2) - base).abs().sum(dim=(0, 1, 2, 3))
    assert changed[-1] > 0  # the last slice sees it: information crosses slices


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    net = build_refine("tiny")
    with torch.no_grad():
        net.head.weight.normal_(std=0.1)
    net(torch.rand(1, 1, 8, 8, 4)).square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    assert not missing


def test_shape_checks_and_config() -> None:
    net = build_refine("tiny")
    with pytest.raises(TsscError, match="not divisible by 4"):
        net(torch.rand(1, 1, 10, 8, 4))
    with pytest.raises(TsscError, match=r"expected \(B, 1, X, Y, Z\)"):
        net(torch.rand(1, 8, 8, 4))
    with pytest.raises(TsscError, match="unknown stage-2 preset"):
        build_refine("huge")
    with pytest.raises(TsscError, match="unknown stage-2 config keys"):
        build_refine("tiny", width=3)
    cfg = RefineConfig(channels=4)
    assert RefineConfig.from_dict(cfg.to_dict()) == cfg
    # Every width must split into the normalisation groups (4, 8, 16 do; 12 does not).
    with pytest.raises(TsscError, match=r"channels 3 gives the widths \[3, 6, 12\]"):
        RefineConfig(channels=3)
    with pytest.raises(TsscError, match="use a multiple of 8"):
        build_refine("tiny", channels=99)
    assert isinstance(build_refine("base"), RefineNet)


@pytest.mark.parametrize("name", sorted(REFINE_LIMITS))
def test_config_sizes_have_bounds(name: str) -> None:
    low, high = REFINE_LIMITS[name]
    base = {"channels": 8, "down": 0}  # every width then splits into the groups
    assert getattr(RefineConfig(**{**base, name: high}), name) == high
    for bad in (low - 1, high + 1, 10**12, 2.0):
        message = rf"^stage-2 {name} must be an integer from {low} to {high}, got {bad!r}$"
        with pytest.raises(TsscError, match=message):
            RefineConfig(**{**base, name: bad})


def test_a_preset_config_is_made_without_building_the_network() -> None:
    from tssc_py.stage2.model import preset_config

    assert preset_config("tiny", blocks=3) == RefineConfig(channels=8, down=2, blocks=3, d_state=8)
    with pytest.raises(TsscError, match="unknown stage-2 preset"):
        preset_config("huge")
