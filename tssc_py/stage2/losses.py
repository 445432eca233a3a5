"""Stage-2 loss: weighted MSE + 3D wavelet + 3D total variation, each term reported.

The wavelet term decomposes prediction and truth with ptwt's multi-level 3D transform and
averages the L1 difference of every sub-band (the approximation and the 7 detail bands of each
level, each band weighted equally so that fine, small bands count as much as coarse ones). It
runs in float32 even under autocast (ptwt supports float32/64 only) and, unlike the authors'
version computed on detached NumPy arrays, its gradient reaches the network (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import ptwt
import pywt
import torch

from tssc_py.errors import TsscError


@dataclass
class LossConfig:
    """Weights and wavelet of the stage-2 loss.

    Attributes:
        w_mse: Weight of the mean squared error.
        w_wavelet: Weight of the wavelet term.
        w_tv: Weight of the total-variation term (of the prediction).
        wavelet: Wavelet name (PyWavelets naming; ``haar`` and ``db2`` are cheap).
        level: Decomposition levels (lowered where a volume is too small for them).
    """

    w_mse: float = 1.0
    w_wavelet: float = 1.0
    w_tv: float = 1.0
    wavelet: str = "haar"
    level: int = 3

    def __post_init__(self) -> None:
        if min(self.w_mse, self.w_wavelet, self.w_tv) < 0:
            raise TsscError("loss weights must be >= 0")
        if self.level < 1:
            raise TsscError(f"wavelet level must be at least 1, got {self.level}")
        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise TsscError(f"unknown discrete wavelet {self.wavelet!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON checkpoints."""
        return asdict(self)


def usable_level(shape: Sequence[int], wavelet: str, level: int) -> int:
    """The levels a decomposition of a volume of ``shape`` uses: ``level``, capped at what its
    smallest side allows for ``wavelet`` (at least 1)."""
    length = pywt.Wavelet(wavelet).dec_len
    return max(1, min(level, pywt.dwt_max_level(min(shape), length)))


def wavelet_loss(pred: torch.Tensor, truth: torch.Tensor, wavelet: str, level: int) -> torch.Tensor:
    """Mean over all sub-bands of the mean absolute coefficient difference.

    Args:
        pred: ``(B, 1, X, Y, Z)`` or ``(B, X, Y, Z)``.
        truth: Same shape.
        wavelet: Wavelet name.
        level: Wanted levels; capped at what the smallest side allows.
    """
    with torch.autocast(pred.device.type, enabled=False):
        a = pred.float().reshape(-1, *pred.shape[-3:])
        b = truth.float().reshape(-1, *truth.shape[-3:])
        usable = usable_level(a.shape[-3:], wavelet, level)
        ca = ptwt.wavedec3(a, wavelet, level=usable, mode="zero")
        cb = ptwt.wavedec3(b, wavelet, level=usable, mode="zero")
        bands = [(ca[0], cb[0])]
        for da, db in zip(ca[1:], cb[1:], strict=True):
            bands += [(da[key], db[key]) for key in da]
        return torch.stack([(x - y).abs().mean() for x, y in bands]).mean()


def tv_loss(volume: torch.Tensor) -> torch.Tensor:
    """Anisotropic 3D total variation: mean absolute difference along each of the 3 axes."""
    v = volume.float()
    terms = [v.diff(dim=d).abs().mean() for d in (-3, -2, -1) if v.shape[d] > 1]
    return torch.stack(terms).sum() if terms else v.new_zeros(())


def refine_loss(
    pred: torch.Tensor, truth: torch.Tensor, config: LossConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted total and each term's value (for the log)."""
    mse = (pred.float() - truth.float()).square().mean()
    wave = wavelet_loss(pred, truth, config.wavelet, config.level)
    tv = tv_loss(pred)
    total = config.w_mse * mse + config.w_wavelet * wave + config.w_tv * tv
    values = {"mse": mse, "wavelet": wave, "tv": tv}
    return total, {k: float(v.detach()) for k, v in values.items()}
