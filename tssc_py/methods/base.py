"""The method interface, the registry, and the checked entry point."""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from tssc_py.atomic import atomic_path, check_writable
from tssc_py.checkpoint import load_checkpoint
from tssc_py.errors import TsscError, about
from tssc_py.prepare import known_frame_indices
from tssc_py.slices import Chunk, load_chunk, save_chunk

M = TypeVar("M", bound=type["Method"])

_REGISTRY: dict[str, type[Method]] = {}

RUNTIME_OPTIONS = ("device", "compile", "batch_size")
"""Method options that choose where and in what batches a method runs, not what it computes
(recorded by runs of tssc before 2026-11-26 for ``batch_size``)."""


class Method(ABC):
    """An interpolation method.

    Subclasses set ``name`` (the ``--method`` value), ``min_known`` (fewest known frames
    they can work from), ``options`` (the keyword arguments their constructor takes, the
    CLI options that reach them) and, when they run a trained model, ``checkpoint_kind``
    (the ``kind`` in its checkpoint's config.json), and implement :meth:`fill`.
    """

    name: ClassVar[str]
    min_known: ClassVar[int] = 2
    options: ClassVar[tuple[str, ...]] = ()
    checkpoint_kind: ClassVar[str | None] = None
    weights: str = "model"
    """The checkpoint's tensor group the method runs."""
    revision: ClassVar[int] = 1
    """Raised when the same options and weights give other outputs, so that caches of them
    (stage 2's training inputs) are made again."""

    def settings(self) -> dict[str, object]:
        """What decides this method's output besides its input: the value of each option
        (defaults included; an instance keeps each as the attribute of that name), a trained
        model's checkpoint as its config (which names its training step). Where and in what
        batches it runs (:data:`RUNTIME_OPTIONS`) is left out: it changes results only by
        rounding."""
        values: dict[str, object] = {
            name: getattr(self, name) for name in self.options if name not in RUNTIME_OPTIONS
        }
        if "checkpoint" in values:
            checkpoint = values["checkpoint"]
            assert isinstance(checkpoint, str | Path)  # a method keeps its folder
            values["checkpoint"] = load_checkpoint(checkpoint, self.checkpoint_kind).config
        return values

    @cached_property
    def weights_sha256(self) -> str | None:
        """SHA-256 of the trained weights the method runs (None: it runs none): what its
        checkpoint's config does not tell apart (a model retrained with the same options, a
        checkpoint replaced in place). Hashed once per method."""
        checkpoint = getattr(self, "checkpoint", None) if "checkpoint" in self.options else None
        if checkpoint is None:
            return None
        return load_checkpoint(checkpoint).digest(self.weights)

    def fingerprint(self) -> dict[str, object]:
        """What decides this method's output, for caches of it: :meth:`settings`, the weights'
        digest (:attr:`weights_sha256`) and the code's :attr:`revision`."""
        return {**self.settings(), "weights_sha256": self.weights_sha256, "revision": self.revision}

    def check_known(self, known: Sequence[int], n_frames: int) -> None:
        """Raise TsscError if this method cannot fill a series of ``n_frames`` frames from
        these ``known`` ones: fewer than ``min_known``, or what a subclass adds (a trained
        model's window), so that a run can refuse before any work."""
        if len(known) < self.min_known:
            raise TsscError(
                f"method {self.name!r} needs at least {self.min_known} known frames, "
                f"the series has {len(known)}"
            )

    @abstractmethod
    def fill(self, stack: np.ndarray, known: Sequence[int]) -> np.ndarray:
        """Return ``stack`` with every frame not in ``known`` predicted.

        Args:
            stack: ``(slices, frames, x, y)`` float32; unknown frames hold zeros.
            known: Sorted indices of the known frames.
        """


