"""Tests of the stage-1 video DiT: shapes, initialisation, mixing, presets and errors."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from tssc_py.errors import TsscError
from tssc_py.stage1.model import (
    DIT_LIMITS,
    MAX_MLP_RATIO,
    SHORT_ATTENTION,
    DiTConfig,
    VideoDiT,
    attention,
    build_model,
    preset_config,
)


def tiny() -> VideoDiT:
    torch.manual_seed(0)
    return build_model("DiT_tiny")


def randomize(model: VideoDiT, std: float = 0.1) -> VideoDiT:
    """Give the zero-initialised adaLN and output layers small random weights."""
    gen = torch.Generator().manual_seed(1)
    layers = [b.adaLN_modulation[-1] for b in model.blocks]
    layers += [model.final_layer.adaLN_modulation[-1], model.final_layer.linear]
    with torch.no_grad():
        for layer in layers:
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * std)
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen) * std)
    return model


def inputs(b: int = 2, t: int = 5, h: int = 16, w: int = 16, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, h, w, generator=gen)
    ts = torch.randint(0, 1000, (b,), generator=gen)
    known = torch.zeros(b, t, dtype=torch.bool)
    known[:, 0] = True
    known[:, -1] = True
    return x, ts, known


@pytest.mark.parametrize(("t", "h", "w"), [(5, 16, 16), (12, 8, 8), (3, 16, 24), (1, 12, 20)])
def test_output_shape_matches_input(t: int, h: int, w: int) -> None:
    model = randomize(tiny())
    x, ts, known = inputs(2, t, h, w)
    out = model(x, ts, known)
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_output_layer_is_float32_under_bf16_autocast() -> None:
    # The prediction is divided by small noise levels (epsilon, v): bf16 rounding there grows.
    model = randomize(tiny())
    x, ts, known = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, ts, known)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, model(x, ts, known), atol=0.05, rtol=0.05)


def test_float_timesteps_accepted() -> None:
    model = randomize(tiny())
    x, _, known = inputs()
    out = model(x, torch.tensor([0.5, 999.0]), known)
    assert out.shape == x.shape


def test_zero_init_outputs_zero_until_final_layer_changes() -> None:
    model = tiny()
    x, ts, known = inputs()
    assert torch.equal(model(x, ts, known), torch.zeros_like(x))
    with torch.no_grad():
        model.final_layer.linear.weight.normal_(std=0.1)
    assert model(x, ts, known).abs().max() > 0


def test_tiny_preset_sizes_and_parameter_count() -> None:
    model = build_model("DiT_tiny")
    cfg = model.config
    assert (cfg.patch_size, cfg.hidden, cfg.depth, cfg.heads) == (4, 64, 2, 2)
    assert len(model.blocks) == 2
    assert sum(p.numel() for p in model.parameters()) == 238_800


@pytest.mark.parametrize(
    ("name", "expected"),
    [("DiT_S", (8, 384, 12, 6)), ("DiT_B", (8, 768, 12, 12))],
)
def test_large_presets_build_with_documented_sizes(name: str, expected: tuple) -> None:
    cfg = preset_config(name)
    assert (cfg.patch_size, cfg.hidden, cfg.depth, cfg.heads) == expected
    model = build_model(name)
    assert model.config == cfg
    assert len(model.blocks) == expected[2]


def test_build_model_overrides() -> None:
    model = build_model("DiT_tiny", depth=1)
    assert model.config.depth == 1 and len(model.blocks) == 1
    with pytest.raises(TsscError):
        build_model("DiT_tiny", nonsense=3)


def test_temporal_attention_mixes_frames() -> None:
    model = randomize(tiny()).eval()
    x, ts, known = inputs(1, 5, 16, 16)
    x2 = x.clone()
    x2[:, 0] += 1.0
    with torch.no_grad():
        a, b = model(x, ts, known), model(x2, ts, known)
    assert (a[:, 3] - b[:, 3]).abs().max() > 1e-5


def test_spatial_attention_mixes_tokens() -> None:
    model = randomize(tiny()).eval()
    x, ts, known = inputs(1, 3, 16, 16)
    x2 = x.clone()
    x2[:, 1, :4, :4] += 1.0  # top-left patch of frame 1
    with torch.no_grad():
        a, b = model(x, ts, known), model(x2, ts, known)
    assert (a[:, 1, 12:, 12:] - b[:, 1, 12:, 12:]).abs().max() > 1e-5  # bottom-right patch


def attention_ops(attend: Callable[..., torch.Tensor], q: torch.Tensor) -> set[str]:
    """The aten attention operators one ``attend(q, q, q)`` call dispatches (after a warm-up
    call, so that kernel set-up on first use is not counted)."""
    attend(q, q, q)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        attend(q, q, q)
    names = {event.name for event in profile.events()}
    return {name for name in names if name.startswith("aten::") and "attention" in name}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_attention_kernel_follows_the_sequence_length() -> None:
    torch.manual_seed(0)
    short = torch.randn(64, 6, 12, 64, device="cuda", dtype=torch.bfloat16)
    assert "aten::_scaled_dot_product_efficient_attention" in attention_ops(attention, short)
    long = torch.randn(2, 6, 2 * SHORT_ATTENTION, 64, device="cuda", dtype=torch.bfloat16)
    torch_choice = torch.nn.functional.scaled_dot_product_attention
    assert attention_ops(attention, long) == attention_ops(torch_choice, long)
    reference = torch.softmax(short.double() @ short.double().transpose(-2, -1) / 8, -1)
    error = (attention(short, short, short).double() - reference @ short.double()).abs().max()
    assert error < 0.05  # bf16 rounding; the matrix-product form in bf16 was 0.025 (RESULTS)


def test_known_mask_changes_output() -> None:
    model = randomize(tiny()).eval()
    x, ts, known = inputs()
    other = known.clone()
    other[:, 2] = True
    with torch.no_grad():
        assert not torch.allclose(model(x, ts, known), model(x, ts, other))


def test_gradients_reach_every_parameter() -> None:
    model = randomize(tiny())
    x, ts, known = inputs()
    model(x, ts, known).pow(2).mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


def test_bad_patch_divisibility_raises() -> None:
    model = tiny()
    x, ts, known = inputs(1, 3, 18, 16)
    with pytest.raises(TsscError, match="divisible by the patch size 4"):
        model(x, ts, known)


def test_mismatched_known_shape_raises() -> None:
    model = tiny()
    x, ts, _ = inputs(1, 3)
    with pytest.raises(TsscError):
        model(x, ts, torch.zeros(1, 4, dtype=torch.bool))


def test_unknown_preset_raises() -> None:
    with pytest.raises(TsscError, match="unknown DiT preset"):
        build_model("DiT_XXL")
    with pytest.raises(TsscError):
        preset_config("nope")


def test_config_round_trip() -> None:
    cfg = DiTConfig(patch_size=2, hidden=32, depth=3, heads=4, mlp_ratio=2.0)
    assert DiTConfig.from_dict(cfg.to_dict()) == cfg
    assert DiTConfig.from_dict(DiTConfig().to_dict()) == DiTConfig()
    with pytest.raises(TsscError):
        DiTConfig.from_dict({"hidden": 64, "extra": 1})
    with pytest.raises(TsscError):
        DiTConfig(hidden=64, heads=3)


@pytest.mark.parametrize("name", sorted(DIT_LIMITS))
def test_config_sizes_have_bounds(name: str) -> None:
    low, high = DIT_LIMITS[name]
    assert getattr(DiTConfig(**{"heads": 1, name: high}), name) == high
    for bad in (low - 1, high + 1, 10**12, 8.0):
        message = rf"^DiT {name} must be an integer from {low} to {high}, got {bad!r}$"
        with pytest.raises(TsscError, match=message):
            DiTConfig(**{name: bad})


def test_mlp_ratio_has_bounds() -> None:
    assert DiTConfig(mlp_ratio=MAX_MLP_RATIO).mlp_ratio == MAX_MLP_RATIO
    for bad in (0.0, MAX_MLP_RATIO + 1, 1e12, "4"):
        message = rf"^DiT mlp_ratio must be a number above 0 and at most {MAX_MLP_RATIO:g}, got"
        with pytest.raises(TsscError, match=message):
            DiTConfig(mlp_ratio=bad)  # type: ignore[arg-type]


def test_eval_is_deterministic() -> None:
    model = randomize(tiny()).eval()
    x, ts, known = inputs()
    with torch.no_grad():
        assert torch.equal(model(x, ts, known), model(x, ts, known))
