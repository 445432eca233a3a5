"""The bin/ scripts: help texts, and one clear error line for every kind of bad input."""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

import click
import numpy as np
import pytest

from tests.conftest import BIN, assert_one_line_error, blob_series, run_cli, write_nifti

SCRIPTS = sorted(p.name for p in BIN.glob("tssc-*"))


def _load(name: str):
    loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(BIN / name))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_option_is_explained(name: str) -> None:
    command = _load(name).main
    assert command.help, f"{name} has no description"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{name} {param.opts} has no help text"


@pytest.mark.parametrize("name", ["tssc-prepare", "tssc-run"])
def test_help_runs(name: str) -> None:
    out = run_cli(name, "--help").stdout
    assert "--overwrite" in out and "--size" in out


def _prepare(scan: Path, out: Path, *extra: object, size: int = 16, check: bool = False):
    return run_cli(
        "tssc-prepare",
        "--scan",
        scan,
        "--out",
        out,
        "--size",
        size,
        "--depth",
        4,
        *extra,
        check=check,
    )


def _bad_scans(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = write_nifti(tmp_path / "good.nii.gz", blob_series((12, 12, 4, 14)))
    random_bytes = tmp_path / "random.nii.gz"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(4000))
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[:600])
    nan = blob_series((12, 12, 4, 14)).astype(np.float32)
    nan[2, 2, 2, 2] = np.nan
    return {
        "missing": (tmp_path / "missing.nii.gz", "no such file"),
        "random bytes": (random_bytes, "not a readable image"),
        "truncated gzip": (truncated, "not a readable image"),
        "3D": (write_nifti(tmp_path / "vol.nii.gz", blob_series()[..., 0]), "is 3D"),
        "few frames": (
            write_nifti(tmp_path / "short.nii.gz", blob_series((12, 12, 4, 5))),
            "fewer frames than needed",
        ),
        "NaN": (write_nifti(tmp_path / "nan.nii.gz", nan), "NaN or infinite"),
    }


@pytest.mark.parametrize(
    "case", ["missing", "random bytes", "truncated gzip", "3D", "few frames", "NaN"]
)
def test_prepare_bad_input(tmp_path: Path, case: str) -> None:
    scan, message = _bad_scans(tmp_path)[case]
    proc = _prepare(scan, tmp_path / "out" / "p.nii.gz")
    assert_one_line_error(proc, str(scan), message)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_existing_output_refused_unless_overwrite(tmp_path: Path) -> None:
    scan = write_nifti(tmp_path / "with space" / "s.nii.gz", blob_series((12, 12, 4, 14)))
    out = tmp_path / "o.nii.gz"

    _prepare(scan, out, check=True)
    before = out.read_bytes()
    assert_one_line_error(_prepare(scan, out, size=8), "o.nii.gz", "output exists")
    assert out.read_bytes() == before
    _prepare(scan, out, "--overwrite", size=8, check=True)
    assert out.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["o.json", "o.nii.gz"]


@pytest.mark.parametrize(
    ("sheet", "message"),
    [
        ("subject,file\na,x.nii.gz\n", "missing column"),
        ("subject,scan\na,good.nii.gz\na,good.nii.gz\n", "duplicate subject"),
        ("subject,scan\na;rm -rf,good.nii.gz\n", "subject id"),
    ],
)
def test_run_bad_samplesheet(tmp_path: Path, sheet: str, message: str) -> None:
    write_nifti(tmp_path / "good.nii.gz", blob_series((12, 12, 4, 14)))
    path = tmp_path / "sheet.csv"
    path.write_text(sheet)
    proc = run_cli("tssc-run", "--input", path, "--out", tmp_path / "run", check=False)
    assert_one_line_error(proc, str(path), message)
    assert not (tmp_path / "run").exists()


def test_run_bad_scan_in_cohort_is_named_before_any_work(tmp_path: Path) -> None:
    write_nifti(tmp_path / "a.nii.gz", blob_series((12, 12, 12, 14)))
    (tmp_path / "b.nii.gz").write_bytes(b"\x1f\x8b broken")
    (tmp_path / "sheet.csv").write_text("subject,scan\na,a.nii.gz\nb,b.nii.gz\n")
    run = ("tssc-run", "--input", tmp_path / "sheet.csv", "--out", tmp_path / "run")
    options = ("--size", 12, "--depth", 12, "--no-progress")
    proc = run_cli(*run, *options, check=False)
    assert_one_line_error(proc, str(tmp_path / "b.nii.gz"), "not a readable image")
    assert not (tmp_path / "run").exists()
    # Mended, the run goes through; resumed with a changed option it is refused, naming it.
    write_nifti(tmp_path / "b.nii.gz", blob_series((12, 12, 12, 14), seed=1))
    run_cli(*run, *options)
    proc = run_cli(*run, "--size", 11, "--depth", 12, "--no-progress", "--resume", check=False)
    assert_one_line_error(proc, "run.json", "other settings (prepare.size differs)")
    assert "resuming: 2 of 2 subjects already done" in run_cli(*run, *options, "--resume").stderr
    assert (tmp_path / "run" / "report" / "report.html").is_file()


def test_run_upsample_says_nothing_is_scored(tmp_path: Path) -> None:
    write_nifti(tmp_path / "a.nii.gz", blob_series((12, 12, 4, 3)))
    run = ("tssc-run", "--input", tmp_path / "a.nii.gz", "--out", tmp_path / "run")
    options = ("--size", 12, "--depth", 4, "--mode", "upsample", "--no-progress")
    proc = run_cli(*run, *options, "--frames-between", 2)
    assert "upsample mode: nothing scored (no truth), so no metrics and no report" in proc.stdout
    assert not (tmp_path / "run" / "report").exists()
    proc = run_cli("tssc-report", "--out", tmp_path / "rep", tmp_path / "run", check=False)
    assert_one_line_error(proc, "is an upsample-mode run")


