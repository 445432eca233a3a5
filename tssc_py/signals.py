"""SIGTERM and Ctrl-C handling: what a batch system sends at a job's time limit or on
cancellation, and what a user at a terminal types.

By default SIGTERM ends a Python process on the spot, leaving temporary files and folders
behind. The commands make it raise :class:`Terminated` instead, which unwinds like Ctrl-C so
that every half-written output is removed; training loops defer both to the end of the current
step, save a checkpoint there and then stop, so that ``--resume`` loses nothing (a second
Ctrl-C stops at once).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from types import FrameType

STOP_NAMES: dict[int, str] = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "Ctrl-C"}
"""How the stop messages name the signals that stop a command."""


class Terminated(BaseException):
    """SIGTERM arrived, or a signal a training loop saved its state for before stopping.
    A BaseException, so that ``except Exception`` does not swallow it.

    Attributes:
        signum: The signal (the command's exit status is 128 + ``signum``).
    """

    def __init__(self, message: str = "stopped by SIGTERM", signum: int = signal.SIGTERM) -> None:
        super().__init__(message)
        self.signum = signum


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
def held(*signums: int, second_interrupts: bool = False) -> Iterator[Callable[[], int | None]]:
    """In the block, the signals ``signums`` are only noted (the yielded function returns the
    first that came, or None); when the block ends normally they are delivered to the previous
    handlers. With ``second_interrupts``, a second SIGINT raises KeyboardInterrupt at once: a
    user who presses Ctrl-C again does not want to wait. A signal ignored when the block starts
    stays ignored (SIGINT of a job started in the background with ``&``).

    Python runs signal handlers in the main thread only, whichever thread the signal reaches
    (torch's worker threads included), so replacing the handlers holds them back where a
    signal mask, which is per thread, would not. In another thread nothing is needed: no
    handler can interrupt it.
    """
    if not _main_thread():
        yield lambda: None
        return
    came: list[int] = []

    def note(signum: int, frame: FrameType | None) -> None:
        if second_interrupts and signum == signal.SIGINT and signum in came:
            raise KeyboardInterrupt
        came.append(signum)

    wanted = [s for s in signums if signal.getsignal(s) is not signal.SIG_IGN]
    previous = {s: signal.signal(s, note) for s in wanted}
    try:
        yield lambda: came[0] if came else None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    for signum in dict.fromkeys(came):
        signal.raise_signal(signum)


def deferred_stop() -> AbstractContextManager[Callable[[], int | None]]:
    """SIGTERM and Ctrl-C :func:`held` for a loop that stops at a safe point when one came
    (raising :class:`Terminated` itself, so that it is not delivered again); a second Ctrl-C
    interrupts at once."""
    return held(signal.SIGTERM, signal.SIGINT, second_interrupts=True)


def signals_held() -> AbstractContextManager[Callable[[], int | None]]:
    """SIGINT and SIGTERM :func:`held` (e.g. between two renames that must both happen)."""
    return held(signal.SIGINT, signal.SIGTERM)
