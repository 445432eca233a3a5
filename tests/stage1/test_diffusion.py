"""Schedule, loss target and samplers of the stage-1 diffusion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tssc_py.errors import TsscError
from tssc_py.stage1.diffusion import MAX_SCHEDULE_STEPS, Diffusion, ScheduleConfig

PREDICTIONS = ["epsilon", "v", "x0"]


def make_x0(b: int = 2, t: int = 6, h: int = 5, w: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(123)
    return torch.rand((b, t, h, w), generator=g, dtype=torch.float64) * 2 - 1


def make_known(b: int = 2, t: int = 6) -> torch.Tensor:
    known = torch.zeros(b, t, dtype=torch.bool)
    known[:, 0] = True
    known[:, -1] = True
    known[1, 2] = True
    return known


def oracle(diff: Diffusion, x0: torch.Tensor):
    """A perfect model: the exact target for ``x_in``'s noisy part given the true ``x0``."""

    def model(x_in: torch.Tensor, t: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        ab = diff.alphas_cumprod[t].to(x_in.dtype).reshape(-1, 1, 1, 1)
        eps = (x_in - ab.sqrt() * x0) / (1 - ab).sqrt()
        return diff.training_target(x0, eps, t)

    return model


def test_schedule_endpoints_and_monotonic() -> None:
    diff = Diffusion()
    assert diff.betas.dtype == torch.float64
    assert diff.alphas_cumprod.dtype == torch.float64
    assert len(diff.betas) == 1000
    assert diff.betas[0].item() == pytest.approx(1e-6)
    assert diff.betas[-1].item() == pytest.approx(1e-2)
    assert torch.all(diff.alphas_cumprod[1:] < diff.alphas_cumprod[:-1])
    assert diff.alphas_cumprod[0].item() == pytest.approx(1 - 1e-6)
    expected = math.prod(1 - (1e-6 + i * (1e-2 - 1e-6) / 999) for i in range(1000))
    assert diff.alphas_cumprod[-1].item() == pytest.approx(expected, rel=1e-9)
    assert diff.alphas_cumprod[-1].item() == pytest.approx(6.6226e-3, rel=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 0},
        {"steps": 2.5},
        {"steps": True},
        {"beta_start": 0.0},
        {"beta_end": 1.0},
        {"beta_start": 0.1, "beta_end": 0.01},
        {"beta_start": "1e-6"},
        {"prediction": "sample"},
    ],
)
def test_config_validation(kwargs: dict) -> None:
    with pytest.raises(TsscError):
        ScheduleConfig(**kwargs)


def test_schedule_length_has_an_upper_bound() -> None:
    assert ScheduleConfig(steps=MAX_SCHEDULE_STEPS).steps == MAX_SCHEDULE_STEPS
    # 10**12 steps would be 8 TB of float64 schedule per tensor, allocated at load.
    for steps in (MAX_SCHEDULE_STEPS + 1, 10**12):
        message = (
            rf"^schedule steps must be an integer from 1 to {MAX_SCHEDULE_STEPS}, got {steps}$"
        )
        with pytest.raises(TsscError, match=message):
            ScheduleConfig.from_dict({**ScheduleConfig().to_dict(), "steps": steps})


def test_config_round_trip() -> None:
    cfg = ScheduleConfig(steps=200, beta_start=1e-5, beta_end=2e-2, prediction="epsilon")
    assert ScheduleConfig.from_dict(cfg.to_dict()) == cfg
    assert ScheduleConfig.from_dict(ScheduleConfig().to_dict()) == ScheduleConfig()
    with pytest.raises(TsscError):
        ScheduleConfig.from_dict({**cfg.to_dict(), "extra": 1})


def test_q_sample_statistics() -> None:
    diff = Diffusion()
    n = 200_000
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((4, n), 0.7, dtype=torch.float64)
    t = torch.tensor([0, 100, 500, 999])
    x_t = diff.q_sample(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    ab = diff.alphas_cumprod[t]
    torch.testing.assert_close(x_t.mean(dim=1), ab.sqrt() * 0.7, atol=0.01, rtol=0)
    torch.testing.assert_close(x_t.var(dim=1), 1 - ab, atol=0.01, rtol=0.02)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_conversions_are_exact_inverses(prediction: str) -> None:
    diff = Diffusion(ScheduleConfig(prediction=prediction))
    x0 = make_x0(b=4)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0, 10, 500, 999])
    x_t = diff.q_sample(x0, t, noise)
    x0_hat, eps_hat = diff.predict_x0_eps(x_t, t, diff.training_target(x0, noise, t))
    torch.testing.assert_close(x0_hat, x0, atol=1e-6, rtol=0)
    torch.testing.assert_close(eps_hat, noise, atol=1e-6, rtol=0)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("steps", [1, 10, 37])
