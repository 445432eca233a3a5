"""Warping, batched demons and the registration prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import blob_series
from tssc_py.errors import TsscError
from tssc_py.methods import get_method, interpolate
from tssc_py.motion import DemonsConfig, demons, demons_prior, warp
from tssc_py.stage1.interpolator import linear_prior


def _blob(cx: float, cy: float, n: int = 32) -> torch.Tensor:
    x, y = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    return torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 18.0).float()


def test_warp_samples_at_the_displaced_points() -> None:
    image = torch.arange(20.0).reshape(1, 1, 4, 5)
    zero = torch.zeros(1, 2, 4, 5)
    torch.testing.assert_close(warp(image, zero), image)
    shift = zero.clone()
    shift[:, 0] = 1.0  # out(x, y) = image(x + 1, y), the last row repeated
    expected = torch.cat((image[:, :, 1:], image[:, :, -1:]), dim=2)
    torch.testing.assert_close(warp(image, shift), expected)


def test_demons_finds_a_shift() -> None:
    moving, fixed = _blob(14, 16)[None, None], _blob(18, 13)[None, None]
    ddf = demons(moving, fixed, DemonsConfig())
    # Where the blob is, the displacement points from the fixed blob to the moving one.
    centre = ddf[0, :, 18, 13]
    assert centre[0].item() == pytest.approx(-4, abs=0.6)
    assert centre[1].item() == pytest.approx(3, abs=0.6)
    assert float((warp(moving, ddf) - fixed).abs().max()) < 0.1


def _moving_blobs(frames: int = 9) -> torch.Tensor:
    """Two sequences of a blob moving 12 voxels, ``(2, frames, 32, 32)``."""
    path = np.linspace(0, 1, frames)
    one = torch.stack([_blob(10 + 12 * a, 16) for a in path])
    two = torch.stack([_blob(16, 8 + 12 * a) for a in path])
    return torch.stack((one, two))


def test_the_prior_reads_only_the_known_frames() -> None:
    x = _moving_blobs()
    known = torch.zeros(2, 9, dtype=torch.bool)
    known[0, [0, 8]] = True
    known[1, [2, 5, 7]] = True
    prior = demons_prior(x, known)
    hidden = torch.where(known[:, :, None, None], x, torch.rand_like(x))
    torch.testing.assert_close(demons_prior(hidden, known), prior, rtol=0, atol=0)
    assert torch.equal(prior[known], x[known])  # known frames bit for bit
    # Before the first and after the last known frame: that frame.
    assert torch.equal(prior[1, :2], x[1, 2:3].expand(2, -1, -1))
    assert torch.equal(prior[1, 8], x[1, 7])


def test_the_prior_follows_motion_the_blend_cross_fades() -> None:
    x = _moving_blobs()
    known = torch.zeros(2, 9, dtype=torch.bool)
    known[:, [0, 8]] = True
    error = lambda p: float(((p - x)[:, 1:-1] ** 2).mean())  # noqa: E731
    assert error(demons_prior(x, known)) < 0.2 * error(linear_prior(x, known))


def test_the_prior_does_about_as_well_as_the_demons_method() -> None:
    # A blob moving over a noisy background (its noise is what registration must ignore).
    stack = blob_series((24, 20, 4, 7), dtype=np.float32).transpose(2, 3, 0, 1)
    stack = np.ascontiguousarray(stack / stack.max())
    known, hidden = [0, 3, 6], [1, 2, 4, 5]
    mask = torch.zeros(4, 7, dtype=torch.bool)
    mask[:, known] = True
    error = lambda p: float(np.abs(p - stack)[:, hidden].mean())  # noqa: E731
    method = error(interpolate(stack, known, get_method("demons")))
    prior = error(demons_prior(torch.from_numpy(stack), mask).numpy())
    assert prior < 1.5 * method < error(linear_prior(torch.from_numpy(stack), mask).numpy())


def test_bad_input_and_settings() -> None:
    with pytest.raises(TsscError, match="at least one known frame"):
        demons_prior(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, dtype=torch.bool))
    with pytest.raises(TsscError, match="demons iterations"):
        DemonsConfig(iterations=0)
    with pytest.raises(TsscError, match="demons sigma"):
        DemonsConfig(sigma=0.0)
