"""The interpolation interface and the linear and nearest baselines."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from tssc_py.errors import TsscError
from tssc_py.methods import Method, fill_chunk, get_method, interpolate, method_names
from tssc_py.methods.base import _REGISTRY
from tssc_py.slices import Chunk, ChunkInfo, save_chunk


def _stack(frames=12, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random((3, frames, 5, 4), dtype=np.float32)


class _Spy(Method):
    name = "spy"
    min_known = 1

    def __init__(self, result=None) -> None:
        self.seen = None
        self.result = result

    def fill(self, stack: np.ndarray, known: Sequence[int]) -> np.ndarray:
        self.seen = stack.copy()
        if self.result is not None:
            return self.result
        return np.full_like(stack, 0.5)  # scribbles on the known frames too


def test_registry() -> None:
    assert {"linear", "nearest"} <= set(method_names())
    assert get_method("linear").name == "linear"
    with pytest.raises(TsscError, match="unknown method 'magic'"):
        get_method("magic")


def test_linear_blends_between_known_frames() -> None:
    stack = _stack()
    out = interpolate(stack, [0, 11], get_method("linear"))
    for t in range(12):
        expected = (1 - t / 11) * stack[:, 0] + t / 11 * stack[:, 11]
        np.testing.assert_allclose(out[:, t], expected, atol=1e-6)


def test_linear_any_known_pattern_and_ends() -> None:
    stack = _stack(10)
    out = interpolate(stack, [2, 5, 8], get_method("linear"))
    np.testing.assert_allclose(out[:, 3], 2 / 3 * stack[:, 2] + 1 / 3 * stack[:, 5], atol=1e-6)
    np.testing.assert_array_equal(out[:, 0], stack[:, 2])
    np.testing.assert_array_equal(out[:, 9], stack[:, 8])


def test_nearest_ties_go_to_the_earlier_frame() -> None:
    stack = _stack(7)
    out = interpolate(stack, [0, 4], get_method("nearest"))
    for t, source in zip(range(7), [0, 0, 0, 4, 4, 4, 4], strict=True):
        np.testing.assert_array_equal(out[:, t], stack[:, source])


@pytest.mark.parametrize("name", ["linear", "nearest"])
def test_known_frames_returned_bit_for_bit(name: str) -> None:
    stack = _stack()
    stack[0, 0, 0, 0] = np.float32(1 / 3)
    out = interpolate(stack, [0, 4, 11], get_method(name))
    assert out[:, [0, 4, 11]].tobytes() == stack[:, [0, 4, 11]].tobytes()


def test_methods_never_see_hidden_frames_and_cannot_change_known_ones() -> None:
    stack = _stack()
    spy = _Spy()
    out = interpolate(stack, [0, 11], spy)
    assert not spy.seen[:, 1:11].any()
    np.testing.assert_array_equal(spy.seen[:, [0, 11]], stack[:, [0, 11]])
    np.testing.assert_array_equal(out[:, [0, 11]], stack[:, [0, 11]])
    assert (out[:, 1:11] == 0.5).all()


def test_checks_on_what_a_method_returns() -> None:
    stack = _stack()
    with pytest.raises(TsscError, match="returned shape"):
        interpolate(stack, [0, 11], _Spy(result=np.zeros((1, 2))))
    bad = np.zeros_like(stack)
    bad[0, 3, 0, 0] = np.nan
    with pytest.raises(TsscError, match="NaN"):
        interpolate(stack, [0, 11], _Spy(result=bad))


def test_too_few_known_frames_and_bad_indices() -> None:
    stack = _stack()
    with pytest.raises(TsscError, match="needs at least 2 known frames"):
        interpolate(stack, [3], get_method("linear"))
    with pytest.raises(TsscError, match="outside"):
        interpolate(stack, [0, 12], get_method("linear"))
    with pytest.raises(TsscError, match="slices, frames, x, y"):
        interpolate(stack[0], [0, 11], get_method("linear"))
    mask = np.zeros(12, dtype=bool)
    mask[[0, 11]] = True
    with pytest.raises(TsscError, match="got a boolean mask"):  # it read as frames 0 and 1
        interpolate(stack, mask, get_method("linear"))
    broken = stack.copy()
    broken[0, 11, 2, 2] = np.nan
    with pytest.raises(TsscError, match=r"the input's known frame\(s\) \[0, 11\] hold NaN"):
        interpolate(broken, [0, 11], get_method("linear"))  # not blamed on the method


def test_fill_chunk_records_the_method(tmp_path: Path) -> None:
    info = ChunkInfo("s", 0, 3, 12, (0, 11))
    filled = fill_chunk(Chunk(_stack(), info), get_method("linear"))
    assert filled.info.method == "linear" and filled.info.known_frames == (0, 11)
    save_chunk(filled, tmp_path / "c.npz")


def test_register_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        from tssc_py.methods import register

        register(type("Again", (_Spy,), {"name": "linear"}))
    assert _REGISTRY["linear"].__name__ == "Linear"


def test_register_again_from_a_rerun_notebook_cell() -> None:
    from tssc_py.methods import register

    try:
        first = register(type("Mean", (_Spy,), {"name": "mean_of_ends"}))
        again = register(type("Mean", (_Spy,), {"name": "mean_of_ends"}))  # the cell, re-run
        assert again is not first and _REGISTRY["mean_of_ends"] is again
    finally:
        _REGISTRY.pop("mean_of_ends", None)
