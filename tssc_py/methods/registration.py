"""Registration-based interpolation: demons (no training) and the learned baselines.

Each fills the frames between two consecutive known frames from those two alone: displacement
fields between them in both directions, scaled linearly in time, warp both ends (backward
sampling) and the warped frames are blended (see :mod:`tssc_py.baselines.model`). Frames
outside the known range hold the nearest known frame, as with ``linear``.

MONAI (and with it the networks) is imported when a method is built, not when the registry
is, so that every command line starts without it.
"""

from __future__ import annotations

import numbers
from abc import abstractmethod
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from tssc_py.device import resolve_device
from tssc_py.errors import TsscError, is_integer
from tssc_py.methods.base import Method, register


class PairMethod(Method):
    """A method that fills each gap between consecutive known frames from its two ends."""

    min_known = 2

    @abstractmethod
    def between(self, frame0: np.ndarray, frame1: np.ndarray, times: Sequence[float]) -> np.ndarray:
        """Frames at ``times`` (0..1) between ``frame0`` and ``frame1`` (both ``(slices, x, y)``).

        Returns:
            ``(slices, len(times), x, y)``.
        """

    def fill(self, stack: np.ndarray, known: Sequence[int]) -> np.ndarray:
        out = stack.copy()
        out[:, : known[0]] = stack[:, known[0] : known[0] + 1]
        out[:, known[-1] + 1 :] = stack[:, known[-1] : known[-1] + 1]
        # Slices whose known frames are empty (depth padding) keep their zeros.
        active = np.flatnonzero(np.abs(stack[:, list(known)]).reshape(len(stack), -1).max(axis=1))
        for start, stop in pairwise(known):
            if stop - start > 1 and len(active):
                times = [(t - start) / (stop - start) for t in range(start + 1, stop)]
                out[active, start + 1 : stop] = self.between(
                    stack[active, start], stack[active, stop], times
                )
        return out


def demons_field(
    moving: np.ndarray, fixed: np.ndarray, iterations: int, sigma: float, levels: int
) -> np.ndarray:
    """SimpleITK symmetric-forces demons: ``d`` with ``moving(p + d(p)) ~ fixed(p)``.

    Coarse to fine over ``levels`` resolutions (halving each time), so that motion of several
    voxels is found.

    Args:
        moving, fixed: ``(x, y)`` images.
        iterations: Demons iterations per level.
        sigma: Standard deviation (voxels of each level) of the field's Gaussian smoothing.
        levels: Resolutions.

    Returns:
        ``(2, x, y)`` float32 displacement in voxels, component ``i`` along axis ``i``.
    """
    full = [sitk.GetImageFromArray(a.astype(np.float32)) for a in (fixed, moving)]
    demons = sitk.SymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(iterations)
    demons.SetStandardDeviations(sigma)
    field = None
    for level in reversed(range(levels)):
        factor = 2**level
        fixed_l, moving_l = (
            sitk.Shrink(sitk.SmoothingRecursiveGaussian(image, 0.5 * factor), [factor] * 2)
            if factor > 1
            else image
            for image in full
        )
        if field is None:
            field = sitk.Image(fixed_l.GetSize(), sitk.sitkVectorFloat64, 2)
            field.CopyInformation(fixed_l)
        else:
            field = sitk.Resample(
                field, fixed_l, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID()
            )
        field = demons.Execute(fixed_l, moving_l, field)
    if field is None:
        raise TsscError(f"demons needs at least one resolution level, got {levels}")
    # ITK orders axes (and vector components) the other way round from NumPy.
    field_xy = sitk.GetArrayFromImage(field)[..., ::-1].transpose(2, 0, 1)
    return np.ascontiguousarray(field_xy, dtype=np.float32)


@register
class Demons(PairMethod):
    """Symmetric-forces demons (Thirion 1998; Vercauteren et al. 2009) per 2D slice.

    Needs no training and no GPU: two registrations per slice and gap (one each way).

    Args:
        iterations: Demons iterations per resolution level.
        sigma: Smoothing of the displacement field (voxels).
        levels: Resolution levels, coarse to fine.
    """

    name = "demons"
    options = ("iterations", "sigma", "levels")

    def __init__(self, iterations: int = 50, sigma: float = 2.5, levels: int = 4) -> None:
        for option, value in (("iterations", iterations), ("levels", levels)):
            if not is_integer(value) or int(value) < 1:
                raise TsscError(f"demons {option} must be a positive integer, got {value!r}")
        if not (isinstance(sigma, numbers.Real) and 0 < float(sigma) < float("inf")):
            raise TsscError(f"demons sigma must be positive, got {sigma!r}")
        # Plain Python numbers: they go to ITK and into run.json.
        self.iterations: int = int(iterations)
        self.sigma: float = float(sigma)
        self.levels: int = int(levels)

    def between(self, frame0: np.ndarray, frame1: np.ndarray, times: Sequence[float]) -> np.ndarray:
        from tssc_py.baselines.model import blend

        out = np.empty((len(frame0), len(times), *frame0.shape[1:]), dtype=np.float32)
        for i, (a, b) in enumerate(zip(frame0, frame1, strict=True)):
            f01, f10 = (
                torch.from_numpy(demons_field(m, f, self.iterations, self.sigma, self.levels))[None]
                for m, f in ((a, b), (b, a))
            )
            x0, x1 = torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]
            for k, t in enumerate(times):
                out[i, k] = blend(x0, x1, f01, f10, t)[0, 0].numpy()
        return out


class Learned(PairMethod):
    """A baseline trained by ``tssc-train-baseline --model NAME``.

    The method's name is the model's and its checkpoints' kind.

    Args:
        checkpoint: Checkpoint folder of a run of this model.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Slices processed together.
    """

    options = ("checkpoint", "device", "batch_size")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.checkpoint_kind = cls.name

    def __init__(
        self, checkpoint: str | Path | None = None, device: str = "auto", batch_size: int = 16
    ) -> None:
        from tssc_py.baselines.model import load_baseline

        if checkpoint is None:
            raise TsscError(
                f"method {self.name!r} needs a trained model (--checkpoint DIR: the checkpoint/ "
                f"folder of tssc-train-baseline --model {self.name})"
            )
        if batch_size < 1:
            raise TsscError(f"batch size must be at least 1, got {batch_size}")
        self.device = resolve_device(device)
        self.model = load_baseline(checkpoint, self.name, self.device)
        self.checkpoint, self.batch_size = Path(checkpoint), batch_size

    def between(self, frame0: np.ndarray, frame1: np.ndarray, times: Sequence[float]) -> np.ndarray:
        from tssc_py.baselines.model import interpolate_pair

        return interpolate_pair(self.model, frame0, frame1, times, self.device, self.batch_size)


@register
class VoxelMorph(Learned):
    """VoxelMorph (Balakrishnan et al., IEEE TMI 2019): a U-Net predicts the flows."""

    name = "voxelmorph"


@register
class TransMorph(Learned):
    """TransMorph (Chen et al., Medical Image Analysis 2022): a Swin-transformer U-Net."""

    name = "transmorph"


@register
class UVINet(Learned):
    """UVI-Net (Kim et al., CVPR 2024): flows, warped feature pyramids, a refinement U-Net."""

    name = "uvinet"
