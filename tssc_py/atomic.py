"""Atomic output files: write under a temporary name, rename when everything is complete.

A failed step therefore never leaves a partial file behind, and an existing file is only
replaced when the caller asked for it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tssc_py.errors import TsscError


def check_writable(path: str | Path, overwrite: bool) -> Path:
    """Refuse an existing output unless ``overwrite``; return the path.

    Raises:
        TsscError: if the file exists and ``overwrite`` is False.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise TsscError("output exists (use --overwrite, or overwrite=True, to replace it)", path)
    check_folder(path.parent)
    return path


def check_folder(folder: str | Path) -> Path:
    """Refuse, before any work, an output folder that cannot be made or written in.

    Raises:
        TsscError: If a file stands where the folder or one of its parents would be, or the
            nearest existing parent is not writable.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == folder else f" ({existing} is a file)"
        raise TsscError(f"is not a folder and cannot become one{where}", folder)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise TsscError(f"cannot write in {existing} (permission denied)", folder)
    return folder


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _full_suffix(path: Path) -> str:
    # Keep compound suffixes (.nii.gz) so format-sniffing writers see the right extension, in
    # lower case, which is the case they know.
    name = path.name.lower()
    return "".join(Path(name).suffixes[-2:]) if name.endswith(".gz") else Path(name).suffix


class OutputSet:
    """A group of output files that appear together or not at all."""

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._pending: list[tuple[Path, Path]] = []

    def path(self, dest: str | Path) -> Path:
        """Reserve ``dest`` and return the temporary path to write it to."""
        dest = check_writable(dest, self.overwrite)
        if any(d == dest for d, _ in self._pending):
            raise TsscError("the same output is written twice", dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{dest.name}.", suffix=f".tmp{_full_suffix(dest)}", dir=dest.parent
        )
        os.close(fd)
        self._pending.append((dest, Path(tmp)))
        return Path(tmp)

    def commit(self) -> None:
        # mkstemp creates files readable by the owner only; give outputs the usual umask mode.
        mode = 0o666 & ~_umask()
        for dest, tmp in self._pending:
            os.chmod(tmp, mode)
            os.replace(tmp, dest)
        self._pending.clear()

    def discard(self) -> None:
        for _, tmp in self._pending:
            tmp.unlink(missing_ok=True)
        self._pending.clear()


@contextmanager
def outputs(overwrite: bool = False) -> Iterator[OutputSet]:
    """Context manager: files reserved in the block are renamed into place only on success."""
    group = OutputSet(overwrite)
    try:
        yield group
    except BaseException:
        group.discard()
        raise
    group.commit()


@contextmanager
def atomic_path(dest: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path for one output file; rename it to ``dest`` on success."""
    with outputs(overwrite) as group:
        yield group.path(dest)
