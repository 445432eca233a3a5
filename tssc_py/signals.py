"""SIGTERM handling: what a batch system sends at a job's time limit or on cancellation.

By default SIGTERM ends a Python process on the spot, leaving temporary files and folders
behind. The commands make it raise :class:`Terminated` instead, which unwinds like Ctrl-C so
that every half-written output is removed; training loops defer it to the end of the current
step, save a checkpoint there and then stop, so that ``--resume`` loses nothing.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType


class Terminated(BaseException):
    """SIGTERM arrived. A BaseException, so that ``except Exception`` does not swallow it."""

    def __init__(self, message: str = "stopped by SIGTERM") -> None:
        super().__init__(message)


_received: list[int] = []


def _raise(signum: int, frame: FrameType | None) -> None:
    # Noted as well: raised inside a garbage-collector callback, the exception is ignored.
    _received.append(signum)
    raise Terminated


def sigterm_received() -> bool:
    """Whether SIGTERM reached the handler of :func:`raise_on_sigterm` (even if the exception
    it raised was swallowed where Python ignores exceptions)."""
    return bool(_received)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def raise_on_sigterm() -> None:
    """Make SIGTERM raise :class:`Terminated` (only the main thread can set handlers), and
    keep a swallowed one quiet: :func:`stop_if_terminated` acts on it."""
    if _main_thread():
        signal.signal(signal.SIGTERM, _raise)
        sys.unraisablehook = _quiet_if_terminated


_default_unraisablehook = sys.unraisablehook


def _quiet_if_terminated(unraisable: sys.UnraisableHookArgs) -> None:
    if not isinstance(unraisable.exc_value, Terminated):
        _default_unraisablehook(unraisable)


def stop_if_terminated() -> None:
    """At a safe point of a long loop: raise :class:`Terminated` if SIGTERM came but its
    exception was swallowed (raised inside a garbage-collector callback).

    Raises:
        Terminated: If :func:`sigterm_received`.
    """
    if sigterm_received():
        raise Terminated


@contextmanager
def held(*signums: int) -> Iterator[Callable[[], bool]]:
    """In the block, the signals ``signums`` are only noted (the yielded function says whether
    one came); when the block ends normally they are delivered to the previous handlers.

    Python runs signal handlers in the main thread only, whichever thread the signal reaches
    (torch's worker threads included), so replacing the handlers holds them back where a
    signal mask, which is per thread, would not. In another thread nothing is needed: no
    handler can interrupt it.
    """
    if not _main_thread():
        yield lambda: False
        return
    came: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in signums}
    try:
        yield lambda: bool(came)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    for signum in dict.fromkeys(came):
        signal.raise_signal(signum)


def deferred_sigterm() -> AbstractContextManager[Callable[[], bool]]:
    """SIGTERM :func:`held` for a loop that stops at a safe point when it came (raising
    :class:`Terminated` itself, so that it is not delivered again)."""
    return held(signal.SIGTERM)


def signals_held() -> AbstractContextManager[Callable[[], bool]]:
    """SIGINT and SIGTERM :func:`held` (e.g. between two renames that must both happen)."""
    return held(signal.SIGINT, signal.SIGTERM)
