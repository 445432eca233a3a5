"""Memory estimates checked before work (tssc_py.memory)."""

from __future__ import annotations

import os

import pytest

from tssc_py import memory
from tssc_py.errors import TsscError


def test_physical_memory_is_the_machines() -> None:
    total = memory.physical_memory()
    assert total == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") > 0


def test_check_fits_refuses_only_beyond_physical_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "physical_memory", lambda: 2 * 10**9)
    memory.check_fits(2 * 10**9, "the series")
    message = r"^the series needs about 481,586 GB of memory, more than this machine's 2 GB$"
    with pytest.raises(TsscError, match=message):
        memory.check_fits(481_586 * 10**9, "the series")
    monkeypatch.setattr(memory, "physical_memory", lambda: None)  # a system that does not say
    memory.check_fits(10**18, "the series")
