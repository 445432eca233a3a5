"""Atomic outputs: temporary names, what a killed process leaves, writes that fail."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO, assert_one_line_error, blob_series, run_cli, write_nifti
from tssc_py import atomic
from tssc_py.atomic import atomic_path, outputs, remove_leftovers, temporary_name
from tssc_py.errors import TsscError


def _dead_pid() -> int:
    """The id of a process that has ended."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout)


def _leftover(folder: Path, dest: str, pid: int, host: str | None = None) -> Path:
    """A temporary file named as process ``pid`` of ``host`` (default: this machine) names
    one."""
    path = folder / f".{dest}.tssc-{host or atomic._HOST}-{pid}-abc123_x.tmp.nii.gz"
    path.write_bytes(b"half")
    return path


def test_temporary_names_say_which_process_made_them(tmp_path: Path) -> None:
    prefix, suffix = temporary_name(tmp_path / "a.nii.gz", ".tmp.nii.gz")
    assert (prefix, suffix) == (f".a.nii.gz.tssc-{atomic._HOST}-{os.getpid()}-", ".tmp.nii.gz")
    with atomic_path(tmp_path / "a.txt") as tmp:
        assert tmp.name.startswith(f".a.txt.tssc-{atomic._HOST}-{os.getpid()}-")
        tmp.write_text("x")
    assert (tmp_path / "a.txt").read_text() == "x"


def test_only_what_dead_tssc_processes_of_this_machine_left_is_removed(tmp_path: Path) -> None:
    dead = _dead_pid()
    gone = _leftover(tmp_path, "a.nii.gz", dead)
    folder = tmp_path / f".ckpt.tssc-{atomic._HOST}-{dead}-q1w2e3.tmp"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"x")
    kept = [
        _leftover(tmp_path, "b.nii.gz", os.getpid()),  # a write of this process, under way
        _leftover(tmp_path, "c.nii.gz", dead, host="0badc0de"),  # another node's process
        tmp_path / ".a.nii.gz.abc.tmp.nii.gz",  # not a tssc name
        tmp_path / "a.nii.gz",
        tmp_path / ".hidden",
    ]
    for path in kept[2:]:
        path.write_bytes(b"mine")
    assert sorted(remove_leftovers(tmp_path)) == sorted([gone, folder])
    assert all(p.exists() for p in kept) and not gone.exists() and not folder.exists()


def test_a_killed_write_is_cleaned_by_the_next_write_of_that_output(tmp_path: Path) -> None:
    dest = tmp_path / "out.txt"
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from tssc_py.atomic import atomic_path\n"
        "with atomic_path(Path(sys.argv[1])) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(dest)], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(".out.txt.tssc-*")
    other = _leftover(tmp_path, "other.txt", _dead_pid())  # of another output: not this write's
    with atomic_path(dest) as tmp:
        tmp.write_text("whole")
    assert not left.exists() and other.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


def test_a_write_that_fails_names_the_output(tmp_path: Path) -> None:
    dest = tmp_path / "a.txt"
    full = r"a\.txt: cannot write: No space left on device"
    with pytest.raises(TsscError, match=full), outputs() as group:
        group.path(tmp_path / "first.txt").write_text("x")
        group.path(dest)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a writer naming no file
    assert list(tmp_path.iterdir()) == []  # neither output, no temporary file
    # Other errors are not writing's: they pass unchanged.
    with pytest.raises(PermissionError), outputs() as group:
        group.path(dest)
        raise PermissionError(errno.EACCES, "denied", "/elsewhere")


def _file_size_limit(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_nothing(tmp_path: Path) -> None:
    # A file size limit makes writes fail as a full disk does (Python ignores SIGXFSZ).
    scan = write_nifti(tmp_path / "s.nii.gz", blob_series((24, 20, 6, 8)))
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, str(REPO / "bin/tssc-prepare"), "--scan", scan, "--out"]
    proc = subprocess.run(
        [*map(str, cmd), str(out / "p.nii"), "--size", "16", "--depth", "6", "--frames", "4"],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_file_size_limit(20_000),
    )
    assert_one_line_error(proc, "p.nii: cannot write: File too large")
    assert list(out.iterdir()) == []
    # The same command without the limit works: the limit was the only problem.
    run_cli(
        "tssc-prepare",
        "--scan",
        scan,
        "--out",
        out / "p.nii",
        "--size",
        16,
        "--depth",
        6,
        "--frames",
        4,
    )


def test_a_name_too_long_for_the_file_system_is_one_line(tmp_path: Path) -> None:
    scan = write_nifti(tmp_path / "s.nii.gz", blob_series((24, 20, 6, 8)))
    out = tmp_path / ("x" * 300 + ".nii")
    args = ["--scan", scan, "--out", out, "--size", 16, "--depth", 6, "--frames", 4]
    proc = run_cli("tssc-prepare", *args, check=False)
    assert_one_line_error(proc, "File name too long")


def test_a_full_disk_during_a_cohort_run_is_one_line(tmp_path: Path) -> None:
    scan = write_nifti(tmp_path / "s.nii.gz", blob_series((24, 20, 12, 8)))
    out = tmp_path / "out"
    args = ["--input", scan, "--out", out, "--size", 16, "--depth", 12, "--frames", 4]
    proc = subprocess.run(
        [sys.executable, str(REPO / "bin/tssc-run"), *map(str, args), "--no-progress"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        preexec_fn=_file_size_limit(20_000),
    )
    assert_one_line_error(proc, f"{out / 'prepared' / 's.nii.gz'}: cannot write: File too large")
    assert [p.name for p in out.rglob("*") if p.is_file()] == ["run.json"]
