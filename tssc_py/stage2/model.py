"""Stage-2 refinement network: residual tri-directional Mamba blocks in a small 3D U-Net.

One file in the style of mamba.py: a config dataclass, the blocks, the model, size presets.
The network refines one 3D frame ``(B, 1, X, Y, Z)`` (x, y in-plane, z across slices) and
returns ``input + correction``; the correction head is zero-initialised, so an untrained
network is exactly the identity.

Tri-directional block (paper, Fig. 2): the feature volume is flattened in three axis orders,
x fastest (``xyz``), y fastest (``yzx``) and z fastest (``zxy``); each order is scanned
forward and backward by its own selective state-space layer, every output is put back in
voxel order, the three orders are fused by a linear layer and added to the input. Each order
is built from the block's input tensor itself (not from another order's output), for any
volume size.

Shape notation: B batch, C channels, X x Y x Z voxels, L = X*Y*Z tokens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import nn

from tssc_py.errors import TsscError, check_integer
from tssc_py.stage2.ssm import BACKENDS, Mamba

# Permutations of (B, C, X, Y, Z) whose last spatial axis varies fastest once flattened.
ORDERS: dict[str, tuple[int, ...]] = {
    "xyz": (0, 4, 3, 2, 1),  # (B, Z, Y, X, C): x fastest, then y, then z
    "yzx": (0, 2, 4, 3, 1),  # (B, X, Z, Y, C): y fastest, then z, then x
    "zxy": (0, 3, 2, 4, 1),  # (B, Y, X, Z, C): z fastest, then x, then y
}


def to_sequence(x: torch.Tensor, order: str) -> torch.Tensor:
    """(B, C, X, Y, Z) -> (B, L, C) tokens in the given scan order."""
    perm = ORDERS[order]
    return x.permute(*perm).reshape(x.shape[0], -1, x.shape[1])


def from_sequence(seq: torch.Tensor, order: str, shape: torch.Size) -> torch.Tensor:
    """Inverse of :func:`to_sequence` for a volume of ``shape`` (B, C, X, Y, Z)."""
    perm = ORDERS[order]
    permuted = seq.reshape(*(shape[i] for i in perm))
    inverse = [perm.index(i) for i in range(5)]
    return permuted.permute(*inverse)


GROUPS = 8
"""GroupNorm groups of every convolution (fewer for narrower layers)."""

CONTEXT_CHANNELS = 3
"""Context channels of :attr:`RefineConfig.context`: the known frames before and after, the
place in time between them."""

REFINE_LIMITS: dict[str, tuple[int, int]] = {
    "channels": (1, 512),
    "down": (0, 8),
    "blocks": (0, 64),
    "d_state": (1, 256),
    "d_conv": (1, 16),
    "expand": (1, 16),
}
"""Smallest and largest of each :class:`RefineConfig` size. The maxima lie far above the
presets (width 8 to 24, 2 to 3 downsamplings, 1 to 4 blocks, state 8 to 16) and mamba_ssm's
defaults (convolution 4, expansion 2): a typo or a hand-edited checkpoint is refused before it
sizes an allocation. Their product can still exceed memory: loading and training estimate the
parameters first."""


@dataclass
class RefineConfig:
    """Architecture of :class:`RefineNet`.

    Attributes:
        channels: Width after the stem; doubled at each downsampling stage.
        down: In-plane stride-2 stages before the Mamba blocks (z keeps its resolution: it is
            the thin axis of thick-slice MRI and the one stage 2 exists to repair).
        blocks: Residual tri-directional Mamba blocks at the lowest resolution.
        d_state: State size of each selective state-space layer.
        d_conv: Causal convolution width inside each layer.
        expand: Inner width of each layer as a multiple of the block width.
        backend: ``auto``, ``torch`` or ``mamba_ssm``.
        context: Also take the nearest known frame before and after the refined one, and its
            place in time between them, as three more input channels (see
            :func:`~tssc_py.stage2.refine.context_channels`). The paper's stage 2 sees the
            re-stacked volume alone; with it, the network can check the frame against measured
            anatomy across all slices at once.
    """

    channels: int = 32
    down: int = 2
    blocks: int = 2
    d_state: int = 16
    d_conv: int = 4
    expand: int = 2
    backend: str = "auto"
    context: bool = False

    def __post_init__(self) -> None:
        for name, (low, high) in REFINE_LIMITS.items():
            check_integer(f"stage-2 {name}", getattr(self, name), low, high)
        widths = [self.channels * 2**i for i in range(self.down + 1)]
        if any(w % min(GROUPS, w) for w in widths):
            raise TsscError(
                f"channels {self.channels} gives the widths {widths}: each must divide into "
                f"{GROUPS} normalisation groups (use a multiple of {GROUPS})"
            )
        if self.backend not in BACKENDS:
            raise TsscError(f"unknown state-space backend {self.backend!r}; use one of {BACKENDS}")

    @property
    def in_channels(self) -> int:
        """Input channels: the volume, and its context where ``context`` is on."""
        return 1 + CONTEXT_CHANNELS * self.context

    @property
    def multiple(self) -> int:
        """X and Y must be divisible by this."""
        return 2**self.down

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON checkpoints."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefineConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise TsscError(f"unknown stage-2 config keys: {', '.join(unknown)}")
        return cls(**data)


class TriDirectionalBlock(nn.Module):
    """Residual block of six selective scans: three axis orders, each both ways."""

    def __init__(self, dim: int, config: RefineConfig) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

        def layer() -> Mamba:
            return Mamba(dim, config.d_state, config.d_conv, config.expand, config.backend)

        self.forward_ssm = nn.ModuleDict({o: layer() for o in ORDERS})
        self.backward_ssm = nn.ModuleDict({o: layer() for o in ORDERS})
        self.fuse = nn.Linear(len(ORDERS) * dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, X, Y, Z) -> (B, C, X, Y, Z)."""
        outs = []
        for order in ORDERS:
            seq = self.norm(to_sequence(x, order))  # (B, L, C), from the block input
            y = self.forward_ssm[order](seq) + self.backward_ssm[order](seq.flip(1)).flip(1)
            outs.append(from_sequence(y, order, x.shape))  # (B, C, X, Y, Z)
        fused = self.fuse(torch.cat(outs, dim=1).movedim(1, -1)).movedim(-1, 1)
        return x + fused


