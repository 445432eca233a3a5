"""The networks of the learned baselines, the frame synthesis they share, and their losses.

Every baseline makes the frame at time ``a`` (0..1) between two known frames ``x0`` and ``x1``
the same way: a network predicts the displacement fields ``f01`` (``x0`` warped by it looks
like ``x1``) and ``f10``, in voxels; ``x0`` is warped by ``a * f01`` and ``x1`` by
``(1 - a) * f10`` (flows scaled linearly in time, backward sampling) and the two are blended
``(1 - a) * w0 + a * w1``. The backbone is MONAI's VoxelMorph U-Net (``voxelmorph``) or its
Swin-transformer U-Net, SwinUNETR (``transmorph``). ``uvinet`` adds UVI-Net's feature pyramid:
features of both frames, warped like the frames, feed a refinement U-Net that corrects the
blend (zero-initialised, so an untrained refiner returns the blend).

Training is unsupervised (no intermediate frame): registration in both directions, local NCC
plus a smoothness penalty (VoxelMorph, TransMorph); UVI-Net adds its cycle: from ``x0`` and
``x1`` it extrapolates a virtual frame before 0 and after 1 and interpolates one between,
then interpolates ``x0`` and ``x1`` back from those virtual frames and compares.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from monai.losses import DiffusionLoss, LocalNormalizedCrossCorrelationLoss
from monai.networks.blocks import Warp
from monai.networks.nets import SwinUNETR, VoxelMorphUNet
from torch import nn

from tssc_py.baselines import MODELS
from tssc_py.checkpoint import CONFIG, load_checkpoint
from tssc_py.errors import TsscError, about, is_integer

DEFAULT_FEATURES = {"voxelmorph": 16, "transmorph": 24, "uvinet": 16}
"""Width of each model's first level when not given."""

MAX_FEATURES = 192
"""Widest first level: 8x the widest default (transmorph's 24; TransMorph-L has 128). At it
the largest network, transmorph's, has 0.4 G parameters (1.6 GB of float32 weights): bounded
without an estimate, and a typo or a hand-edited checkpoint is refused before it is built."""

NCC_WINDOW = 9
"""Side of the local NCC window (VoxelMorph's)."""

CHARBONNIER_EPS = 1e-3
"""UVI-Net's Charbonnier epsilon."""

with warnings.catch_warnings():
    # MONAI announces that it uses torch's grid_sample (it has no compiled extension here).
    warnings.simplefilter("ignore")
    _WARP = Warp(mode="bilinear", padding_mode="border")
# MONAI 1.6's DiffusionLoss indexes with a list, which torch 2.x deprecates in a warning.
warnings.filterwarnings(
    "ignore", "Using a non-tuple sequence", UserWarning, module="monai.losses.deform"
)


def warp(image: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out(p) = image(p + ddf(p))``, bilinear, edges extended.

    Args:
        image: ``(batch, channels, x, y)``.
        ddf: ``(batch, 2, x, y)`` displacement in voxels, channel ``i`` along axis ``i``.
    """
    return _WARP(image, ddf)


@dataclass
class BaselineConfig:
    """What a learned baseline is, enough to rebuild it.

    Attributes:
        model: One of :data:`~tssc_py.baselines.MODELS`.
        features: Width of the first level (transmorph: SwinUNETR's ``feature_size``, a
            multiple of 12; uvinet: a multiple of 4).
        size: Frame size ``(x, y)`` of the training data (for the record; any size works).
        prepare: The preparation options of the training data.
    """

    model: str
    features: int
    size: tuple[int, int] = (64, 64)
    prepare: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.size = (int(self.size[0]), int(self.size[1]))
        if self.model not in MODELS:
            raise TsscError(f"unknown baseline {self.model!r}; use one of {', '.join(MODELS)}")
        step = {"transmorph": 12, "uvinet": 4}.get(self.model, 1)
        least = max(step, 4)
        f = self.features
        if not is_integer(f) or not least <= int(f) <= MAX_FEATURES or int(f) % step:
            raise TsscError(
                f"{self.model}: features must be a multiple of {step} from {least} to "
                f"{MAX_FEATURES}, got {f!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {**asdict(self), "size": list(self.size)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaselineConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            TsscError: For missing or unknown fields.
        """
        try:
            return cls(**data)
        except TypeError as exc:
            raise TsscError(f"not a baseline config: {exc}") from None


def _small_init(conv: nn.Module) -> None:
    # VoxelMorph's choice: a near-zero flow at the start, so training starts at the identity.
    assert isinstance(conv, nn.Conv2d)
    nn.init.normal_(conv.weight, 0.0, 1e-5)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class FlowNet(nn.Module):
    """One backbone that predicts both displacement fields of a pair (batched together)."""

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        f = config.features
        self.backbone: nn.Module
        if config.model == "transmorph":
            # Windows of 4 tile the power-of-two token grids of 64x64 frames exactly.
            self.backbone = SwinUNETR(
                in_channels=2, out_channels=2, feature_size=f, spatial_dims=2, window_size=4
            )
            # Five halvings leave 2x2 at the bottleneck, where instance norm needs > 1 voxel.
            self.multiple = 64
            _small_init(self.backbone.get_submodule("out.conv.conv"))
        else:
            self.backbone = VoxelMorphUNet(
                spatial_dims=2,
                in_channels=2,
                unet_out_channels=f,
                channels=(f, 2 * f, 2 * f, 2 * f, 2 * f, 2 * f),
                final_conv_channels=(f, f),
            )
            self.multiple = 16
            _small_init(self.backbone.get_submodule("net.1.final_conv_out.conv"))

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f01, f10)`` for frames ``(batch, 1, x, y)`` (sizes multiples of ``multiple``)."""
        pairs = torch.cat([torch.cat([x0, x1], 1), torch.cat([x1, x0], 1)])
        f01, f10 = self.backbone(pairs).chunk(2)
        return f01, f10


def _block(inputs: int, outputs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inputs, outputs, 3, stride, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(outputs, outputs, 3, 1, 1),
        nn.LeakyReLU(0.2),
    )


class Pyramid(nn.Module):
    """UVI-Net's feature extractor: ``c``, ``2c``, ``4c`` channels at scales 1, 1/2, 1/4."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList([_block(1, c), _block(c, 2 * c, 2), _block(2 * c, 4 * c, 2)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for level in self.levels:
            x = level(x)
            feats.append(x)
        return feats