def register(cls: M) -> M:
    """Class decorator adding a method to the registry under its ``name``.

    A class of the same module and qualified name replaces the registered one: a notebook
    cell defining a method can run again.

    Raises:
        ValueError: If another class has that name.
    """
    known = _REGISTRY.get(cls.name)
    same = known is not None and (known.__module__, known.__qualname__) == (
        cls.__module__,
        cls.__qualname__,
    )
    if known is not None and not same:
        raise ValueError(f"method {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``.

    Raises:
        TsscError: For an unknown name.
    """
    if name not in _REGISTRY:
        raise TsscError(f"unknown method {name!r}; available: {', '.join(method_names())}")
    return _REGISTRY[name]


def option_defaults(cls: type[Method]) -> dict[str, object]:
    """The default of each option ``cls`` declares (its ``__init__``'s), where it has one."""
    params = inspect.signature(cls.__init__).parameters
    return {
        name: params[name].default
        for name in cls.options
        if name in params and params[name].default is not inspect.Parameter.empty
    }


def method_names() -> list[str]:
    """Names of the registered methods, sorted."""
    return sorted(_REGISTRY)


def get_method(name: str, **options: Any) -> Method:
    """An instance of the method registered as ``name``.

    Args:
        name: Registered method name.
        **options: Method options (e.g. ``checkpoint``); each method takes the ones it declares
            in ``options`` and ignores the rest, and None means "use the method's default", so
            one set of options can serve several methods of a run. ``checkpoint`` may be one
            folder or several: of several, a method takes the one of its ``checkpoint_kind``.

    Raises:
        TsscError: for an unknown name, options the method refuses, or several checkpoints
            among which not exactly one is of the method's kind.
    """
    cls = method_class(name)
    chosen = {k: v for k, v in options.items() if k in cls.options and v is not None}
    if "checkpoint" in chosen:
        chosen["checkpoint"] = _pick_checkpoint(cls, chosen["checkpoint"])
    return cls(**chosen)


def _pick_checkpoint(cls: type[Method], given: str | Path | Sequence[str | Path]) -> Path | None:
    """The checkpoint for ``cls`` among ``given`` (a folder, or a sequence of folders).

    A single folder goes to the method as it is (its loader checks the kind, naming the
    folder); of several, the one whose config.json names ``cls.checkpoint_kind``.
    """
    if isinstance(given, str | Path):
        return Path(given)
    paths = [Path(p) for p in given]
    if len(paths) < 2:
        return paths[0] if paths else None
    kinds = {p: load_checkpoint(p).config.get("kind") for p in paths}
    fits = [p for p in paths if kinds[p] == cls.checkpoint_kind]
    if len(fits) != 1:
        listed = ", ".join(f"{p} ({kinds[p]})" for p in paths)
        raise TsscError(
            f"method {cls.name!r} needs one {cls.checkpoint_kind!r} checkpoint, "
            f"{'none' if not fits else 'several'} among --checkpoint {listed}"
        )
    return fits[0]


def interpolate(stack: np.ndarray, known: Sequence[int], method: Method) -> np.ndarray:
    """Fill the unknown frames of ``stack`` with ``method``.

    The method sees zeros in place of unknown frames; the result is float32 and carries the
    input's known frames (as float32: bit for bit for a float32 stack).

    Args:
        stack: ``(slices, frames, x, y)``.
        known: Indices of the known frames (not a boolean mask).
        method: The method.

    Raises:
        TsscError: if there are fewer known frames than the method needs, a known frame is not
            an index in range or holds NaN or infinite values, or the method returns the wrong
            shape or non-finite values.
    """
    if stack.ndim != 4:
        raise TsscError(f"a stack is (slices, frames, x, y), got shape {stack.shape}")
    n_frames = stack.shape[1]
    known = known_frame_indices(known, n_frames)
    if not np.isfinite(stack[:, known]).all():
        raise TsscError(f"the input's known frame(s) {known} hold NaN or infinite values")
    method.check_known(known, n_frames)
    visible = np.zeros(stack.shape, dtype=np.float32)
    visible[:, known] = stack[:, known]
    filled = np.asarray(method.fill(visible, known), dtype=np.float32)
    if filled.shape != stack.shape:
        raise TsscError(f"method {method.name!r} returned shape {filled.shape}, not {stack.shape}")
    if not np.isfinite(filled).all():
        raise TsscError(f"method {method.name!r} returned NaN or infinite values")
    filled[:, known] = stack[:, known]
    return filled


def fill_chunk(chunk: Chunk, method: Method) -> Chunk:
    """A chunk with its unknown frames filled by ``method``."""
    stack = interpolate(chunk.stack, chunk.info.known_frames, method)
    return Chunk(stack, replace(chunk.info, method=method.name))


def interpolate_file(
    chunk: str | Path, method: str, out: str | Path, overwrite: bool = False, **options: object
) -> Path:
    """Fill a chunk file with the method named ``method`` and write it to ``out``.

    ``options`` go to :func:`get_method`.
    """
    chunk, out = Path(chunk), Path(out)
    check_writable(out, overwrite)
    runner = get_method(method, **options)
    loaded = load_chunk(chunk)
    with about(chunk):
        filled = fill_chunk(loaded, runner)
    with atomic_path(out, overwrite) as tmp:
        save_chunk(filled, tmp)
    return out
