"""Motion between frames in PyTorch: warping, batched demons registration, warped blends.

The registration prior of stage 1 (:func:`demons_prior`) fills every unknown frame of a 2D+t
sequence from the known frames alone, as the ``demons`` method does with SimpleITK: the two
known frames around a gap are registered both ways, each is warped part of the way towards
the frame's time and the two are blended. Here it runs on a whole batch of sequences at once,
on the CPU or a GPU, fast enough to compute during training for every sampled sequence.
Optionally a rigid in-plane registration (:func:`rigid`) comes first, as registration tools
chain rigid and deformable stages: a turn is then followed along its arc, angle and shift
growing linearly in time, instead of being cut short along a chord of demons' scaled field.

Displacements are ``(batch, 2, x, y)`` in voxels, channel ``i`` along axis ``i`` of an
``(x, y)`` frame; ``warp(image, d)(p) = image(p + d(p))`` (backward warping).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.nn import functional as F  # noqa: N812 (the usual name)

from tssc_py.errors import TsscError, check_integer


def warp(image: torch.Tensor, ddf: torch.Tensor) -> torch.Tensor:
    """Backward warp ``out(p) = image(p + ddf(p))``, bilinear, edges extended.

    Args:
        image: ``(batch, channels, x, y)``.
        ddf: ``(batch, 2, x, y)`` displacement in voxels.
    """
    nx, ny = image.shape[2:]
    gx, gy = torch.meshgrid(
        torch.arange(nx, device=image.device, dtype=image.dtype),
        torch.arange(ny, device=image.device, dtype=image.dtype),
        indexing="ij",
    )
    px = (gx + ddf[:, 0]) * (2 / max(nx - 1, 1)) - 1
    py = (gy + ddf[:, 1]) * (2 / max(ny - 1, 1)) - 1
    # grid_sample's grid is (x, y) = (last axis, second last): here y, then x.
    grid = torch.stack((py, px), dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _gaussian(field: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(batch, channels, x, y)`` smoothed with a Gaussian of ``sigma`` voxels, edges
    extended."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.arange(-radius, radius + 1, device=field.device, dtype=field.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel /= kernel.sum()
    channels = field.shape[1]
    out = F.pad(field, (0, 0, radius, radius), mode="replicate")
    out = F.conv2d(out, kernel.reshape(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    out = F.pad(out, (radius, radius, 0, 0), mode="replicate")
    return F.conv2d(out, kernel.reshape(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)


def _gradient(image: torch.Tensor) -> torch.Tensor:
    """Central differences of ``(batch, 1, x, y)``: ``(batch, 2, x, y)``, one-sided at edges."""
    gx = torch.gradient(image[:, 0], dim=1)[0]
    gy = torch.gradient(image[:, 0], dim=2)[0]
    return torch.stack((gx, gy), dim=1)


INTENSITY_THRESHOLD = 1e-3
"""Intensity difference below which demons does not update (ITK's default)."""
MIN_LEVEL_SIZE = 8
"""Fewest voxels a side of a resolution level (64x64 frames keep 4 levels: 8x8 the coarsest)."""


def _pyramid(
    fixed: torch.Tensor, moving: torch.Tensor, levels: int
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(factor, fixed, moving)`` at up to ``levels`` resolutions, coarse to fine, each half
    the next; ``factor`` is the level's voxel size in full-resolution voxels."""
    # Coarse levels of fewer than MIN_LEVEL_SIZE voxels a side are left out: a voxel there is
    # too large a step at full resolution (on 24x20 frames a 3x2 level sent the field astray).
    fits = max(1, int(math.log2(max(1, min(fixed.shape[2:]) // MIN_LEVEL_SIZE))) + 1)
    for level in reversed(range(min(levels, fits))):
        factor = 2**level
        # As the demons method makes its levels: Gaussian smoothing, then every factor-th
        # voxel (SimpleITK's SmoothingRecursiveGaussian and Shrink).
        f, m = (
            (_gaussian(image, 0.5 * factor)[:, :, ::factor, ::factor] if factor > 1 else image)
            for image in (fixed, moving)
        )
        yield factor, f, m


@dataclass(frozen=True)
class DemonsConfig:
    """Demons registration settings (those of the ``demons`` method by default).

    Attributes:
        iterations: Updates per resolution level.
        sigma: Standard deviation, in voxels of each level, of the displacement's smoothing
            after every update.
        levels: Resolutions, each half the next, coarse to fine (at most as many as leave
            the coarsest :data:`MIN_LEVEL_SIZE` voxels a side).
    """

    iterations: int = 50
    sigma: float = 2.5
    levels: int = 4

    def __post_init__(self) -> None:
        check_integer("demons iterations", self.iterations, 1, 1000)
        check_integer("demons levels", self.levels, 1, 8)
        if not isinstance(self.sigma, int | float) or not 0 < self.sigma <= 32:
            raise TsscError(f"demons sigma must lie in (0, 32], got {self.sigma!r}")


def demons(moving: torch.Tensor, fixed: torch.Tensor, config: DemonsConfig) -> torch.Tensor:
    """Symmetric-forces demons (Thirion 1998; Vercauteren et al. 2009), batched.

    Args:
        moving, fixed: ``(batch, 1, x, y)`` images.
        config: Iterations, smoothing and resolutions.

    Returns:
        ``(batch, 2, x, y)`` displacement ``d`` with ``warp(moving, d) ~ fixed``.
    """
    ddf: torch.Tensor | None = None
    for _, f, m in _pyramid(fixed, moving, config.levels):
        size = list(f.shape[2:])
        if ddf is None:
            ddf = torch.zeros((len(f), 2, *size), device=f.device, dtype=f.dtype)
        else:
            scale = torch.tensor(size, device=f.device, dtype=f.dtype) / torch.tensor(
                ddf.shape[2:], device=f.device, dtype=f.dtype
            )
            ddf = F.interpolate(ddf, size=size, mode="bilinear", align_corners=True)
            ddf = ddf * scale.reshape(1, 2, 1, 1)
        grad_f = _gradient(f)
        for _ in range(config.iterations):
            warped = warp(m, ddf)
            diff = f - warped
            g = grad_f + _gradient(warped)
            # ITK's symmetric forces (at most one voxel per update); no update where the
            # images agree to ITK's intensity threshold, so noise alone does not move the field.
            denominator = (g * g).sum(dim=1, keepdim=True) + diff * diff
            moves = (diff.abs() >= INTENSITY_THRESHOLD) & (denominator > 1e-9)
            step = torch.where(moves, 2 * diff / denominator.clamp_min(1e-9), 0.0)
            ddf = _gaussian(ddf + step * g, config.sigma)
    assert ddf is not None  # levels >= 1
    return ddf


@dataclass(frozen=True)
class RigidConfig:
    """Rigid in-plane registration settings.

    Attributes:
        iterations: Gauss-Newton updates per resolution level.
        levels: Resolutions, each half the next, coarse to fine (as for demons, at most as
            many as leave :data:`MIN_LEVEL_SIZE` voxels a side).
    """

    iterations: int = 10
    levels: int = 3

    def __post_init__(self) -> None:
        check_integer("rigid iterations", self.iterations, 1, 1000)
        check_integer("rigid levels", self.levels, 1, 8)


def rigid_field(
    params: torch.Tensor, shape: tuple[int, int], fraction: float | torch.Tensor = 1.0
) -> torch.Tensor:
    """The displacement of a rigid motion taken ``fraction`` of the way.

    Args:
        params: ``(batch, 3)``: angle in radians about the frame's centre, shift along x and y
            in voxels; the motion maps ``p`` to ``R(angle) (p - c) + c + shift``.
        shape: ``(x, y)`` of the frames.
        fraction: Scalar or ``(batch,)``: angle and shift are multiplied by it.

    Returns:
        ``(batch, 2, x, y)`` displacement, for :func:`warp`.
    """
    fraction = torch.as_tensor(fraction, device=params.device, dtype=params.dtype)
    return _rigid_displacement(params * fraction.reshape(-1, 1), _centred_grid(shape, params))


def _centred_grid(shape: tuple[int, int], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel coordinates ``(x, y)`` of ``shape`` relative to the frame's centre, on ``like``'s
    device and dtype."""
    gx, gy = torch.meshgrid(
        *(torch.arange(n, device=like.device, dtype=like.dtype) - (n - 1) / 2 for n in shape),
        indexing="ij",
    )
    return gx, gy


def _rigid_displacement(
    params: torch.Tensor, grid: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """:func:`rigid_field` of ``params`` on a :func:`_centred_grid`."""
    gx, gy = grid
    angle = params[:, 0, None, None]
    cos, sin = torch.cos(angle), torch.sin(angle)
    dx = cos * gx - sin * gy + params[:, 1, None, None] - gx
    dy = sin * gx + cos * gy + params[:, 2, None, None] - gy
    return torch.stack((dx, dy), dim=1)


def rigid(moving: torch.Tensor, fixed: torch.Tensor, config: RigidConfig) -> torch.Tensor:
    """Rigid in-plane registration by Gauss-Newton on the squared difference, batched.

    Coarse to fine like :func:`demons`. No autograd: it runs under ``torch.inference_mode``.

    Args:
        moving, fixed: ``(batch, 1, x, y)`` images.
        config: Iterations and resolutions.

    Returns:
        ``(batch, 3)`` parameters of :func:`rigid_field` with
        ``warp(moving, rigid_field(params, shape)) ~ fixed``.
    """
    params = torch.zeros((len(moving), 3), device=moving.device, dtype=moving.dtype)
    for factor, f, m in _pyramid(fixed, moving, config.levels):
        # Shifts in voxels of this level; the angle is the same at every level.
        scale = torch.tensor([1.0, 1 / factor, 1 / factor], device=f.device, dtype=f.dtype)
        level_params = params * scale
        grid = _centred_grid((f.shape[2], f.shape[3]), f)
        gx, gy = grid
        grad_m = _gradient(m)
        for _ in range(config.iterations):
            ddf = _rigid_displacement(level_params, grid)
            warped = warp(m, ddf)
            # The moving image's gradient at the moved points, and the motion's derivatives:
            # d(R(a) u)/da = R(a + 90 degrees) u for u = p - c.
            grad = warp(grad_m, ddf)
            angle = level_params[:, 0, None, None]
            cos, sin = torch.cos(angle), torch.sin(angle)
            jacobian = torch.stack(
                (
                    grad[:, 0] * (-sin * gx - cos * gy) + grad[:, 1] * (cos * gx - sin * gy),
                    grad[:, 0],
                    grad[:, 1],
                ),
                dim=1,
            ).flatten(2)  # (batch, 3, voxels)
            residual = (warped - f).flatten(1)  # (batch, voxels)
            hessian = jacobian @ jacobian.transpose(1, 2)
            # A small damping keeps flat images (nothing to align) from a singular system.
            damping = 1e-6 * hessian.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-12)
            hessian = hessian + damping[:, None, None] * torch.eye(
                3, device=f.device, dtype=f.dtype
            )
            step = torch.linalg.solve(hessian, (jacobian @ residual[:, :, None]))[:, :, 0]
            level_params = level_params - step
        params = level_params / scale
    return params


def demons_prior(
    x: torch.Tensor,
    known: torch.Tensor,
    config: DemonsConfig | None = None,
    rigid_config: RigidConfig | None = None,
) -> torch.Tensor:
    """Every unknown frame of each sequence from the known frames around it, through their
    demons registration (both ways) and a warped blend, as the ``demons`` method fills them.

    Frames before the first or after the last known frame hold that frame; known frames are
    copied exactly; only the known frames are read.

    Args:
        x: ``(B, T, H, W)``.
        known: ``(B, T)`` bool, at least one True per row.
        config: Demons settings (the ``demons`` method's by default).
        rigid_config: With it, a rigid registration (:func:`rigid`) of each pair first; demons
            then registers what the rigid motion leaves, and each end is moved the frame's
            part of the way along both.

    Returns:
        ``(B, T, H, W)``.
    """
    config = config or DemonsConfig()
    known = known.to(device=x.device, dtype=torch.bool)
    if not bool(known.any(dim=1).all()):
        raise TsscError("every sequence needs at least one known frame")
    t = known.shape[1]
    idx = torch.arange(t, device=x.device)
    before = torch.where(known, idx, -1).cummax(dim=1).values
    after = torch.where(known, idx, t).flip(1).cummin(dim=1).values.flip(1)
    # Outside the known range: the nearest known frame.
    out = torch.where(known[:, :, None, None], x, 0.0)
    first, last = torch.where(before < 0, after, before), torch.where(after >= t, before, after)
    gather = lambda i: x.gather(1, i[:, :, None, None].expand_as(x))  # noqa: E731
    outside = (before < 0) | (after >= t)
    out = torch.where(outside[:, :, None, None], gather(torch.where(before < 0, first, last)), out)
    # Gaps: consecutive known frames with frames between them.
    following = after.roll(-1, 1)  # the first known frame after each frame
    gaps = known & (idx < t - 1) & (following > idx + 1) & (following < t)
    rows, starts = torch.nonzero(gaps, as_tuple=True)
    if not len(rows):
        return out
    stops = following[rows, starts]
    x0, x1 = x[rows, starts][:, None], x[rows, stops][:, None]
    shape = (x.shape[2], x.shape[3])
    # One registration batch for both directions of every gap.
    moving, fixed = torch.cat((x0, x1)), torch.cat((x1, x0))
    turns = None
    if rigid_config is not None:
        turns = rigid(moving, fixed, rigid_config)
        moving = warp(moving, rigid_field(turns, shape))
    flows = demons(moving, fixed, config)
    f01, f10 = flows[: len(rows)], flows[len(rows) :]
    inside = ~known & ~outside
    frows, frames = torch.nonzero(inside, as_tuple=True)
    # The gap of each unknown frame: the one starting at its known frame before.
    gap = torch.searchsorted(rows * t + starts, frows * t + before[frows, frames])
    a = ((frames - starts[gap]) / (stops[gap] - starts[gap])).to(x.dtype).reshape(-1, 1, 1, 1)
    m0, m1 = x0[gap], x1[gap]
    if turns is not None:
        # Two warps (rigid, then demons) rather than one composed field: on the synthetic
        # cohorts the composed field's sharper frames scored 0.1-0.2 dB lower.
        m0 = warp(m0, rigid_field(turns[: len(rows)][gap], shape, a.flatten()))
        m1 = warp(m1, rigid_field(turns[len(rows) :][gap], shape, 1 - a.flatten()))
    filled = (1 - a) * warp(m0, a * f01[gap]) + a * warp(m1, (1 - a) * f10[gap])
    out[frows, frames] = filled[:, 0]
    return out
