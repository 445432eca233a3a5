"""The stage-1 diffusion method behind the common interpolation interface."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import STAGE1_SIZE
from tssc_py.errors import TsscError
from tssc_py.methods import get_method, interpolate


def _stack(frames: int = 6, seed: int = 0) -> np.ndarray:
    stack = np.random.default_rng(seed).random((3, frames, STAGE1_SIZE, STAGE1_SIZE))
    return stack.astype(np.float32)


def test_needs_a_checkpoint() -> None:
    with pytest.raises(TsscError, match="needs a trained model"):
        get_method("diffusion")


def test_options_reach_only_the_methods_that_take_them(checkpoint: Path) -> None:
    method = get_method("diffusion", checkpoint=checkpoint, steps=3, seed=None, unrelated=1)
    assert (method.steps, method.seed) == (3, 0)
    assert get_method("linear", checkpoint=checkpoint).name == "linear"


def test_known_frames_bit_for_bit_and_deterministic(checkpoint: Path) -> None:
    stack = _stack()
    stack[0, 0, 0, 0] = np.float32(1 / 3)

    def run(seed: int) -> np.ndarray:
        return interpolate(
            stack, [0, 5], get_method("diffusion", checkpoint=checkpoint, steps=3, seed=seed)
        )

    a, b, c = run(0), run(0), run(1)
    np.testing.assert_array_equal(a[:, [0, 5]], stack[:, [0, 5]])
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_a_slice_does_not_depend_on_its_chunk_batch_or_neighbours(checkpoint: Path) -> None:
    stack = np.concatenate([_stack(seed=2), _stack(seed=3)])  # 6 slices
    stack[4] = stack[1]  # the same sequence at two places: the same result

    def fill(part: np.ndarray, batch_size: int = 16, seed: int = 0) -> np.ndarray:
        method = get_method(
            "diffusion", checkpoint=checkpoint, steps=2, eta=1.0, batch_size=batch_size, seed=seed
        )
        return interpolate(part, [0, 5], method)

    whole = fill(stack)
    np.testing.assert_array_equal(np.concatenate([fill(stack[:1]), fill(stack[1:])]), whole)
    np.testing.assert_array_equal(fill(stack, batch_size=1), whole)
    np.testing.assert_array_equal(fill(stack[::-1].copy())[::-1], whole)
    np.testing.assert_array_equal(whole[4], whole[1])
    assert not np.array_equal(fill(stack, seed=1), whole)


def test_long_series_in_windows_and_padding_slices(checkpoint: Path) -> None:
    # The checkpoint's window is 6 frames; 3 acquired frames with 4 new frames between them.
    stack = _stack(11)
    stack[1] = 0.0  # a padding slice stays empty
    known = [0, 5, 10]
    out = interpolate(stack, known, get_method("diffusion", checkpoint=checkpoint, steps=2))
    np.testing.assert_array_equal(out[:, known], stack[:, known])
    assert not out[1].any()
    assert np.isfinite(out).all()


def test_clear_errors_for_data_that_does_not_fit(checkpoint: Path) -> None:
    method = get_method("diffusion", checkpoint=checkpoint, steps=2)
    with pytest.raises(TsscError, match=f"trained on {STAGE1_SIZE}x{STAGE1_SIZE}"):
        interpolate(np.zeros((1, 6, 8, 8), np.float32), [0, 5], method)
    with pytest.raises(TsscError, match="window is 6 frames"):
        interpolate(_stack(9), [0, 8], method)
    with pytest.raises(TsscError, match="no such checkpoint folder"):
        get_method("diffusion", checkpoint=checkpoint.parent / "missing")
    with pytest.raises(TsscError, match="flips must be one of 1, 2, 4, 8, got 3"):
        get_method("diffusion", checkpoint=checkpoint, flips=3)
    # Refused when the method is made, before a run does any work, not at its first fill.
    for options, message in (
        ({"steps": 0}, "DDIM steps must be an integer"),
        ({"eta": -1.0}, "DDIM eta must be a finite number"),
        ({"samples": 0}, "samples must be an integer of at least 1"),
    ):
        with pytest.raises(TsscError, match=message):
            get_method("diffusion", checkpoint=checkpoint, **options)


def test_compile_is_ignored_on_a_cpu(checkpoint: Path) -> None:
    stack = _stack()
    eager = get_method("diffusion", checkpoint=checkpoint, steps=2, device="cpu")
    compiled = get_method("diffusion", checkpoint=checkpoint, steps=2, device="cpu", compile=True)
    assert compiled.network is compiled.stage1.model
    np.testing.assert_array_equal(
        interpolate(stack, [0, 5], compiled), interpolate(stack, [0, 5], eager)
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_network_samples_what_the_eager_one_does_on_a_gpu(checkpoint: Path) -> None:
    stack = _stack()
    runs = [
        interpolate(
            stack, [0, 5], get_method("diffusion", checkpoint=checkpoint, steps=3, compile=c)
        )
        for c in (False, True)
    ]
    np.testing.assert_array_equal(runs[1][:, [0, 5]], stack[:, [0, 5]])
    # bf16 autocast in both; the compiled kernels fuse (and so round) differently.
    np.testing.assert_allclose(runs[1], runs[0], atol=2e-2)
