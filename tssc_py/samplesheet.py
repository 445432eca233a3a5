"""Cohort inputs: one scan, a glob, or a samplesheet CSV ``subject,scan[,start_frame,end_frame]``.

Subject ids become file names and shell arguments, so they are restricted to letters, digits,
``.``, ``_`` and ``-``; scan paths may contain anything (spaces included). Relative scan paths
in a samplesheet are relative to the samplesheet's folder.
"""

from __future__ import annotations

import csv
import glob
import io
from dataclasses import dataclass
from pathlib import Path

from tssc_py.errors import TsscError
from tssc_py.io import default_subject
from tssc_py.names import check_subject_id

REQUIRED_COLUMNS = ("subject", "scan")
OPTIONAL_COLUMNS = ("start_frame", "end_frame")
SHEET_MAX_BYTES = 64 << 20
"""Largest samplesheet read (about half a million rows of long paths): a bigger file is not
one, and would be read into memory whole."""


@dataclass(frozen=True)
class Subject:
    """One row of a cohort: an id, its scan, and optional frame range."""

    subject: str
    scan: Path
    start_frame: int | None = None
    end_frame: int | None = None


def _optional_int(value: str | None, column: str, sheet: Path, line: int) -> int | None:
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise TsscError(f"line {line}: {column} {value!r} is not an integer", sheet) from None


def _sheet_text(sheet: Path) -> str:
    """The text of a samplesheet, refused when it is missing, too large to be one, or not
    UTF-8 text."""
    if not sheet.is_file():
        raise TsscError("no such file", sheet)
    if sheet.stat().st_size > SHEET_MAX_BYTES:
        raise TsscError(
            f"is {sheet.stat().st_size} bytes, more than a samplesheet's {SHEET_MAX_BYTES}", sheet
        )
    data = sheet.read_bytes()
    if b"\0" in data:  # no path holds one; the csv module would pass it on
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise TsscError(f"line {line}: holds a NUL byte: not a text file", sheet)
    try:
        # utf-8-sig: spreadsheet programs start "CSV UTF-8" files with a byte-order mark.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TsscError(
            f"line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save it as CSV UTF-8",
            sheet,
        ) from None


def read_samplesheet(sheet: Path) -> list[Subject]:
    """Parse and validate a samplesheet CSV.

    Raises:
        TsscError: for a missing, oversized or non-UTF-8 file, a missing column, an empty
            sheet, a row that is not CSV, a bad or duplicate subject id, or a non-integer frame.
    """
    text = _sheet_text(sheet)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            raise TsscError(f"samplesheet is missing column(s): {', '.join(missing)}", sheet)
        reader.fieldnames = columns
        subjects: list[Subject] = []
        seen: set[str] = set()
        for line, row in enumerate(reader, start=2):
            subject = (row.get("subject") or "").strip()
            scan = (row.get("scan") or "").strip()
            if not subject or not scan:
                raise TsscError(f"line {line}: empty subject or scan", sheet)
            check_subject_id(subject, f"{sheet}: line {line}")
            if subject in seen:
                raise TsscError(f"line {line}: duplicate subject {subject!r}", sheet)
            seen.add(subject)
            path = Path(scan)
            subjects.append(
                Subject(
                    subject,
                    path if path.is_absolute() else sheet.parent / path,
                    _optional_int(row.get("start_frame"), "start_frame", sheet, line),
                    _optional_int(row.get("end_frame"), "end_frame", sheet, line),
                )
            )
    except csv.Error as exc:
        # The reader counts the lines it finished: the faulty row starts on the next.
        raise TsscError(f"line {reader.line_num + 1}: not a CSV row ({exc})", sheet) from None
    if not subjects:
        raise TsscError("samplesheet has no rows", sheet)
    return subjects


def read_inputs(spec: str | Path) -> list[Subject]:
    """Subjects from a samplesheet (``.csv``), one scan file, or a glob of scan files.

    Subject ids of plain files are their names without the image suffix.
    """
    spec = str(spec)  # a glob is text; a Path names a sheet or one file
    if spec.lower().endswith(".csv"):
        return read_samplesheet(Path(spec))
    path = Path(spec)
    paths = [path] if path.exists() else [Path(p) for p in sorted(glob.glob(spec))]
    if not paths:
        raise TsscError("no such file, and no file matches it as a glob", spec)
    subjects: list[Subject] = []
    seen: dict[str, Path] = {}
    for scan in paths:
        subject = check_subject_id(default_subject(scan), scan)
        if subject in seen:
            raise TsscError(f"two inputs give subject id {subject!r}: {seen[subject]}", scan)
        seen[subject] = scan
        subjects.append(Subject(subject, scan))
    return subjects
