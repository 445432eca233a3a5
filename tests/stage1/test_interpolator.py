"""Stage 1 as a whole: the linear prior, windows, residual formulation, sampling, loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tssc_py.errors import TsscError
from tssc_py.methods import get_method
from tssc_py.motion import RigidConfig, demons_prior
from tssc_py.stage1.diffusion import ScheduleConfig
from tssc_py.stage1.interpolator import (
    FLIP_DIMS,
    PRIOR_DEMONS,
    Stage1,
    Stage1Config,
    linear_prior,
    load_stage1,
    windows,
)
from tssc_py.stage1.model import DiTConfig


def _config(**changes: object) -> Stage1Config:
    model = DiTConfig(patch_size=4, hidden=32, depth=1, heads=2, priors=1)
    return Stage1Config(**{"model": model, "frames": 6, "size": (8, 8), **changes})


def _moving_square(b: int = 2, t: int = 6, n: int = 8) -> torch.Tensor:
    x = torch.zeros(b, t, n, n)
    for i in range(t):
        x[:, i, 2:5, i % (n - 3) : i % (n - 3) + 3] = 1.0
    return x


@pytest.mark.parametrize(
    "pattern", [[0, 5], [0, 2, 4, 5], [1, 3], [2], [0, 1, 2, 3, 4, 5]], ids=str
)
def test_linear_prior_equals_the_linear_method(pattern: list[int]) -> None:
    x = torch.rand(3, 6, 5, 4, generator=torch.Generator().manual_seed(0))
    known = torch.zeros(3, 6, dtype=torch.bool)
    known[:, pattern] = True
    expected = get_method("linear").fill(x.numpy(), pattern)
    np.testing.assert_allclose(linear_prior(x, known).numpy(), expected, atol=1e-6)
    assert torch.equal(linear_prior(x, known)[known], x[known])


def test_linear_prior_needs_a_known_frame() -> None:
    with pytest.raises(TsscError, match="at least one known frame"):
        linear_prior(torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, dtype=torch.bool))


@pytest.mark.parametrize(
    ("known", "n", "length", "expected"),
    [
        ([0, 11], 12, 12, [(0, 12)]),
        ([0, 11, 22], 23, 12, [(0, 12), (11, 23)]),
        ([0, 5, 10, 15, 20], 21, 12, [(0, 11), (10, 21)]),
        ([0, 3, 6, 9, 12, 15], 16, 4, [(0, 4), (3, 7), (6, 10), (9, 13), (12, 16)]),
        ([2, 7], 9, 12, [(0, 9)]),
    ],
)
def test_windows(known: list[int], n: int, length: int, expected: list) -> None:
    got = windows(known, n, length)
    assert got == expected
    covered = [t for a, b in got for t in range(a, b)]
    assert set(covered) == set(range(n))
    # Only known frames are shared between windows.
    shared = {t for t in covered if covered.count(t) > 1}
    assert shared <= set(known)


def test_windows_gap_too_large() -> None:
    with pytest.raises(
        TsscError, match=r"window is 12 frames \(in upsample mode: --frames-between 10 at most"
    ):
        windows([0, 20], 21, 12)


def test_untrained_model_returns_the_blend_and_known_frames_bit_for_bit() -> None:
    torch.manual_seed(0)
    stage1 = Stage1(_config())
    x = _moving_square() + torch.tensor(1 / 3)
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[:, [0, 5]] = True
    out = stage1.sample(x, known, steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[known], x[known])
    torch.testing.assert_close(out, linear_prior(x, known), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    ("prior", "rigid_config"), [("demons", None), ("rigid_demons", RigidConfig())]
)
def test_an_untrained_demons_model_returns_the_registration_prior(
    prior: str, rigid_config: RigidConfig | None
) -> None:
    torch.manual_seed(0)
    stage1 = Stage1(_config(prior=prior, size=(16, 16)))
    x = torch.zeros(2, 6, 16, 16)
    for i in range(6):  # a square moving 6 voxels: the blend cross-fades, demons follows it
        x[:, i, 4:9, 2 + i : 7 + i] = 1.0
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[:, [0, 5]] = True
    out = stage1.sample(x, known, steps=1)
    expected = demons_prior(x, known, PRIOR_DEMONS, rigid_config)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert stage1.loss(x, known).item() >= 0
    # The checkpoint's config names the prior: inference uses what training used.
    assert Stage1Config.from_dict(stage1.config.to_dict()).prior == prior
    with pytest.raises(TsscError, match="prior must be one of none, linear, demons"):
        _config(prior="flow")


def _randomize(stage1: Stage1) -> Stage1:
    with torch.no_grad():
        for p in stage1.model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.05)
    return stage1


def test_sampling_keeps_known_frames_and_is_deterministic_per_seed() -> None:
    torch.manual_seed(0)
    stage1 = _randomize(Stage1(_config()))
    x = _moving_square() + torch.tensor(1 / 7)
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[:, [0, 3, 5]] = True

    def run(seed: int) -> torch.Tensor:
        return stage1.sample(x, known, 4, 0.0, torch.Generator().manual_seed(seed))

    a, b, c = run(1), run(1), run(2)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a[known], x[known])
    assert not torch.allclose(a, linear_prior(x, known))


@pytest.mark.parametrize("flips", [2, 4, 8])
def test_flip_ensemble_is_the_mean_of_the_flipped_runs(flips: int) -> None:
    torch.manual_seed(0)
    stage1 = _randomize(Stage1(_config()))
    x = torch.rand(2, 6, 8, 8, generator=torch.Generator().manual_seed(3))
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[:, [0, 2, 5]] = True  # not symmetric: the reversed copy sees another pattern
    out = stage1.sample(x, known, 2, 0.0, torch.Generator().manual_seed(1), flips=flips)

    generator = torch.Generator().manual_seed(1)  # the copies draw their noise in turn
    runs = []
    for dims in FLIP_DIMS[:flips]:
        mask = known.flip([d for d in dims if d == 1])
        runs.append(stage1.sample(x.flip(dims), mask, 2, 0.0, generator).flip(dims))
    torch.testing.assert_close(out, torch.stack(runs).mean(0), atol=1e-6, rtol=0)
    assert torch.equal(out[known], x[known])
    assert not torch.allclose(runs[0], runs[-1], atol=1e-3)  # the copies do differ


@pytest.mark.parametrize("flips", [0, 3, 16])
def test_flips_must_be_a_number_of_flip_copies(flips: int) -> None:
    known = torch.tensor([[True, False, True]])
    with pytest.raises(TsscError, match="flips must be one of 1, 2, 4, 8"):
        Stage1(_config()).sample(torch.zeros(1, 3, 8, 8), known, flips=flips)


def test_loss_ignores_known_frames() -> None:
    torch.manual_seed(0)
    stage1 = _randomize(Stage1(_config()))
    x = _moving_square()
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[:, [0, 5]] = True
    loss = stage1.loss(x, known, torch.Generator().manual_seed(3))
    assert loss.item() > 0
    # A sample whose frames are all known contributes nothing.
    all_known = torch.ones(2, 6, dtype=torch.bool)
    assert stage1.loss(x, all_known, torch.Generator().manual_seed(3)).item() == 0.0


def test_ssim_term_adds_to_the_loss_and_reaches_the_network() -> None:
    torch.manual_seed(0)
    stage1 = _randomize(Stage1(_config(size=(16, 16))))
    x = _moving_square(n=16)
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[:, [0, 5]] = True
    plain = stage1.loss(x, known, torch.Generator().manual_seed(3))
    with_ssim = stage1.loss(x, known, torch.Generator().manual_seed(3), w_ssim=0.5)
    assert with_ssim.item() > plain.item()
    (with_ssim - plain).backward()  # the SSIM term's own gradient
    assert stage1.model.final_layer.linear.weight.grad.abs().sum() > 0
    all_known = torch.ones(2, 6, dtype=torch.bool)
    assert stage1.loss(x, all_known, torch.Generator(), w_ssim=0.5).item() == 0.0


def test_ssim_term_is_float32_under_bf16_autocast() -> None:
    # Autocast runs SSIM's convolutions in bf16 unless the loss turns it off, and bf16 loses
    # SSIM's variances (differences of nearly equal means): CUDA training learned from noise.
    # The untrained network predicts a zero residual, so both runs score the same frames.
    stage1 = Stage1(_config(size=(16, 16)))
    x = _moving_square(n=16) * 0.5 + 0.3 + 0.05 * torch.rand(2, 6, 16, 16)
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[:, [0, 5]] = True

    def ssim_term() -> float:
        with_ssim = stage1.loss(x, known, torch.Generator().manual_seed(3), w_ssim=1.0)
        plain = stage1.loss(x, known, torch.Generator().manual_seed(3))
        return (with_ssim - plain).item()

    expected = ssim_term()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ssim_term() == pytest.approx(expected, abs=1e-6)


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    stage1 = Stage1(_config())
    x = _moving_square()
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[:, [0, 5]] = True
    opt = torch.optim.Adam(stage1.model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        # One fixed noise draw and timestep: a fixed objective the network must fit.
        loss = stage1.loss(x, known, torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 10


def test_config_checks_and_round_trip() -> None:
    config = _config(scale=2.5)
    assert Stage1Config.from_dict(config.to_dict()) == config
    with pytest.raises(TsscError, match="prior input channel"):
        _config(prior="none")
    with pytest.raises(TsscError, match="not divisible by the patch size"):
        _config(size=(10, 8))
    with pytest.raises(TsscError, match="must have keys"):
        Stage1Config.from_dict({"model": {}})
    plain = _config(model=DiTConfig(patch_size=4, hidden=32, depth=1, heads=2), prior="none")
    assert plain.schedule == ScheduleConfig(prediction="x0")


def test_non_residual_model_samples_too() -> None:
    torch.manual_seed(0)
    config = _config(model=DiTConfig(patch_size=4, hidden=32, depth=1, heads=2), prior="none")
    stage1 = Stage1(config)
    x = _moving_square()
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[:, [0, 5]] = True
    out = stage1.sample(x, known, 3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[known], x[known])
    assert stage1.loss(x, known).item() > 0


def test_load_stage1(checkpoint: Path) -> None:
    stage1 = load_stage1(checkpoint)
    assert not stage1.model.training
    raw = load_stage1(checkpoint, weights="model")
    ema_w = dict(stage1.model.named_parameters())
    raw_w = dict(raw.model.named_parameters())
    assert any(not torch.equal(ema_w[k], raw_w[k]) for k in ema_w)
    with pytest.raises(TsscError, match="weights must be one of"):
        load_stage1(checkpoint, weights="best")


def test_load_stage1_refuses_weights_of_another_shape(checkpoint: Path, tmp_path: Path) -> None:
    import json
    import shutil

    copy = tmp_path / "ckpt"
    shutil.copytree(checkpoint, copy)
    config = json.loads((copy / "config.json").read_text())
    config["stage1"]["model"]["hidden"] = 128
    (copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(TsscError, match="weights do not fit the model config"):
        load_stage1(copy)


def _edited(checkpoint: Path, folder: Path, **changes: dict) -> Path:
    """A copy of ``checkpoint`` whose config.json has ``changes`` merged into its sections."""
    import json
    import shutil

    shutil.copytree(checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    for section, values in changes.items():
        config["stage1"][section].update(values)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_sizes_in_a_hand_edited_config_are_refused_before_allocation(
    checkpoint: Path, tmp_path: Path
) -> None:
    # 10**12 steps: 8 TB per schedule tensor; a width of 10**6: 10**12 parameters a layer.
    for name, changes, message in (
        ("steps", {"schedule": {"steps": 10**12}}, "schedule steps must be an integer from 1 to"),
        ("hidden", {"model": {"hidden": 10**6}}, "DiT hidden must be an integer from 4 to"),
    ):
        edited = _edited(checkpoint, tmp_path / name, **changes)
        with pytest.raises(TsscError, match=rf"{name}/config\.json: {message}"):
            load_stage1(edited)


def test_a_network_beyond_memory_is_refused_before_it_is_built(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tssc_py.stage1.model import VideoDiT

    monkeypatch.setattr("tssc_py.memory.physical_memory", lambda: 10**6)

    def counted_only(config: DiTConfig) -> VideoDiT:
        assert torch.empty(0).device.type == "meta", "built before the memory check"
        return VideoDiT(config)

    monkeypatch.setattr("tssc_py.stage1.interpolator.VideoDiT", counted_only)
    message = (
        r"config\.json: the network it describes \(0\.\d+ M parameters, 2 copies of their "
        r"float32 weights: built, then loaded\) needs about 0\.\d+ GB of memory, more than "
        r"this machine's 0.001 GB$"
    )
    with pytest.raises(TsscError, match=message):
        load_stage1(checkpoint)


def test_cli_names_the_hand_edited_config(checkpoint: Path, tmp_path: Path) -> None:
    from tests.conftest import assert_one_line_error, run_cli

    edited = _edited(checkpoint, tmp_path / "ckpt", schedule={"steps": 10**12})
    proc = run_cli(
        "tssc-interpolate", "--chunk", tmp_path / "c.npz", "--method", "diffusion",
        "--checkpoint", edited, "--out", tmp_path / "o.npz", check=False,
    )  # fmt: skip
    assert_one_line_error(
        proc, "ckpt/config.json: schedule steps must be an integer from 1 to 100000, got 10000"
    )