def _conv(c_in: int, c_out: int, stride: tuple[int, int, int] = (1, 1, 1)) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1),
        nn.GroupNorm(min(GROUPS, c_out), c_out),
        nn.SiLU(),
    )


class RefineNet(nn.Module):
    """Residual volume refinement: conv encoder, tri-directional Mamba blocks, conv decoder.

    Args:
        config: Architecture.
    """

    def __init__(self, config: RefineConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else RefineConfig()
        cfg = self.config
        widths = [cfg.channels * 2**i for i in range(cfg.down + 1)]
        self.stem = _conv(cfg.in_channels, widths[0])
        self.encoder = nn.ModuleList(
            [_conv(widths[i], widths[i + 1], (2, 2, 1)) for i in range(cfg.down)]
        )
        self.blocks = nn.ModuleList(
            [TriDirectionalBlock(widths[-1], cfg) for _ in range(cfg.blocks)]
        )
        self.up = nn.ModuleList(
            [
                nn.ConvTranspose3d(widths[i + 1], widths[i], (2, 2, 1), stride=(2, 2, 1))
                for i in reversed(range(cfg.down))
            ]
        )
        self.decoder = nn.ModuleList(
            [_conv(2 * widths[i], widths[i]) for i in reversed(range(cfg.down))]
        )
        self.head = nn.Conv3d(widths[0], 1, 3, padding=1)
        assert self.head.bias is not None  # built with one
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        """Refine (B, I, X, Y, Z) inputs to (B, 1, X, Y, Z) volumes.

        I is ``config.in_channels``: the volume first, then its context; X and Y divisible
        by ``config.multiple``.
        """
        want = self.config.in_channels
        if volume.dim() != 5 or volume.shape[1] != want:
            raise TsscError(f"expected (B, {want}, X, Y, Z) inputs, got {tuple(volume.shape)}")
        m = self.config.multiple
        if volume.shape[2] % m or volume.shape[3] % m:
            raise TsscError(
                f"in-plane size {volume.shape[2]}x{volume.shape[3]} is not divisible by {m}"
            )
        h = self.stem(volume)  # (B, C, X, Y, Z)
        skips = []
        for down in self.encoder:
            skips.append(h)
            h = down(h)  # (B, 2C, X/2, Y/2, Z)
        for block in self.blocks:
            h = block(h)
        for up, dec in zip(self.up, self.decoder, strict=True):
            h = dec(torch.cat([up(h), skips.pop()], dim=1))
        return volume[:, :1] + self.head(h)


PRESETS: dict[str, RefineConfig] = {
    # Tests and CPU recipes at 64x64x16: 16x16x16 = 4096 tokens per scan.
    "tiny": RefineConfig(channels=8, down=2, blocks=1, d_state=8),
    # The default for 256x256x32 on a GPU: 32x32x32 = 32768 tokens per scan.
    "base": RefineConfig(channels=24, down=3, blocks=4, d_state=16),
}
"""The size presets, by name (``--preset``)."""


def preset_config(preset: str, **overrides: Any) -> RefineConfig:
    """A preset's config with optional overrides, without building the network.

    Raises:
        TsscError: For an unknown preset or override.
    """
    if preset not in PRESETS:
        raise TsscError(f"unknown stage-2 preset {preset!r} (known: {', '.join(PRESETS)})")
    return RefineConfig.from_dict({**PRESETS[preset].to_dict(), **overrides})


def build_refine(preset: str, **overrides: Any) -> RefineNet:
    """Build a preset with optional config overrides.

    Raises:
        TsscError: For an unknown preset or override.
    """
    return RefineNet(preset_config(preset, **overrides))
