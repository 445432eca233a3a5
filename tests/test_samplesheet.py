"""Cohort inputs: samplesheets, single files and globs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import assert_one_line_error, run_cli
from tssc_py.errors import TsscError
from tssc_py.names import check_subject_id
from tssc_py.samplesheet import Subject, read_inputs


def _sheet(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my sheet.csv"
    path.write_text(text)
    return path


def test_samplesheet_with_relative_paths_spaces_and_frames(tmp_path: Path) -> None:
    sheet = _sheet(
        tmp_path,
        "subject,scan,start_frame,end_frame\np-01,scans/a scan.nii.gz,0,9\np_02,/abs/b.nii.gz,,\n",
    )
    subjects = read_inputs(str(sheet))
    assert subjects == [
        Subject("p-01", tmp_path / "scans" / "a scan.nii.gz", 0, 9),
        Subject("p_02", Path("/abs/b.nii.gz")),
    ]


def test_samplesheet_saved_by_a_spreadsheet_program(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes("subject,scan\r\na,a.nii.gz\r\n".encode("utf-8-sig"))  # BOM, CRLF
    assert read_inputs(str(sheet)) == [Subject("a", tmp_path / "a.nii.gz")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("subject,path\na,b.nii\n", "missing column.*scan"),
        ("subject,scan\na,x.nii\na,y.nii\n", "duplicate subject 'a'"),
        ("subject,scan\na b,x.nii\n", "subject id 'a b'"),
        ("subject,scan\n../x,x.nii\n", "subject id"),
        ("subject,scan\n$(rm),x.nii\n", "subject id"),
        ("subject,scan\n", "no rows"),
        ("subject,scan\na,\n", "empty subject or scan"),
        ("subject,scan,start_frame\na,x.nii,first\n", "not an integer"),
    ],
)
def test_bad_samplesheets(tmp_path: Path, text: str, message: str) -> None:
    sheet = _sheet(tmp_path, text)
    with pytest.raises(TsscError, match=message) as info:
        read_inputs(str(sheet))
    assert str(sheet) in str(info.value)


def test_single_file_and_glob(tmp_path: Path) -> None:
    for name in ("b.nii.gz", "a.nii.gz", "c.mha"):
        (tmp_path / name).write_bytes(b"")
    assert read_inputs(str(tmp_path / "c.mha")) == [Subject("c", tmp_path / "c.mha")]
    subjects = read_inputs(str(tmp_path / "*.nii.gz"))
    assert [s.subject for s in subjects] == ["a", "b"]
    with pytest.raises(TsscError, match="no file matches"):
        read_inputs(str(tmp_path / "*.nrrd"))


def test_glob_with_colliding_ids(tmp_path: Path) -> None:
    (tmp_path / "a.nii").write_bytes(b"")
    (tmp_path / "a.nii.gz").write_bytes(b"")
    with pytest.raises(TsscError, match="two inputs give subject id 'a'"):
        read_inputs(str(tmp_path / "a.*"))


def test_subject_ids() -> None:
    assert check_subject_id("sub-01_a.b") == "sub-01_a.b"
    for bad in ("", ".", "..", "a/b", "a b", "é"):
        with pytest.raises(TsscError):
            check_subject_id(bad)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            "subject,scan\ns1,caf\xe9.nii.gz\n".encode("latin-1"),
            "line 2: not UTF-8 text (byte 0xe9)",
        ),
        (b"subject,scan\ns1,a\x00.nii.gz\n", "line 2: holds a NUL byte"),
        (b"subject,scan\ns1," + b"a" * 200_000 + b"\n", "line 2: not a CSV row"),
        (b"subject,scan\n.s1,a.nii.gz\n", "line 2: subject id '.s1' starts with '.'"),
        (b"subject,scan\n" + b"s" * 300 + b",a.nii.gz\n", "characters long, at most 100"),
    ],
)
def test_bad_sheets_are_one_line_errors(tmp_path: Path, content: bytes, problem: str) -> None:
    sheet = tmp_path / "sheet.csv"
    sheet.write_bytes(content)
    with pytest.raises(TsscError, match=re.escape(problem)):
        read_inputs(sheet)
    proc = run_cli("tssc-run", "--input", sheet, "--out", tmp_path / "out", check=False)
    assert_one_line_error(proc, str(sheet), problem)