def test_run_refuses_non_empty_output(tmp_path: Path) -> None:
    write_nifti(tmp_path / "a.nii.gz", blob_series((12, 12, 12, 14)))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "keep.txt").write_text("x")
    proc = run_cli(
        "tssc-run", "--input", tmp_path / "a.nii.gz", "--out", tmp_path / "run", check=False
    )
    assert_one_line_error(proc, "output folder is not empty")


def test_bad_option_values_are_one_line_errors(tmp_path: Path) -> None:
    proc = run_cli(
        "tssc-interpolate",
        "--chunk",
        tmp_path / "c.npz",
        "--method",
        "magic",
        "--out",
        tmp_path / "o.npz",
        check=False,
    )
    assert_one_line_error(proc, "Invalid value for '--method': 'magic' is not one of")
    scan = tmp_path / "s.nii.gz"
    for args, message in [
        (["--frames-between", "3"], "'--frames-between': is only used with --mode upsample"),
        (["--known-every", "3", "--mode", "upsample"], "'--known-every': is only used with"),
        (["--frames", "1"], "'--frames': 1 is not in the range x>=2"),
        (["--bogus"], "No such option '--bogus'"),
    ]:
        proc = run_cli(
            "tssc-prepare", "--scan", scan, "--out", tmp_path / "p.nii", *args, check=False
        )
        assert_one_line_error(proc, message)
        assert proc.returncode == 1 and not (tmp_path / "p.nii").exists()
    # --mode is read first wherever it stands: the same option after it is accepted.
    proc = run_cli(
        "tssc-prepare", "--scan", scan, "--out", tmp_path / "p.nii", "--frames-between", "3",
        "--mode", "upsample", check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "no such file")


def test_size_options_have_upper_bounds(tmp_path: Path) -> None:
    from tssc_py.prepare import MAX_DEPTH, MAX_FRAMES_BETWEEN, MAX_SIZE

    limits = {"size": MAX_SIZE, "depth": MAX_DEPTH, "frames_between": MAX_FRAMES_BETWEEN}
    for name in ("tssc-prepare", "tssc-run"):
        params = {p.name: p for p in _load(name).main.params}
        assert {key: params[key].type.max for key in limits} == limits  # type: ignore[attr-defined]
    scan = write_nifti(tmp_path / "s.nii.gz", blob_series())
    proc = run_cli(
        "tssc-run", "--input", scan, "--out", tmp_path / "run", "--mode", "upsample",
        "--frames-between", "10000000", check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "'--frames-between': 10000000 is not in the range 1<=x<=1000")
    # Each within its bound, together too much: refused before any work, naming the options.
    proc = run_cli(
        "tssc-prepare", "--scan", scan, "--out", tmp_path / "p.nii", "--mode", "upsample",
        "--size", "4096", "--depth", "1024", "--frames-between", "1000", check=False,
    )  # fmt: skip
    assert_one_line_error(
        proc,
        "s.nii.gz: the filled series (7008 frames of 4096x4096x1024 for --size 4096, --depth "
        "1024, 8 chosen frames and --frames-between 1000; as many on the scan's 24x20x6 grid) "
        "needs about 481,586 GB of memory, more than this machine's",
    )
    assert not (tmp_path / "p.nii").exists()


def test_trainer_size_options_have_upper_bounds(tmp_path: Path) -> None:
    from tssc_py.baselines.model import MAX_FEATURES
    from tssc_py.stage1.model import DIT_LIMITS
    from tssc_py.stage2.model import REFINE_LIMITS
    from tssc_py.training import MAX_BATCH_SIZE

    expected = {
        # priors follows from --prior, not an option of its own.
        "tssc-train-stage1": {k: v[1] for k, v in DIT_LIMITS.items() if k != "priors"},
        "tssc-train-stage2": {k: REFINE_LIMITS[k][1] for k in ("channels", "blocks")},
        "tssc-train-baseline": {"features": MAX_FEATURES},
    }
    for name, limits in expected.items():
        params = {p.name: p for p in _load(name).main.params}
        limits = {**limits, "batch_size": MAX_BATCH_SIZE}
        assert {key: params[key].type.max for key in limits} == limits  # type: ignore[attr-defined]
    proc = run_cli(
        "tssc-train-stage1", "--data", tmp_path, "--out", tmp_path / "o", "--hidden", "1000000",
        check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "'--hidden': 1000000 is not in the range 4<=x<=4096")


def test_diffusion_without_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    proc = run_cli(
        "tssc-interpolate",
        "--chunk",
        tmp_path / "c.npz",
        "--method",
        "diffusion",
        "--out",
        tmp_path / "o.npz",
        check=False,
    )
    assert_one_line_error(proc, "needs a trained model (--checkpoint DIR)")


def test_train_stage1_bad_input(tmp_path: Path) -> None:
    proc = run_cli(
        "tssc-train-stage1", "--data", tmp_path / "none", "--out", tmp_path / "o", check=False
    )
    assert_one_line_error(proc, "none: no such file or folder")
    proc = run_cli(
        "tssc-train-stage1", "--data", tmp_path, "--out", tmp_path / "o", "--resume", check=False
    )
    assert_one_line_error(proc, "no such checkpoint folder")
    (tmp_path / "empty").mkdir()
    proc = run_cli(
        "tssc-train-stage1", "--data", tmp_path / "empty", "--out", tmp_path / "o", check=False
    )
    assert_one_line_error(proc, "holds no prepared image")
