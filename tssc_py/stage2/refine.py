"""Stage-2 inference: refine every generated frame of a filled series as a 3D volume.

Known frames are never touched. A frame larger than ``tile`` in-plane is refined in
overlapping tiles (all slices at once: the cross-slice context is what stage 2 is for) whose
outputs are blended with a smooth weight that falls towards each tile's border, so no seam
shows; in-plane sizes that the network cannot take are padded by edge replication and cropped
back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tssc_py.atomic import check_writable
from tssc_py.checkpoint import CONFIG, load_checkpoint
from tssc_py.device import autocast, check_network_fits, resolve_device
from tssc_py.errors import TsscError, about
from tssc_py.io import read_scan, write_scan
from tssc_py.prepare import check_filled_values, check_model_space, load_record
from tssc_py.stage2.model import RefineConfig, RefineNet
from tssc_py.stage2.ssm import resolve_backend


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering ``size`` with tiles of ``tile`` overlapping by >= ``overlap``."""
    if tile >= size:
        return [0]
    stride = max(1, tile - overlap)
    starts = list(range(0, size - tile, stride))
    return [*starts, size - tile]


def _weight(tile_x: int, tile_y: int, depth: int) -> np.ndarray:
    """Blending weight of one tile: a raised cosine, never zero, so every voxel is covered."""

    def ramp(n: int) -> np.ndarray:
        return (0.5 - 0.5 * np.cos(2 * np.pi * (np.arange(n) + 0.5) / n)).astype(np.float32)

    w = np.outer(ramp(tile_x), ramp(tile_y)) + 1e-3
    return np.repeat(w[:, :, None], depth, axis=2)


def context_channels(series: np.ndarray, known: Sequence[int], t: int) -> np.ndarray:
    """The context of frame ``t`` of an ``(x, y, z, t)`` series, ``(3, x, y, z)`` float32.

    The nearest known frame at or before ``t``, the nearest at or after it (at a series end,
    the one on the other side for both), and ``t``'s place between their times (0 at the
    first, 1 at the second) in every voxel.

    Raises:
        TsscError: If no frame is known.
    """
    if len(known) == 0:
        raise TsscError("a series without known frames has no context")
    before = [k for k in known if k <= t]
    after = [k for k in known if k >= t]
    t0 = max(before) if before else min(after)
    t1 = min(after) if after else max(before)
    place = (t - t0) / (t1 - t0) if t1 != t0 else 0.0
    frames = (series[..., t0], series[..., t1], np.full(series.shape[:3], place))
    return np.stack(frames).astype(np.float32)


def refine_volume(
    net: RefineNet,
    volume: np.ndarray,
    tile: int | None = None,
    overlap: int = 16,
    device: torch.device | None = None,
    context: np.ndarray | None = None,
) -> np.ndarray:
    """Refine one ``(x, y, z)`` float32 volume.

    Args:
        net: The refinement network (eval mode).
        volume: The volume.
        tile: In-plane tile side (a multiple of ``net.config.multiple``); None: whole frame.
        overlap: Minimum overlap between neighbouring tiles, in voxels.
        device: Where to run (default: the network's device).
        context: Its :func:`context_channels`, for a network trained with them (only then).

    Raises:
        TsscError: If ``tile`` is not a multiple of what the network needs, or ``context`` is
            given to a network without it or missing for one with it.
    """
    if volume.ndim != 3:
        raise TsscError(f"expected an (x, y, z) volume, got shape {volume.shape}")
    if net.config.context != (context is not None):
        wanted = "needs" if net.config.context else "was trained without"
        raise TsscError(f"this stage-2 network {wanted} the known frames' context")
    m = net.config.multiple
    device = device or next(net.parameters()).device
    nx, ny, nz = volume.shape
    inputs = volume[None] if context is None else np.concatenate([volume[None], context])
    px, py = -nx % m, -ny % m
    pad = ((0, 0), (0, px), (0, py), (0, 0))
    padded = np.pad(inputs, pad, mode="edge") if px or py else inputs
    sx, sy = padded.shape[1:3]
    if tile is None:
        tx, ty = sx, sy
    else:
        if tile % m or tile < m:
            raise TsscError(f"tile {tile} must be a positive multiple of {m}")
        tx, ty = min(tile, sx), min(tile, sy)
    out = np.zeros((sx, sy, nz), np.float32)
    total = np.zeros((sx, sy, nz), np.float32)
    weight = _weight(tx, ty, nz)
    with torch.no_grad(), autocast(device):
        for x0 in _starts(sx, tx, overlap):
            for y0 in _starts(sy, ty, overlap):
                patch = padded[:, x0 : x0 + tx, y0 : y0 + ty]
                inp = torch.from_numpy(np.ascontiguousarray(patch))[None].to(device)
                res = net(inp.float()).float()[0, 0].cpu().numpy()
                out[x0 : x0 + tx, y0 : y0 + ty] += res * weight
                total[x0 : x0 + tx, y0 : y0 + ty] += weight
    return (out / total)[:nx, :ny]