def test_ddim_oracle_recovers_x0(prediction: str, steps: int) -> None:
    diff = Diffusion(ScheduleConfig(prediction=prediction))
    x0, known = make_x0(), make_known()
    x_known = torch.where(known[..., None, None], x0, torch.full_like(x0, 99.0))
    calls = []
    out = diff.ddim_sample(
        oracle(diff, x0),
        x_known,
        known,
        steps=steps,
        generator=torch.Generator().manual_seed(5),
        progress=lambda i, n: calls.append((i, n)),
    )
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    assert torch.equal(out[known], x_known[known])
    assert calls == [(i, steps) for i in range(steps)]


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize(
    "schedule", [{}, {"steps": 100, "beta_start": 1e-4, "beta_end": 5e-2}], ids=["paper", "short"]
)
def test_ddpm_oracle_recovers_x0(prediction: str, schedule: dict) -> None:
    diff = Diffusion(ScheduleConfig(prediction=prediction, **schedule))
    x0, known = make_x0(), make_known()
    x_known = torch.where(known[..., None, None], x0, torch.zeros_like(x0))
    out = diff.ddpm_sample(
        oracle(diff, x0), x_known, known, generator=torch.Generator().manual_seed(2)
    )
    torch.testing.assert_close(out, x0, atol=1e-5, rtol=0)
    assert torch.equal(out[known], x_known[known])