class Refiner(nn.Module):
    """UVI-Net's refinement U-Net: the blend plus both sides' warped features at each scale."""

    def __init__(self, c: int, r: int) -> None:
        super().__init__()
        self.down = nn.ModuleList(
            [_block(1 + 2 * c, r), _block(r + 4 * c, 2 * r), _block(2 * r + 8 * c, 4 * r)]
        )
        self.up = nn.ModuleList([_block(4 * r + 2 * r, 2 * r), _block(2 * r + r, r)])
        self.out = nn.Conv2d(r, 1, 3, 1, 1)
        assert self.out.bias is not None  # built with one
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, blend: torch.Tensor, feats0: list[torch.Tensor], feats1: list[torch.Tensor]
    ) -> torch.Tensor:
        """The correction to add to ``blend``."""
        x, skips = blend, []
        for level, block in enumerate(self.down):
            if level:
                x = F.avg_pool2d(x, 2)
            x = block(torch.cat([x, feats0[level], feats1[level]], 1))
            skips.append(x)
        for block, skip in zip(self.up, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.out(x)


def _times(a: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(a, dtype=like.dtype, device=like.device).reshape(-1, 1, 1, 1)


def blend(
    x0: torch.Tensor,
    x1: torch.Tensor,
    f01: torch.Tensor,
    f10: torch.Tensor,
    a: float | torch.Tensor,
) -> torch.Tensor:
    """The frame at time ``a`` from the two ends and their flows (the scheme of the module).

    Args:
        x0, x1: ``(batch, 1, x, y)`` frames at times 0 and 1.
        f01, f10: ``(batch, 2, x, y)`` flows, ``warp(x0, f01) ~ x1`` and ``warp(x1, f10) ~ x0``.
        a: Time, a float or one per batch item.
    """
    a = _times(a, x0)
    return (1 - a) * warp(x0, a * f01) + a * warp(x1, (1 - a) * f10)


def _warp_features(feats: list[torch.Tensor], flow: torch.Tensor) -> list[torch.Tensor]:
    # A displacement of d voxels is d / k voxels at 1/k resolution.
    out = []
    for feat in feats:
        k = flow.shape[-1] // feat.shape[-1]
        out.append(warp(feat, F.avg_pool2d(flow, k) / k if k > 1 else flow))
    return out


class Interpolator(nn.Module):
    """A learned baseline: flows, frame synthesis, and the training loss."""

    def __init__(self, config: BaselineConfig) -> None:
        super().__init__()
        self.config = config
        self.flow = FlowNet(config)
        self.pyramid: Pyramid | None = None
        self.refiner: Refiner | None = None
        if config.model == "uvinet":
            self.pyramid = Pyramid(config.features // 4)
            self.refiner = Refiner(config.features // 4, config.features // 2)
        self.ncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=2, kernel_size=NCC_WINDOW)
        self.smoothness = DiffusionLoss()

    @property
    def multiple(self) -> int:
        """Frame sides must be multiples of this (see :func:`pad`)."""
        return self.flow.multiple

    def features(self, x: torch.Tensor) -> list[torch.Tensor] | None:
        """The feature pyramid of frames ``x`` (uvinet), else None."""
        return None if self.pyramid is None else self.pyramid(x)

    def synthesize(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor,
        f01: torch.Tensor,
        f10: torch.Tensor,
        a: float | torch.Tensor,
        feats: tuple[list[torch.Tensor] | None, list[torch.Tensor] | None] = (None, None),
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The frame at time ``a`` (a float or one per batch item) and uvinet's correction.

        ``feats`` are the pyramids of ``x0`` and ``x1`` when already computed.
        """
        mixed = blend(x0, x1, f01, f10, a)
        if self.refiner is None:
            return mixed, None
        a = _times(a, x0)
        f0a, f1a = a * f01, (1 - a) * f10
        p0 = feats[0] if feats[0] is not None else self.features(x0)
        p1 = feats[1] if feats[1] is not None else self.features(x1)
        assert p0 is not None and p1 is not None
        correction = self.refiner(mixed, _warp_features(p0, f0a), _warp_features(p1, f1a))
        return mixed + correction, correction

    def _match(self, pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
        loss = self.ncc(pred, truth)
        if self.refiner is not None:  # UVI-Net adds a Charbonnier term to every comparison
            loss = loss + torch.sqrt((pred - truth) ** 2 + CHARBONNIER_EPS**2).mean()
        return loss

    def loss(
        self, x0: torch.Tensor, x1: torch.Tensor, generator: torch.Generator, smooth: float
    ) -> torch.Tensor:
        """The unsupervised training loss of a batch of frame pairs ``(batch, 1, x, y)``.

        Frames are padded as for inference (see :func:`pad`).

        Args:
            x0, x1: The two known frames of each pair.
            generator: CPU generator of uvinet's random times.
            smooth: Weight of the smoothness (diffusion) penalty on both flows.
        """
        x0, x1 = pad(x0, self.multiple), pad(x1, self.multiple)
        f01, f10 = self.flow(x0, x1)
        loss = self._match(warp(x0, f01), x1) + self._match(warp(x1, f10), x0)
        loss = loss + smooth * (self.smoothness(f01) + self.smoothness(f10))
        if self.refiner is None:
            return loss
        # UVI-Net's cycle: virtual frames at t1 in (-0.5, 0), t2 in (0, 1), t3 in (1, 1.5),
        # made from the real pair, then the real frames interpolated back from them.
        u = torch.rand(3, len(x0), generator=generator).to(x0.device)
        t1, t2, t3 = -0.5 * u[0], u[1], 1 + 0.5 * u[2]
        v1 = warp(x0, _times(t1, x0) * f01)
        near0 = _times(t2 < 0.5, x0)
        v2 = near0 * warp(x0, _times(t2, x0) * f01) + (1 - near0) * warp(
            x1, _times(1 - t2, x0) * f10
        )
        v3 = warp(x1, _times(1 - t3, x0) * f10)
        f12, f21 = self.flow(v1, v2)
        y0, c0 = self.synthesize(v1, v2, f12, f21, -t1 / (t2 - t1))
        f23, f32 = self.flow(v2, v3)
        y1, c1 = self.synthesize(v2, v3, f23, f32, (1 - t2) / (t3 - t2))
        assert c0 is not None and c1 is not None
        cycle = self._match(y0, x0) + self._match(y1, x1)
        return loss + cycle + c0.abs().mean() + c1.abs().mean()


def pad(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` padded at the high end of each in-plane axis (edge values) to ``multiple``."""
    h, w = x.shape[-2:]
    extra = (0, -w % multiple, 0, -h % multiple)
    return F.pad(x, extra, mode="replicate") if any(extra) else x


@torch.no_grad()
def interpolate_pair(
    model: Interpolator,
    frame0: np.ndarray,
    frame1: np.ndarray,
    times: Sequence[float],
    device: torch.device,
    batch_size: int = 16,
) -> np.ndarray:
    """Frames at ``times`` (0..1) between ``frame0`` and ``frame1`` of each slice.

    Args:
        model: The baseline (in eval mode).
        frame0, frame1: ``(slices, x, y)`` float32.
        times: Fractions of the way from ``frame0`` to ``frame1``.
        device: Where the model is.
        batch_size: Slices processed together.

    Returns:
        ``(slices, len(times), x, y)`` float32.
    """
    n, h, w = frame0.shape
    out = np.empty((n, len(times), h, w), dtype=np.float32)
    for i in range(0, n, batch_size):
        x0, x1 = (
            pad(torch.from_numpy(f[i : i + batch_size, None]).to(device), model.multiple)
            for f in (frame0, frame1)
        )
        f01, f10 = model.flow(x0, x1)
        feats = (model.features(x0), model.features(x1))
        for k, a in enumerate(times):
            y, _ = model.synthesize(x0, x1, f01, f10, a, feats)
            out[i : i + batch_size, k] = y[:, 0, :h, :w].float().cpu().numpy()
    return out


def load_baseline(path: str | Path, kind: str, device: str | torch.device = "cpu") -> Interpolator:
    """Rebuild a trained baseline from a ``tssc-train-baseline`` checkpoint, in eval mode.

    Raises:
        TsscError: If the folder is not a checkpoint of ``kind`` or its tensors do not fit.
    """
    ckpt = load_checkpoint(path, kind)
    with ckpt.building():
        with about(ckpt.path / CONFIG):
            config = BaselineConfig.from_dict(ckpt.config.get("baseline", {}))
        model = Interpolator(config)
    ckpt.load_into(model, "model")
    return model.to(device).eval()