def refine_series(
    net: RefineNet,
    series: np.ndarray,
    known: Sequence[int],
    tile: int | None = None,
    overlap: int = 16,
    device: torch.device | None = None,
) -> np.ndarray:
    """Refine every frame of an ``(x, y, z, t)`` series that is not in ``known``.

    Raises:
        TsscError: For a series that is not 4D or a network that returns NaN or infinite
            values (a diverged training: named as stage 2's, not blamed on the scan).
    """
    if series.ndim != 4:
        raise TsscError(f"expected an (x, y, z, t) series, got shape {series.shape}")
    out = np.array(series, dtype=np.float32, copy=True)
    known_set = set(known)
    for t in range(series.shape[3]):
        if t not in known_set:
            context = context_channels(series, known, t) if net.config.context else None
            out[..., t] = refine_volume(net, series[..., t], tile, overlap, device, context)
            if not np.isfinite(out[..., t]).all():
                raise TsscError(f"stage 2 returned NaN or infinite values for frame {t}")
    return out


def _load_network(
    path: str | Path, device: str | torch.device = "cpu", backend: str | None = None
) -> RefineNet:
    """Rebuild a trained stage-2 network from its checkpoint folder, in eval mode."""
    ckpt = load_checkpoint(path, "stage2")
    with ckpt.building():
        data = dict(ckpt.config.get("refine", {}))
        if backend is not None:
            data["backend"] = backend
        with about(ckpt.path / CONFIG):
            config = RefineConfig.from_dict(data)
            check_network_fits(
                lambda: RefineNet(config), 2, "built, then loaded", "the network it describes"
            )
        net = RefineNet(config)
    ckpt.load_into(net, "model")
    return net.to(device).eval()


@dataclass
class Refiner:
    """A loaded stage-2 network with its tiling options, ready to refine series."""

    net: RefineNet
    device: torch.device
    checkpoint: Path
    tile: int | None = None
    overlap: int = 16

    @property
    def backend(self) -> str:
        """The state-space backend that runs."""
        return resolve_backend(self.net.config.backend, self.device)

    def settings(self) -> dict[str, object]:
        """What decides the refined series besides its input: the checkpoint's config (which
        names its training step), its weights' SHA-256 (a checkpoint replaced in place) and
        the tiling (the backend and device only round)."""
        checkpoint = load_checkpoint(self.checkpoint, "stage2")
        return {
            "checkpoint": checkpoint.config,
            "weights_sha256": checkpoint.digest("model"),
            "tile": self.tile,
            "overlap": self.overlap,
        }

    def __call__(self, series: np.ndarray, known: Sequence[int]) -> np.ndarray:
        """Refine every frame of ``series`` not in ``known``."""
        return refine_series(self.net, series, known, self.tile, self.overlap, self.device)


def load_refiner(
    checkpoint: str | Path,
    device: str = "auto",
    backend: str | None = None,
    tile: int | None = None,
    overlap: int = 16,
) -> Refiner:
    """Load a stage-2 checkpoint as a :class:`Refiner`.

    Args:
        checkpoint: ``tssc-train-stage2``'s ``OUT/checkpoint``.
        device: Where the network runs.
        backend: Force a state-space backend (default: the checkpoint's, normally ``auto``).
        tile: In-plane tile side (see :func:`refine_volume`).
        overlap: Minimum overlap between neighbouring tiles.

    Raises:
        TsscError: If the folder is not a stage-2 checkpoint or its tensors do not fit.
    """
    where = resolve_device(device)
    net = _load_network(checkpoint, where, backend)
    return Refiner(net, where, Path(checkpoint), tile, overlap)


def refine_file(
    filled: Path,
    record: Path,
    checkpoint: Path,
    out: Path,
    tile: int | None = None,
    overlap: int = 16,
    device: str = "auto",
    backend: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, str]:
    """Refine the generated frames of a filled prepared-space series and write it to ``out``.

    Returns:
        ``out`` and the state-space backend that ran.
    """
    check_writable(out, overwrite)
    rec = load_record(record)
    scan = read_scan(filled)
    with about(filled):
        check_model_space(scan.data.shape, rec, affine=scan.affine)
        check_filled_values(scan.data, rec)
    refiner = load_refiner(checkpoint, device, backend, tile, overlap)
    with about(filled):
        refined = refiner(scan.data, rec.known_frames)
    return write_scan(scan.replace(data=refined), out, overwrite), refiner.backend
