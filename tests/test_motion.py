"""Warping, batched demons and the registration prior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import blob_series
from tssc_py.errors import TsscError
from tssc_py.methods import get_method, interpolate
from tssc_py.motion import DemonsConfig, RigidConfig, demons, demons_prior, rigid, rigid_field, warp
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


def _pattern(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Three blobs of different sizes, so that no turn or shift maps the picture onto itself."""
    blobs = ((10.0, 12.0, 10.0), (22.0, 14.0, 25.0), (15.0, 23.0, 6.0))
    return sum(torch.exp(-((x - bx) ** 2 + (y - by) ** 2) / w) for bx, by, w in blobs)


def _turned(angle: float, shift: tuple[float, float], n: int = 32) -> torch.Tensor:
    """``_pattern`` sampled at ``R(angle) (p - c) + c + shift``, computed directly (not through
    :func:`rigid_field`), ``(n, n)``."""
    x, y = torch.meshgrid(
        torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij"
    )
    c = (n - 1) / 2
    cos, sin = np.cos(angle), np.sin(angle)
    qx = cos * (x - c) - sin * (y - c) + c + shift[0]
    qy = sin * (x - c) + cos * (y - c) + c + shift[1]
    return _pattern(qx, qy).float()


def test_rigid_finds_a_turn_and_a_shift() -> None:
    moving = _turned(0.0, (0.0, 0.0))[None, None]
    cases = [(np.radians(25), (3.0, -2.0)), (np.radians(-15), (0.0, 4.0)), (0.0, (0.0, 0.0))]
    fixed = torch.stack([_turned(a, s) for a, s in cases])[:, None]
    # Under inference mode, as the diffusion method runs it (no autograd needed).
    with torch.inference_mode():
        params = rigid(moving.expand(3, -1, -1, -1), fixed, RigidConfig())
    expected = torch.tensor([[a, *s] for a, s in cases], dtype=torch.float32)
    torch.testing.assert_close(params, expected, atol=0.05, rtol=0)
    aligned = warp(moving.expand(3, -1, -1, -1), rigid_field(params, (32, 32)))
    assert float((aligned - fixed).abs().mean()) < 0.005  # bilinear resampling: not exact


def test_rigid_field_scales_angle_and_shift() -> None:
    params = torch.tensor([[0.4, 2.0, -1.0], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(
        rigid_field(params, (8, 6), torch.tensor([0.5, 1.0])),
        rigid_field(params * torch.tensor([[0.5], [1.0]]), (8, 6)),
    )
    assert float(rigid_field(params, (8, 6), 0.0).abs().max()) == 0.0


def test_rigid_leaves_an_empty_frame_alone() -> None:
    params = rigid(torch.zeros(1, 1, 16, 16), torch.zeros(1, 1, 16, 16), RigidConfig())
    assert torch.equal(params, torch.zeros(1, 3))


def _turning_pattern(frames: int = 9, degrees: float = 40.0) -> torch.Tensor:
    """The pattern turning ``degrees`` and shifting 4 voxels, ``(1, frames, 32, 32)``."""
    path = np.linspace(0, 1, frames)
    return torch.stack([_turned(np.radians(degrees) * a, (4.0 * a, 0.0)) for a in path])[None]


def test_the_rigid_prior_follows_a_turn_along_its_arc() -> None:
    x = _turning_pattern()
    known = torch.zeros(1, 9, dtype=torch.bool)
    known[:, [0, 8]] = True
    error = lambda p: float(((p - x)[:, 1:-1] ** 2).mean())  # noqa: E731
    turned = error(demons_prior(x, known, rigid_config=RigidConfig()))
    assert turned < 0.3 * error(demons_prior(x, known)) < 0.3 * error(linear_prior(x, known))


def _moving_blobs(frames: int = 9) -> torch.Tensor:
    """Two sequences of a blob moving 12 voxels, ``(2, frames, 32, 32)``."""
    path = np.linspace(0, 1, frames)
    one = torch.stack([_blob(10 + 12 * a, 16) for a in path])
    two = torch.stack([_blob(16, 8 + 12 * a) for a in path])
    return torch.stack((one, two))


@pytest.mark.parametrize("rigid_config", [None, RigidConfig()], ids=["demons", "rigid_demons"])
def test_the_prior_reads_only_the_known_frames(rigid_config: RigidConfig | None) -> None:
    x = torch.cat((_moving_blobs()[:1], _turning_pattern()))
    known = torch.zeros(2, 9, dtype=torch.bool)
    known[0, [0, 8]] = True
    known[1, [2, 5, 7]] = True
    prior = demons_prior(x, known, rigid_config=rigid_config)
    hidden = torch.where(known[:, :, None, None], x, torch.rand_like(x))
    torch.testing.assert_close(
        demons_prior(hidden, known, rigid_config=rigid_config), prior, rtol=0, atol=0
    )
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
    with pytest.raises(TsscError, match="rigid iterations"):
        RigidConfig(iterations=0)
    with pytest.raises(TsscError, match="rigid levels"):
        RigidConfig(levels=9)
