"""Diffusion schedule, training loss and samplers for stage 1 (conditional video diffusion).

Stage 1 generates every unknown frame of a 2D+t slice sequence ``x0`` of shape ``(B, T, H, W)``
jointly, conditioned on the known frames (bool mask ``known`` of shape ``(B, T)``). The model
sees clean frames where ``known`` and the noisy ``x_t`` elsewhere; the loss counts unknown frames
only; the samplers re-insert the known frames at every step and return them bit for bit. A model
is any callable ``model(x_in, t, known) -> prediction`` with ``prediction`` shaped like ``x_in``
and ``t`` a ``(B,)`` long tensor of timesteps.

Prediction target. The schedule is linear in beta from 1e-6 to 1e-2 over 1000 steps (the
paper's endpoints), which gives ``alpha_bar_T = prod(1 - beta_t) = 6.6226e-3`` (computed in
float64; signal-to-noise ratio ``alpha_bar / (1 - alpha_bar) = 6.667e-3``, signal amplitude
``sqrt(alpha_bar_T) = 0.0814``). The default target is ``"x0"``: stage 1 diffuses a residual
over its prior, and with ``x0`` its high-noise steps learn the residual's conditional mean
(what PSNR rewards; see the README). ``"v"`` (``v = sqrt(ab) * eps - sqrt(1 - ab) * x0``,
whose ``x0`` estimate ``sqrt(ab) * x_t - sqrt(1 - ab) * v`` stays well-conditioned at both
ends of the schedule) and ``"epsilon"`` (which recovers
``x0 = (x_t - sqrt(1 - ab) * eps) / sqrt(ab)`` and so amplifies model errors by
``1 / sqrt(alpha_bar)``, about 12x near ``t = T``) remain available.

Consequence of the schedule: the forward process leaves a little signal at ``T``
(``sqrt(alpha_bar_T) * x0``), yet sampling starts from ``x_T ~ N(0, I)``. This mismatch is the
standard practice (DDPM, DDIM) and is small here; a "zero terminal SNR" rescale of the schedule
(Lin et al. 2024) is not applied.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from tssc_py.errors import TsscError, check_integer, is_integer

Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], Any]
Noise = torch.Generator | Sequence[torch.Generator] | None
"""A sampler's noise source: one generator for the batch, or one per batch row, whose draws
then do not depend on the rows beside it (how a volume was cut into batches)."""

PREDICTIONS = ("epsilon", "v", "x0")

MAX_SCHEDULE_STEPS = 100_000
"""Longest schedule: 100x the paper's 1000 steps. Its tensors are allocated when a model is
loaded, so a hand-edited checkpoint's length is refused first."""


