"""Stage 1 as one object: the DiT, its diffusion schedule and the residual formulation.

Residual diffusion over an interpolation prior. The model never has to produce a frame from
noise alone: an estimate of the unknown frames from the known ones, the *prior*, is computed
first, given to the network as a second input channel, and the diffusion runs over the scaled
residual ``scale * (x - prior)`` of the unknown frames. The priors (:data:`PRIORS`): ``linear``,
the per-voxel blend in time (what the ``linear`` method returns: right wherever nothing moves,
a cross-fade where things do); ``demons``, the known frames registered to each other and
warped towards each frame's time (what the ``demons`` method returns, batched in PyTorch:
:func:`~tssc_py.motion.demons_prior`), which puts moving structures about where they are, so
the network corrects what the registration gets wrong instead of inventing a rotation from a
cross-fade; ``rigid_demons``, the same after a rigid in-plane registration of each pair, so a
turn is followed along its arc (angle and shift linear in time) and demons registers only
what the rigid motion leaves; ``demons+linear``, both ``demons`` and ``linear`` as inputs. The
network
predicts that residual (``x0`` target) through a zero-initialised output layer, so an untrained
model returns the blend exactly, and training can only move it towards the data. The blend is
also the best place to start: it is already correct wherever nothing moves (most of every
MRI field of view), so the model's capacity goes to the moving structures. The residual of a
known frame is zero by construction, so known frames come back bit for bit.

Why ``x0`` and not ``v`` or epsilon: with ``x0`` the zero output *is* the prior, and the plain
``x0`` loss weights the high-noise steps, where the model learns the conditional mean of the
residual (the least-squares estimate that PSNR rewards); the low-noise steps add the texture
DDIM needs. Scaling the residual (``scale``, default 4) brings its spread near the unit
variance of the noise the schedule assumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tssc_py.checkpoint import CONFIG, load_checkpoint
from tssc_py.device import check_network_fits
from tssc_py.errors import TsscError, about, is_integer
from tssc_py.motion import DemonsConfig, RigidConfig, demons_prior
from tssc_py.stage1 import WEIGHTS
from tssc_py.stage1.diffusion import Diffusion, Model, Noise, Progress, ScheduleConfig
from tssc_py.stage1.model import DiTConfig, VideoDiT

FLIPS = (1, 2, 4, 8)
"""Numbers of flipped copies :meth:`Stage1.sample` can average."""
FLIP_DIMS = ((), (1,), (2,), (1, 2), (3,), (1, 3), (2, 3), (1, 2, 3))
"""The copies' flipped dimensions of a ``(B, T, x, y)`` batch, in the order they are added:
the 8 ways training flips its sequences (:meth:`~tssc_py.sequences.Sampler.sample`)."""


def check_flips(flips: int) -> None:
    """Raise TsscError unless ``flips`` is one of :data:`FLIPS`."""
    if flips not in FLIPS:
        raise TsscError(f"flips must be one of {', '.join(map(str, FLIPS))}, got {flips}")


@dataclass
class Stage1Config:
    """Everything needed to rebuild a stage-1 model and use it on the right data.

    Attributes:
        model: DiT architecture (with ``prior`` set unless ``prior`` is ``"none"``).
        schedule: Diffusion schedule and prediction target.
        frames: Window length in frames the model was trained on; longer series are cut into
            windows between known frames.
        size: Frame size ``(x, y)`` the model was trained on.
        prior: The prior the residual is taken over, one of :data:`PRIORS` (see the module
            docstring), or ``"none"``: the plain masked diffusion of the frames (the paper's).
        scale: Residual (or frame) multiplier before diffusion.
        prepare: The data preparation parameters of the training data (for the record and
            for the checks at inference).
    """

    model: DiTConfig
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    frames: int = 12
    size: tuple[int, int] = (64, 64)
    prior: str = "linear"
    scale: float = 4.0
    prepare: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        if self.prior not in PRIOR_CHOICES:
            raise TsscError(
                f"stage-1 prior must be one of {', '.join(PRIOR_CHOICES)}, got {self.prior!r}"
            )
        if prior_channels(self.prior) != self.model.priors:
            raise TsscError(
                f"a stage-1 model of prior {self.prior!r} needs "
                f"{prior_channels(self.prior)} prior input channel(s), not "
                f"{self.model.priors}"
            )
        if self.frames < 2:
            raise TsscError(f"stage-1 window must hold at least 2 frames, got {self.frames}")
        if not self.scale > 0:
            raise TsscError(f"stage-1 scale must be positive, got {self.scale}")
        p = self.model.patch_size
        if self.size[0] % p or self.size[1] % p:
            raise TsscError(
                f"frame size {self.size} is not divisible by the patch size {p} "
                "(prepare with a --size it divides, or give --patch-size or another --preset)"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "model": self.model.to_dict(),
            "schedule": self.schedule.to_dict(),
            "frames": self.frames,
            "size": list(self.size),
            "prior": self.prior,
            "scale": self.scale,
            "prepare": dict(self.prepare),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stage1Config:
        """Inverse of :meth:`to_dict`.

        Raises:
            TsscError: For missing or unknown keys.
        """
        keys = {"model", "schedule", "frames", "size", "prior", "scale", "prepare"}
        if not isinstance(data, dict) or set(data) != keys:
            got = sorted(data) if isinstance(data, dict) else type(data).__name__
            raise TsscError(f"stage-1 config must have keys {sorted(keys)}, got {got}")
        return cls(
            model=DiTConfig.from_dict(data["model"]),
            schedule=ScheduleConfig.from_dict(data["schedule"]),
            frames=int(data["frames"]),
            size=tuple(data["size"]),
            prior=str(data["prior"]),
            scale=float(data["scale"]),
            prepare=dict(data["prepare"]),
        )


def check_samples(samples: object) -> None:
    """Refuse a number of averaged samples that is not a positive integer."""
    if not is_integer(samples) or int(samples) < 1:
        raise TsscError(f"samples must be an integer of at least 1, got {samples!r}")


def linear_prior(x: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Per-voxel linear blend in time of the known frames, like the ``linear`` method.

    Frames before the first or after the last known frame hold that frame; known frames are
    copied exactly.

    Args:
        x: ``(B, T, H, W)``; only the known frames are read.
        known: ``(B, T)`` bool, at least one True per row.

    Returns:
        ``(B, T, H, W)`` blend.
    """
    t = known.shape[1]
    if not bool(known.any(dim=1).all()):
        raise TsscError("every sequence needs at least one known frame")
    idx = torch.arange(t, device=x.device)
    kn = known.to(x.device)
    # Index of the nearest known frame at or before / at or after each frame.
    before = torch.where(kn, idx, -1).cummax(dim=1).values  # (B, T)
    after = torch.where(kn, idx, t).flip(1).cummin(dim=1).values.flip(1)  # (B, T)
    before = torch.where(before < 0, after, before)
    after = torch.where(after >= t, before, after)
    span = (after - before).clamp_min(1)
    w = ((idx - before).clamp_min(0) / span).to(x.dtype)  # (B, T)
    w = torch.where(kn, torch.zeros_like(w), w)
    gather = lambda i: x.gather(1, i[:, :, None, None].expand_as(x))  # noqa: E731
    prior = gather(before) * (1 - w)[:, :, None, None] + gather(after) * w[:, :, None, None]
    return torch.where(kn[:, :, None, None], x, prior)


PRIOR_DEMONS = DemonsConfig(iterations=30)
"""The ``demons`` prior's registration: the ``demons`` method's resolutions and smoothing,
30 updates per level (50 gain under 0.1 dB on the synthetic cohorts at 1.7x the time)."""
ESTIMATES = {
    "linear": linear_prior,
    "demons": lambda x, known: demons_prior(x, known, PRIOR_DEMONS),
    "rigid_demons": lambda x, known: demons_prior(x, known, PRIOR_DEMONS, RigidConfig()),
}
"""Estimates of the unknown frames from the known ones: ``(x, known) -> estimate``, reading
only the known frames of ``x``."""
PRIORS = {
    "linear": ("linear",),
    "demons": ("demons",),
    "rigid_demons": ("rigid_demons",),
    "demons+linear": ("demons", "linear"),
}
"""The priors a residual stage-1 model can take: the estimates it gets as input channels, the
first the one the residual is taken over."""
PRIOR_CHOICES = ("none", *PRIORS)
"""The values of ``prior``: a prior's name, or ``none`` for no residual."""


def prior_channels(prior: str) -> int:
    """The input channels a model over ``prior`` (one of :data:`PRIOR_CHOICES`) takes."""
    return len(PRIORS.get(prior, ()))


def windows(known: Sequence[int], n_frames: int, length: int) -> list[tuple[int, int]]:
    """Cut a series into windows of at most ``length`` frames joined at known frames.

    The first window starts at frame 0, the last ends at the last frame, and consecutive
    windows share one known frame, so every unknown frame lies inside exactly one window.

    Returns:
        ``(start, stop)`` pairs, stop exclusive.

    Raises:
        TsscError: If known frames are too far apart for one window.
    """
    ks = sorted(set(int(k) for k in known))
    out: list[tuple[int, int]] = []
    start = 0
    while n_frames - start > length:
        reach = [k for k in ks if start < k < start + length]
        if not reach:
            raise TsscError(
                f"no known frame within {length - 1} frames after frame {start}: "
                f"the model's window is {length} frames (in upsample mode: --frames-between "
                f"{length - 2} at most; in evaluate mode: --frames {length} at most, or "
                f"--known-every {length - 1} at most)"
            )
        out.append((start, reach[-1] + 1))
        start = reach[-1]
    out.append((start, n_frames))
    return out


class Stage1:
    """A stage-1 network with its schedule: training loss and sampling in data space.

    Args:
        config: The stage-1 configuration.
        model: Network to use; a fresh one from ``config.model`` when omitted.
    """

    def __init__(self, config: Stage1Config, model: VideoDiT | None = None) -> None:
        self.config = config
        self.model = model if model is not None else VideoDiT(config.model)
        self.diffusion = Diffusion(config.schedule)

    def prior(self, x: torch.Tensor, known: torch.Tensor) -> torch.Tensor | None:
        """The model's prior inputs of ``x`` (B, T, H, W) from its ``known`` frames:
        ``(B, T, P, H, W)``, the residual's base first (None without a prior)."""
        if self.config.prior == "none":
            return None
        # In float32 (autocast's bf16 convolutions would round the registration's updates).
        with torch.autocast(x.device.type, enabled=False):
            estimates = [ESTIMATES[name](x.float(), known) for name in PRIORS[self.config.prior]]
        return torch.stack(estimates, dim=2).to(x.dtype)

    def _split(
        self, x: torch.Tensor, known: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The priors (None without) and the diffusion-space target."""
        prior = self.prior(x, known)
        if prior is None:
            return None, x * self.config.scale
        return prior, (x - prior[:, :, 0]) * self.config.scale

    def _net(self, prior: torch.Tensor | None, model: nn.Module | None = None) -> Model:
        net = model if model is not None else self.model
        if prior is None:
            return net
        return lambda x_in, t, k: net(x_in, t, k, prior)

    def loss(
        self,
        x: torch.Tensor,
        known: torch.Tensor,
        generator: torch.Generator | None = None,
        w_ssim: float = 0.0,
    ) -> torch.Tensor:
        """Masked diffusion loss of a batch of sequences ``x`` (B, T, H, W) in [0, 1] units.

        With ``w_ssim``, plus ``w_ssim * (1 - SSIM)`` of the model's estimate of the unknown
        frames (2D SSIM per frame, in image units): the squared error alone is lowest for the
        conditional mean, smoother than any real frame, which SSIM's contrast term marks down.
        """
        prior, target = self._split(x, known)
        mse, x0_hat = self.diffusion.loss_and_x0(self._net(prior), target, known, generator)
        if not w_ssim:
            return mse
        from pytorch_msssim import ssim

        frames = x0_hat / self.config.scale
        if prior is not None:
            frames = prior[:, :, 0] + frames
        unknown = ~known.to(device=x.device, dtype=torch.bool)
        pred, truth = frames[unknown][:, None].float(), x[unknown][:, None].float()
        if not len(pred):
            return mse
        # float32 with autocast off: SSIM's variances are differences of nearly equal means,
        # which bf16 convolutions (autocast casts them) lose; its gradient was mostly rounding
        # noise in CUDA training (cosine 0.15-0.6 to the float32 gradient).
        with torch.autocast(x.device.type, enabled=False):
            return mse + w_ssim * (1 - ssim(pred, truth, data_range=1.0, size_average=True))

    @torch.no_grad()
    def sample(
        self,
        x_known: torch.Tensor,
        known: torch.Tensor,
        steps: int = 25,
        eta: float = 0.0,
        generator: Noise = None,
        model: nn.Module | None = None,
        progress: Progress | None = None,
        samples: int = 1,
        flips: int = 1,
    ) -> torch.Tensor:
        """Generate every unknown frame jointly with DDIM; known frames come back bit for bit.

        Args:
            x_known: ``(B, T, H, W)``; values at unknown frames are ignored.
            known: ``(B, T)`` bool.
            steps: DDIM steps.
            eta: DDIM eta.
            generator: Noise source: one generator, or one per row of the batch.
            model: Weights to use instead of ``self.model`` (e.g. the EMA copy).
            progress: Passed to the sampler.
            samples: Independent samples averaged into the result. One sample is a sharp,
                plausible guess; their mean approaches the conditional mean, which has the
                lowest expected squared error (higher PSNR) but blurs what the known frames
                leave uncertain.
            flips: Flipped copies of the input averaged into the result (a geometric
                self-ensemble): 1 (none), 2 (and reversed in time), 4 (and flipped in x) or
                8 (and flipped in y). Training flips its sequences the same ways, so each copy
                is an equally good estimate; their errors partly differ, and the mean keeps
                less of the model's own error (each copy runs ``samples`` samples).
        """
        check_samples(samples)
        check_flips(flips)
        known = known.to(device=x_known.device, dtype=torch.bool)
        x_known = torch.where(known[:, :, None, None], x_known, torch.zeros_like(x_known))
        prior, cond = self._split(x_known, known)
        out = torch.zeros_like(cond)
        for dims in FLIP_DIMS[:flips]:
            # The priors' channel axis comes after time: the in-plane axes are one further.
            prior_dims = [d if d == 1 else d + 1 for d in dims]
            net = self._net(None if prior is None else prior.flip(prior_dims), model)
            flipped, mask = cond.flip(dims), known.flip([d for d in dims if d == 1])
            for _ in range(samples):
                y = self.diffusion.ddim_sample(net, flipped, mask, steps, eta, generator, progress)
                out += y.flip(dims)
                progress = None  # one progress bar: the first run's
        out = out / (self.config.scale * samples * flips)
        if prior is not None:
            out = prior[:, :, 0] + out
        return torch.where(known[:, :, None, None], x_known, out)


def load_stage1(
    path: str | Path, weights: str = "ema", device: str | torch.device = "cpu"
) -> Stage1:
    """Rebuild a trained stage-1 model from a checkpoint folder, in eval mode.

    Args:
        path: Checkpoint folder (``tssc-train-stage1``'s ``OUT/checkpoint``).
        weights: ``ema`` (the averaged weights, the default) or ``model`` (the raw ones).
        device: Where to put the weights.

    Raises:
        TsscError: If the folder is not a stage-1 checkpoint or its tensors do not fit.
    """
    if weights not in WEIGHTS:
        raise TsscError(f"weights must be one of {', '.join(WEIGHTS)}, got {weights!r}")
    ckpt = load_checkpoint(path, "stage1")
    with ckpt.building():
        with about(ckpt.path / CONFIG):
            config = Stage1Config.from_dict(ckpt.config.get("stage1", {}))
            check_network_fits(
                lambda: VideoDiT(config.model), 2, "built, then loaded", "the network it describes"
            )
        model = VideoDiT(config.model)
    ckpt.load_into(model, weights)
    return Stage1(config, model.to(device).eval())
