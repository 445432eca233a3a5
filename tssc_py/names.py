"""Safe names and paths: the one check for every file name tssc builds from data.

Subject ids, method names and dataset labels come from samplesheets, records, chunk headers
and state files, and become file names and shell arguments (Nextflow passes them on command
lines). Every such name goes through :func:`check_subject_id`, and every relative path read
from a state file through :func:`inside`, on load as well as on write, so that no file is
written, read or removed outside the folder it belongs to.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from tssc_py.errors import TsscError

NAME_MAX = 100
"""Longest id: outputs add a method name, suffixes and a temporary-name tag to it, and file
systems allow 255 bytes per name."""

SUBJECT_ID = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9._-]{{0,{NAME_MAX - 1}}}")
"""Letters, digits, ``.``, ``_`` and ``-``, not first ``.`` (a hidden file, like tssc's own
temporary files) or ``-`` (an option on a command line)."""


def check_subject_id(
    subject: str, where: str | Path | None = None, what: str = "subject id"
) -> str:
    """Return ``subject`` if it is a safe id (it names files), else raise TsscError naming
    ``where``; ``what`` says what the id is (a subject id, a method name...)."""
    if not isinstance(subject, str):
        raise TsscError(f"{what} must be text, got {type(subject).__name__}", where)
    if len(subject) > NAME_MAX:
        raise TsscError(
            f"{what} {subject[:20]!r}... is {len(subject)} characters long, "
            f"at most {NAME_MAX} are allowed",
            where,
        )
    if not subject:
        raise TsscError(f"{what} is empty", where)
    if subject.startswith((".", "-")) and SUBJECT_ID.fullmatch("_" + subject[1:]):
        raise TsscError(
            f"{what} {subject!r} starts with {subject[0]!r} (a hidden file name, or an option "
            "on a command line): start it with a letter, digit or '_'",
            where,
        )
    if not SUBJECT_ID.fullmatch(subject):
        raise TsscError(
            f"{what} {subject!r} has characters other than letters, digits, '.', '_', '-'",
            where,
        )
    return subject


def inside(folder: Path, relative: str, where: str | Path | None = None) -> Path:
    """``folder / relative`` for a relative path read from a state file, refused when it would
    lead out of ``folder``: absolute, with ``..`` parts, not in the plain form tssc writes, or
    through a symbolic link that points elsewhere.

    Raises:
        TsscError: Naming ``where`` (the state file) and the path.
    """
    rel = PurePosixPath(relative if isinstance(relative, str) else "")
    # Only the form tssc writes: no '.', '..', empty parts or backslashes.
    if rel.as_posix() != relative or rel.is_absolute() or ".." in rel.parts or "\\" in relative:
        raise TsscError(f"names {relative!r}, which is not a path inside {folder}", where)
    path = folder / rel
    if not path.resolve().is_relative_to(folder.resolve()):
        raise TsscError(f"names {relative!r}, which leads out of {folder}", where)
    return path