@dataclass(frozen=True)
class ScheduleConfig:
    """A linear beta schedule and the model's prediction target.

    Attributes:
        steps: Number of diffusion steps ``T``.
        beta_start: Beta at ``t = 0``.
        beta_end: Beta at ``t = T - 1``.
        prediction: ``"epsilon"``, ``"v"`` or ``"x0"``.
    """

    steps: int = 1000
    beta_start: float = 1e-6
    beta_end: float = 1e-2
    prediction: str = "x0"

    def __post_init__(self) -> None:
        check_integer("schedule steps", self.steps, 1, MAX_SCHEDULE_STEPS)
        for name in ("beta_start", "beta_end"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TsscError(f"schedule {name} must be a number, got {value!r}")
            if not 0.0 < value < 1.0:
                raise TsscError(f"schedule {name} must lie in (0, 1), got {value!r}")
        if self.beta_start > self.beta_end:
            raise TsscError(
                f"schedule beta_start ({self.beta_start}) exceeds beta_end ({self.beta_end})"
            )
        if self.prediction not in PREDICTIONS:
            raise TsscError(
                f"schedule prediction must be one of {', '.join(PREDICTIONS)}, "
                f"got {self.prediction!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScheduleConfig:
        """Build a config from :meth:`to_dict` output; unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise TsscError(f"schedule config must be a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - {"steps", "beta_start", "beta_end", "prediction"})
        if unknown:
            raise TsscError(f"unknown schedule config keys: {', '.join(map(str, unknown))}")
        return cls(**data)


class Diffusion:
    """Forward process, loss and samplers for one :class:`ScheduleConfig`.

    Schedule tensors are float64 on the CPU; coefficients are cast to the data's dtype and
    device when used.
    """

    def __init__(self, config: ScheduleConfig | None = None) -> None:
        self.config = config if config is not None else ScheduleConfig()
        self.steps = self.config.steps
        self.prediction = self.config.prediction
        self.betas = torch.linspace(
            self.config.beta_start, self.config.beta_end, self.steps, dtype=torch.float64
        )
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.alphas_cumprod_prev = torch.cat(
            [torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]]
        )

    def _coef(self, values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Gather ``values[t]`` and shape it to broadcast over ``like`` (batch first)."""
        out = values[t.to("cpu", torch.long)].to(device=like.device, dtype=like.dtype)
        return out.reshape(-1, *([1] * (like.dim() - 1)))

    def _check_t(self, t: torch.Tensor, batch: int) -> torch.Tensor:
        t = torch.as_tensor(t)
        if t.dim() != 1 or t.shape[0] != batch:
            raise TsscError(f"timesteps must have shape ({batch},), got {tuple(t.shape)}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.steps):
            raise TsscError(f"timesteps must lie in [0, {self.steps})")
        return t

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise``."""
        t = self._check_t(t, x0.shape[0])
        ab = self._coef(self.alphas_cumprod, t, x0)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise

    def training_target(
        self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """Return what the model should output: ``noise``, ``v`` or ``x0``."""
        if self.prediction == "epsilon":
            return noise
        if self.prediction == "x0":
            return x0
        t = self._check_t(t, x0.shape[0])
        ab = self._coef(self.alphas_cumprod, t, x0)
        return ab.sqrt() * noise - (1.0 - ab).sqrt() * x0

    def predict_x0_eps(
        self, x_t: torch.Tensor, t: torch.Tensor, prediction: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Convert a model output at ``(x_t, t)`` into ``(x0_hat, eps_hat)``."""
        t = self._check_t(t, x_t.shape[0])
        ab = self._coef(self.alphas_cumprod, t, x_t)
        s_signal, s_noise = ab.sqrt(), (1.0 - ab).sqrt()
        if self.prediction == "epsilon":
            eps = prediction
            return (x_t - s_noise * eps) / s_signal, eps
        if self.prediction == "x0":
            return prediction, (x_t - s_signal * prediction) / s_noise
        x0 = s_signal * x_t - s_noise * prediction
        eps = s_noise * x_t + s_signal * prediction
        return x0, eps

    @staticmethod
    def model_input(x_t: torch.Tensor, x0_known: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Clean frames where ``known``, ``x_t`` elsewhere."""
        _check_known(x_t, known)
        mask = known.to(device=x_t.device, dtype=torch.bool)
        mask = mask.reshape(*mask.shape, *([1] * (x_t.dim() - 2)))
        return torch.where(mask, x0_known, x_t)

    def loss(
        self,
        model: Model,
        x0: torch.Tensor,
        known: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Masked MSE to the training target over the unknown frames of the batch.

        Draws ``t`` uniformly from ``[0, steps)`` and Gaussian noise, runs the model on the mixed
        input and averages the squared error over every pixel of every unknown frame. Samples
        with no unknown frame contribute nothing; a batch with none gives a zero loss.
        """
        return self.loss_and_x0(model, x0, known, generator)[0]

    def loss_and_x0(
        self,
        model: Model,
        x0: torch.Tensor,
        known: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`loss` and the model's estimate of ``x0`` behind it (for losses on it)."""
        _check_known(x0, known)
        batch = x0.shape[0]
        t = torch.randint(
            0, self.steps, (batch,), generator=generator, device=_where(generator, x0)
        )
        noise = _randn_like(x0, generator)
        t = t.to(x0.device)
        x_t = self.q_sample(x0, t, noise)
        pred = model(self.model_input(x_t, x0, known), t, known)
        if pred.shape != x0.shape:
            raise TsscError(f"model returned shape {tuple(pred.shape)}, expected {tuple(x0.shape)}")
        target = self.training_target(x0, noise, t)
        per_frame = (pred - target).square().flatten(2).mean(dim=2)
        unknown = ~known.to(device=x0.device, dtype=torch.bool)
        # where, not multiply: garbage (even inf/nan) on known frames must not leak in.
        total = torch.where(unknown, per_frame, torch.zeros_like(per_frame)).sum()
        x0_hat = self.predict_x0_eps(x_t, t, pred)[0]
        return total / unknown.sum().clamp_min(1).to(per_frame.dtype), x0_hat

    def check_ddim(self, steps: object, eta: object) -> None:
        """Refuse DDIM options this schedule cannot sample with.

        Raises:
            TsscError: Unless ``steps`` is an integer in ``1 .. schedule steps`` and ``eta`` a
                finite number >= 0.
        """
        if not is_integer(steps) or not 1 <= int(steps) <= self.steps:
            raise TsscError(f"DDIM steps must be an integer in [1, {self.steps}], got {steps!r}")
        if not (isinstance(eta, numbers.Real) and math.isfinite(float(eta)) and float(eta) >= 0):
            raise TsscError(f"DDIM eta must be a finite number >= 0, got {eta!r}")

    @torch.no_grad()
    def ddim_sample(
        self,
        model: Model,
        x_known: torch.Tensor,
        known: torch.Tensor,
        steps: int = 50,
        eta: float = 0.0,
        generator: Noise = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """DDIM sampling (Song et al. 2021) over an evenly spaced sub-sequence of timesteps.

        Args:
            model: ``model(x_in, t, known) -> prediction``.
            x_known: ``(B, T, ...)`` tensor whose known frames are the condition; its values at
                unknown frames are ignored.
            known: ``(B, T)`` bool mask of known frames.
            steps: Number of model calls, ``1 <= steps <= schedule steps``.
            eta: 0 for deterministic DDIM, 1 for DDPM-like stochasticity.
            generator: Source of the starting noise (and of ``z`` when ``eta > 0``): one
                generator, or one per batch row (:data:`Noise`).
            progress: Called as ``progress(i, total)`` after step ``i`` (0-based).

        Returns:
            The full sequence; known frames equal ``x_known`` bit for bit.
        """
        self.check_ddim(steps, eta)
        _check_known(x_known, known)
        # steps <= T makes the linspace spacing >= 1, so rounded values are already distinct.
        timesteps = torch.linspace(self.steps - 1, 0, steps, dtype=torch.float64).round().long()
        timesteps = torch.unique_consecutive(timesteps)
        x = _randn_like(x_known, generator)
        x0_hat = x
        total = len(timesteps)
        for i, t_int in enumerate(timesteps.tolist()):
            t = torch.full((x.shape[0],), t_int, dtype=torch.long, device=x.device)
            x0_hat, eps_hat = self._predict(model, x, x_known, known, t)
            if i == total - 1:
                x = x0_hat
            else:
                ab = self.alphas_cumprod[t_int]
                ab_prev = self.alphas_cumprod[int(timesteps[i + 1])]
                sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
                dir_coef = torch.sqrt((1 - ab_prev - sigma**2).clamp_min(0))
                x = _scalar(ab_prev.sqrt(), x) * x0_hat + _scalar(dir_coef, x) * eps_hat
                if eta > 0:
                    x = x + _scalar(sigma, x) * _randn_like(x, generator)
            if progress is not None:
                progress(i, total)
        return self.model_input(x, x_known, known)

    @torch.no_grad()
    def ddpm_sample(
        self,
        model: Model,
        x_known: torch.Tensor,
        known: torch.Tensor,
        generator: Noise = None,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Ancestral DDPM sampling over all schedule steps (no clipping of ``x0_hat``).

        Uses the posterior ``q(x_{t-1} | x_t, x0_hat)`` with variance
        ``beta_tilde = beta_t (1 - ab_{t-1}) / (1 - ab_t)``; arguments as in :meth:`ddim_sample`.

        Returns:
            The full sequence; known frames equal ``x_known`` bit for bit.
        """
        _check_known(x_known, known)
        x = _randn_like(x_known, generator)
        total = self.steps
        for i, t_int in enumerate(range(self.steps - 1, -1, -1)):
            t = torch.full((x.shape[0],), t_int, dtype=torch.long, device=x.device)
            x0_hat, _ = self._predict(model, x, x_known, known, t)
            if t_int == 0:
                x = x0_hat
            else:
                beta, alpha = self.betas[t_int], self.alphas[t_int]
                ab, ab_prev = self.alphas_cumprod[t_int], self.alphas_cumprod_prev[t_int]
                c_x0 = beta * ab_prev.sqrt() / (1 - ab)
                c_xt = (1 - ab_prev) * alpha.sqrt() / (1 - ab)
                var = beta * (1 - ab_prev) / (1 - ab)
                x = _scalar(c_x0, x) * x0_hat + _scalar(c_xt, x) * x
                x = x + _scalar(var.sqrt(), x) * _randn_like(x, generator)
            if progress is not None:
                progress(i, total)
        return self.model_input(x, x_known, known)

    def _predict(
        self,
        model: Model,
        x: torch.Tensor,
        x_known: torch.Tensor,
        known: torch.Tensor,
        t: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(self.model_input(x, x_known, known), t, known)
        if out.shape != x.shape:
            raise TsscError(f"model returned shape {tuple(out.shape)}, expected {tuple(x.shape)}")
        return self.predict_x0_eps(x, t, out)


def _check_known(x: torch.Tensor, known: torch.Tensor) -> None:
    if x.dim() < 2 or tuple(known.shape) != tuple(x.shape[:2]):
        raise TsscError(
            f"known mask shape {tuple(known.shape)} does not match frames {tuple(x.shape[:2])}"
        )


def _scalar(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return value.to(device=like.device, dtype=like.dtype)


def _where(generator: torch.Generator | None, like: torch.Tensor) -> torch.device:
    """Draw on the generator's device (a CPU generator can feed a GPU run reproducibly)."""
    return generator.device if generator is not None else like.device


def _randn_like(x: torch.Tensor, generator: Noise) -> torch.Tensor:
    if generator is None or isinstance(generator, torch.Generator):
        where = _where(generator, x)
        noise = torch.randn(x.shape, generator=generator, device=where, dtype=x.dtype)
    else:
        if len(generator) != x.shape[0]:
            raise ValueError(f"{len(generator)} generators for a batch of {x.shape[0]}")
        noise = torch.stack(
            [
                torch.randn(x.shape[1:], generator=g, device=g.device, dtype=x.dtype)
                for g in generator
            ]
        )
    return noise.to(x.device)