def test_known_frames_bit_for_bit_with_float32() -> None:
    diff = Diffusion(ScheduleConfig(steps=50))
    x0, known = make_x0().float(), make_known()

    def garbage(x_in: torch.Tensor, t: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        return torch.sin(x_in * 3.1) + 0.3

    out = diff.ddim_sample(garbage, x0, known, steps=7, eta=0.5)
    assert out.dtype == torch.float32 and out.shape == x0.shape
    assert torch.equal(out[known], x0[known])
    out = diff.ddpm_sample(garbage, x0, known)
    assert torch.equal(out[known], x0[known])


def test_samplers_build_no_autograd_graph() -> None:
    # Called directly (not through Stage1.sample), a trainable model must not make the
    # samplers keep every step's graph.
    diff = Diffusion(ScheduleConfig(steps=20))
    x0, known = make_x0().float(), make_known()
    weight = torch.nn.Parameter(torch.ones(()))

    def model(x_in: torch.Tensor, t: torch.Tensor, known_in: torch.Tensor) -> torch.Tensor:
        return x_in * weight

    assert not diff.ddim_sample(model, x0, known, steps=3).requires_grad
    assert not diff.ddpm_sample(model, x0, known).requires_grad
    assert not diff.ddim_sample(
        model, x0, known, steps=np.int64(3), eta=np.float32(0)
    ).requires_grad


def test_model_sees_clean_known_frames_during_sampling() -> None:
    diff = Diffusion(ScheduleConfig(steps=20))
    x0, known = make_x0(), make_known()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def spy(x_in: torch.Tensor, t: torch.Tensor, known_in: torch.Tensor) -> torch.Tensor:
        seen.append((x_in.clone(), t.clone()))
        assert torch.equal(known_in, known)
        return torch.zeros_like(x_in)

    diff.ddim_sample(spy, x0, known, steps=5)
    assert len(seen) == 5
    ts = [int(t[0]) for _, t in seen]
    assert ts == sorted(ts, reverse=True) and ts[0] == 19 and ts[-1] == 0
    for x_in, t in seen:
        assert t.dtype == torch.long and t.shape == (2,)
        assert torch.equal(x_in[known], x0[known])
    seen.clear()
    diff.ddpm_sample(spy, x0, known)
    assert [int(t[0]) for _, t in seen] == list(range(19, -1, -1))


def test_determinism() -> None:
    diff = Diffusion(ScheduleConfig(steps=100))
    x0, known = make_x0(), make_known()

    def model(x_in: torch.Tensor, t: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        return 0.5 * x_in

    def run(seed: int, eta: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return diff.ddim_sample(model, x0, known, steps=10, eta=eta, generator=g)

    assert torch.equal(run(3, 0.0), run(3, 0.0))
    assert torch.equal(run(3, 1.0), run(3, 1.0))
    assert not torch.allclose(run(3, 1.0), run(4, 1.0))
    # eta > 0 injects fresh noise beyond the starting point.
    assert not torch.allclose(run(3, 0.0), run(3, 1.0))


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_loss_counts_unknown_frames_only(prediction: str) -> None:
    diff = Diffusion(ScheduleConfig(prediction=prediction))
    x0, known = make_x0(), make_known()
    exact = oracle(diff, x0)
    mask = known[..., None, None]

    def noisy_known(x_in: torch.Tensor, t: torch.Tensor, known_in: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, torch.full_like(x_in, float("inf")), exact(x_in, t, known_in))

    def off_unknown(x_in: torch.Tensor, t: torch.Tensor, known_in: torch.Tensor) -> torch.Tensor:
        return exact(x_in, t, known_in) + 0.5 * (~mask)

    def spy(x_in: torch.Tensor, t: torch.Tensor, known_in: torch.Tensor) -> torch.Tensor:
        assert torch.equal(x_in[known], x0[known])
        assert not torch.equal(x_in[~known], x0[~known])
        return exact(x_in, t, known_in)

    def loss(model) -> float:
        return diff.loss(model, x0, known, generator=torch.Generator().manual_seed(9)).item()

    assert loss(exact) == pytest.approx(0.0, abs=1e-20)
    assert loss(noisy_known) == loss(exact)
    assert loss(off_unknown) == pytest.approx(0.25, rel=1e-9)
    assert loss(spy) == pytest.approx(0.0, abs=1e-20)


def test_loss_skips_samples_without_unknown_frames() -> None:
    diff = Diffusion()
    x0 = make_x0()
    known = torch.zeros(2, 6, dtype=torch.bool)
    known[0] = True  # sample 0 has nothing to generate
    known[1, :3] = True

    def model(x_in: torch.Tensor, t: torch.Tensor, known_in: torch.Tensor) -> torch.Tensor:
        out = oracle(diff, x0)(x_in, t, known_in)
        return out + torch.tensor([7.0, 1.0], dtype=x_in.dtype).reshape(2, 1, 1, 1)

    assert diff.loss(model, x0, known).item() == pytest.approx(1.0, rel=1e-9)
    all_known = torch.ones(2, 6, dtype=torch.bool)
    assert diff.loss(model, x0, all_known).item() == 0.0


def test_loss_backpropagates() -> None:
    diff = Diffusion()
    x0, known = make_x0().float(), make_known()
    weight = torch.zeros((), requires_grad=True)

    def model(x_in: torch.Tensor, t: torch.Tensor, known_in: torch.Tensor) -> torch.Tensor:
        return weight * x_in

    loss = diff.loss(model, x0, known)
    loss.backward()
    assert weight.grad is not None and torch.isfinite(weight.grad)


@pytest.mark.parametrize("steps", [0, -1, 1001, 2.0, True])
def test_bad_ddim_steps(steps) -> None:
    diff = Diffusion()
    x0, known = make_x0(), make_known()
    with pytest.raises(TsscError):
        diff.ddim_sample(lambda x, t, k: x, x0, known, steps=steps)


def test_ddim_allows_every_step_count_up_to_schedule() -> None:
    diff = Diffusion(ScheduleConfig(steps=7))
    x0, known = make_x0(), make_known()
    for steps in range(1, 8):
        ts: list[int] = []

        def model(x_in: torch.Tensor, t: torch.Tensor, k: torch.Tensor, ts=ts) -> torch.Tensor:
            ts.append(int(t[0]))
            return torch.zeros_like(x_in)

        diff.ddim_sample(model, x0, known, steps=steps)
        assert len(ts) == steps and len(set(ts)) == steps


def test_bad_inputs() -> None:
    diff = Diffusion()
    x0 = make_x0()
    with pytest.raises(TsscError):
        diff.ddim_sample(lambda x, t, k: x, x0, torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(TsscError):
        diff.ddim_sample(lambda x, t, k: x, x0, make_known(), eta=-0.1)
    with pytest.raises(TsscError):
        diff.loss(lambda x, t, k: x[:, :1], x0, make_known())
