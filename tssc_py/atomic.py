"""Atomic output files: write under a temporary name, rename when everything is complete.

A failed step therefore never leaves a partial file behind, and an existing file is only
replaced when the caller asked for it. A temporary name says which process made it
(``.NAME.tssc-HOST-PID-RANDOM.tmp...``): what a killed process left (``kill -9``, a node that
went down) is removed by the next tssc process on that machine that writes the same output
or cleans the folder (:func:`remove_leftovers`), and nothing else is.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import socket
import tempfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tssc_py.errors import TsscError

_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"
"""This machine in temporary names (a cluster's nodes share folders; process ids are per node)."""

_LEFTOVER = re.compile(r"\..+\.tssc-(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]+)-[^.]+\.(tmp|old)(\..*)?")
"""A temporary file or folder of :func:`temporary_name`."""

WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO)
"""Failures of writing itself (a full disk or quota, a file size limit, a read-only or failing
file system), reported as one line naming the output."""


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


def temporary_name(dest: Path, suffix: str) -> tuple[str, str]:
    """The ``prefix`` and ``suffix`` of :mod:`tempfile` names for a temporary ``dest``, marked
    with this machine and process."""
    return f".{dest.name}.tssc-{_HOST}-{os.getpid()}-", suffix


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_leftovers(folder: Path, name: str | None = None) -> list[Path]:
    """Remove the temporary files and folders that tssc processes of this machine which are no
    longer running left in ``folder`` (those of ``name`` only, when given).

    Returns:
        What was removed.
    """
    pattern = f".{'*' if name is None else glob.escape(name)}.tssc-*"
    removed = []
    try:
        candidates = list(folder.glob(pattern))
    except OSError:
        return []
    for path in candidates:
        match = _LEFTOVER.fullmatch(path.name)
        if match is None or match["host"] != _HOST or _alive(int(match["pid"])):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


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
        remove_leftovers(dest.parent, dest.name)
        prefix, suffix = temporary_name(dest, f".tmp{_full_suffix(dest)}")
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=dest.parent)
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

    def write_error(self, exc: OSError) -> TsscError | None:
        """``exc`` as one line naming the output it failed to write, if writing failed: the
        output whose temporary file it names, or (a writer that names no file) the last one
        reserved, for a failure of writing itself (:data:`WRITE_ERRORS`)."""
        named = [dest for dest, tmp in self._pending if str(tmp) == str(exc.filename)]
        if not named and (exc.errno not in WRITE_ERRORS or not self._pending):
            return None
        dest = named[0] if named else self._pending[-1][0]
        return TsscError(f"cannot write: {exc.strerror or exc}", dest)


@contextmanager
def outputs(overwrite: bool = False) -> Iterator[OutputSet]:
    """Context manager: files reserved in the block are renamed into place only on success.

    Raises:
        TsscError: When writing fails (a full disk...), naming the output.
    """
    group = OutputSet(overwrite)
    try:
        yield group
        group.commit()
    except OSError as exc:
        error = group.write_error(exc)
        group.discard()
        if error is None:
            raise
        raise error from None
    except BaseException:
        group.discard()
        raise


@contextmanager
def atomic_path(dest: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path for one output file; rename it to ``dest`` on success."""
    with outputs(overwrite) as group:
        yield group.path(dest)
