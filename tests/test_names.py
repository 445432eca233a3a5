"""Safe names and the paths read from state files."""

from __future__ import annotations

from pathlib import Path

import pytest

from tssc_py.errors import TsscError
from tssc_py.names import NAME_MAX, check_subject_id, inside


@pytest.mark.parametrize("good", ["sub-01_a.b", "0", "_x", "a..b", "x" * NAME_MAX])
def test_safe_ids(good: str) -> None:
    assert check_subject_id(good) == good


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("", "is empty"),
        (".", "starts with '.'"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),  # would look like tssc's own temporary files
        ("-rf", "starts with '-'"),  # an option on a command line
        ("a/b", "has characters other than"),
        ("../../ESCAPED", "has characters other than"),
        ("/abs", "has characters other than"),
        ("a b", "has characters other than"),
        ("é", "has characters other than"),
        ("x" * (NAME_MAX + 1), f"at most {NAME_MAX}"),  # a file name too long for the disk
    ],
)
def test_unsafe_ids_are_refused(bad: str, problem: str) -> None:
    with pytest.raises(TsscError, match="subject id") as caught:
        check_subject_id(bad, "sheet.csv")
    assert problem in str(caught.value) and str(caught.value).startswith("sheet.csv: ")


def test_inside_keeps_paths_in_their_folder(tmp_path: Path) -> None:
    assert inside(tmp_path, "filled/linear/a.nii.gz") == tmp_path / "filled/linear/a.nii.gz"
    for bad in ("filled/../../victim.txt", "/etc/passwd", "..", "", "a//b", "./a", "a\\..\\b"):
        with pytest.raises(TsscError, match="names"):
            inside(tmp_path, bad, tmp_path / "run.json")
    # A link planted in the folder leads elsewhere.
    (tmp_path / "away").symlink_to(tmp_path.parent)
    with pytest.raises(TsscError, match="leads out of"):
        inside(tmp_path, "away/victim.txt")
