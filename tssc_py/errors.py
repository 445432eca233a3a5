"""The one exception type for expected failures (bad input, refused overwrite).

Command-line entry points turn it into a single error line and a non-zero exit; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeGuard


class TsscError(Exception):
    """An expected failure, reported to the user as one line."""

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        self.message = message
        super().__init__(f"{path}: {message}" if path is not None else message)


def is_integer(value: object) -> TypeGuard[numbers.Integral]:
    """Whether ``value`` is an integer (Python's or NumPy's) and not a bool, for the checks of
    counts and indices given from Python."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_integer(name: str, value: object, low: int, high: int) -> None:
    """Refuse ``value`` unless it is an integer from ``low`` to ``high``: the one message of
    every bounded count and size.

    Raises:
        TsscError: ``"{name} must be an integer from {low} to {high}, got {value!r}"``.
    """
    if not is_integer(value) or not low <= int(value) <= high:
        raise TsscError(f"{name} must be an integer from {low} to {high}, got {value!r}")


@contextmanager
def about(path: str | Path) -> Iterator[None]:
    """Attach ``path`` to any :class:`TsscError` raised in the block that names no file."""
    try:
        yield
    except TsscError as exc:
        if exc.path is not None:
            raise
        raise TsscError(exc.message, path) from None


def differences(before: object, now: object) -> str:
    """What differs between two JSON values, for a message: "a.b differs", "a.b, c differ"
    (dotted names, the first four, then "..."); empty when nothing does."""
    names = _differing(before, now, "")
    if not names:
        return ""
    listed = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return f"{listed} {'differs' if len(names) == 1 else 'differ'}"


def _differing(before: object, now: object, where: str) -> list[str]:
    if isinstance(before, dict) and isinstance(now, dict):
        found = []
        for key in sorted(set(before) | set(now)):
            if key in before and key in now:
                found += _differing(before[key], now[key], f"{where}{key}.")
            else:
                found.append(f"{where}{key}")
        return found
    return [] if before == now else [where.rstrip(".") or "everything"]
