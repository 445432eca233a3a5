"""Baselines that need no training: per-voxel linear blending and nearest known frame."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tssc_py.methods.base import Method, register


def _neighbours(t: int, known: Sequence[int]) -> tuple[int, int]:
    """The known frames at or before and at or after ``t`` (clamped at the ends)."""
    before = max((k for k in known if k <= t), default=known[0])
    after = min((k for k in known if k >= t), default=known[-1])
    return before, after


@register
class Linear(Method):
    """Per-voxel linear blend in time between the nearest known frames on each side.

    Frames outside the known range hold the nearest known frame.
    """

    name = "linear"
    min_known = 2

    def fill(self, stack: np.ndarray, known: Sequence[int]) -> np.ndarray:
        out = stack.copy()
        for t in range(stack.shape[1]):
            before, after = _neighbours(t, known)
            if before == after:
                out[:, t] = stack[:, before]
                continue
            weight = np.float32((t - before) / (after - before))
            out[:, t] = (1 - weight) * stack[:, before] + weight * stack[:, after]
        return out


@register
class Nearest(Method):
    """Copy of the nearest known frame in time (ties go to the earlier frame)."""

    name = "nearest"
    min_known = 1

    def fill(self, stack: np.ndarray, known: Sequence[int]) -> np.ndarray:
        out = stack.copy()
        for t in range(stack.shape[1]):
            before, after = _neighbours(t, known)
            out[:, t] = stack[:, before if t - before <= after - t else after]
        return out
