"""Memory estimates checked before work: a request that cannot fit is one error line, not a
MemoryError (or the kernel's OOM killer) after minutes of work."""

from __future__ import annotations

import os

from tssc_py.errors import TsscError


def physical_memory() -> int | None:
    """This machine's physical memory in bytes; None where the system does not say (Windows)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def gigabytes(n_bytes: float) -> str:
    """``n_bytes`` for a message in decimal gigabytes: "3.2 GB", "0.0016 GB", "481,105 GB"."""
    value = n_bytes / 1e9
    return f"{value:,.0f} GB" if value >= 1000 else f"{value:.3g} GB"


def check_fits(needed: int, what: str) -> None:
    """Refuse work whose memory estimate exceeds the machine's physical memory.

    Physical memory, not what is free now: the check refuses only what could never fit, so
    the same command gives the same answer on a busy machine.

    Args:
        needed: Estimated bytes.
        what: What needs them, starting a sentence: e.g. "the filled series (...)".

    Raises:
        TsscError: ``"{what} needs about N GB of memory, more than this machine's M GB"``.
    """
    total = physical_memory()
    if total is not None and needed > total:
        raise TsscError(
            f"{what} needs about {gigabytes(needed)} of memory, more than this machine's "
            f"{gigabytes(total)}"
        )
