"""SIGTERM handling: what a batch system sends at a job's time limit or on cancellation.

By default SIGTERM ends a Python process on the spot, leaving temporary files and folders
behind. The commands make it raise :class:`Terminated` instead, which unwinds like Ctrl-C so
that every half-written output is removed; training loops defer it to the end of the current
step, save a checkpoint there and then stop, so that ``--resume`` loses nothing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, so that ``except Exception`` does not swallow it."""

    def __init__(self, message: str = "stopped by SIGTERM") -> None:
        super().__init__(message)


def _raise(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def raise_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` (only the main thread can set handlers)."""
    if _main_thread():
        signal.signal(signal.SIGTERM, _raise)


@contextmanager
def deferred_sigterm() -> Iterator[Callable[[], bool]]:
    """In the block, SIGTERM only sets a flag: the yielded function says whether it came.

    The caller stops at a safe point and raises :class:`Terminated` itself. A SIGTERM the
    block did not act on is delivered again, to the previous handler, when the block ends.
    """
    if not _main_thread():
        yield lambda: False
        return
    came: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: came.append(signum))
    try:
        yield lambda: bool(came)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
    if came:
        signal.raise_signal(signal.SIGTERM)


@contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back during the block (e.g. between two renames that must both
    happen); they are delivered when it ends. A no-op where signal masks do not exist."""
    mask = getattr(signal, "pthread_sigmask", None)
    if mask is None:
        yield
        return
    held = mask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        mask(signal.SIG_SETMASK, held)
