"""tssc-run's library function on small cohorts."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import blob_series, write_nifti
from tssc_py import pipeline
from tssc_py.errors import TsscError
from tssc_py.io import read_scan
from tssc_py.metrics import METRICS
from tssc_py.pipeline import run_cohort
from tssc_py.prepare import PrepareConfig
from tssc_py.samplesheet import Subject


@pytest.fixture
def cohort(tmp_path: Path) -> Path:
    for i in range(2):
        write_nifti(tmp_path / "in" / f"s{i}.nii.gz", blob_series((20, 16, 12, 14), seed=i))
    sheet = tmp_path / "in" / "sheet.csv"
    sheet.write_text("subject,scan,start_frame,end_frame\ns0,s0.nii.gz,,\ns1,s1.nii.gz,2,9\n")
    return sheet


def test_evaluate_run_writes_everything(tmp_path: Path, cohort: Path) -> None:
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=6)
    written = run_cohort(str(cohort), out, ["linear", "nearest"], config, show_progress=False)
    assert all(p.exists() for p in written)
    for subject, frames in (("s0", 6), ("s1", 6)):
        source = read_scan(cohort.parent / f"{subject}.nii.gz")
        for method in ("linear", "nearest"):
            restored = read_scan(out / method / f"{subject}.nii.gz")
            assert restored.data.shape == (20, 16, 12, frames)
            assert restored.data.dtype == source.data.dtype
            np.testing.assert_allclose(restored.affine, source.affine)
    record = (out / "prepared" / "s1.json").read_text()
    assert '"source_frames": [\n  2,' in record  # the samplesheet's frame range
    summary = pd.read_csv(out / "report" / "summary.csv").set_index("method")
    assert summary.loc["linear", "subjects"] == 2
    # A blob moving steadily: blending beats copying the nearest frame.
    assert summary.loc["linear", "psnr_mean"] > summary.loc["nearest", "psnr_mean"]
    frames = pd.read_csv(out / "report" / "frames.csv")
    assert sorted(frames["frame"].unique()) == [1, 2, 3, 4]
    assert (out / "report" / "psnr_per_frame.png").stat().st_size > 1000
    # The report's numbers are the means (population std) of the per-subject CSVs.
    subjects = pd.concat(pd.read_csv(p) for p in sorted((out / "metrics").glob("*.metrics.csv")))
    for method, table in subjects.groupby("method"):
        for m in METRICS:
            assert summary.loc[method, f"{m}_mean"] == pytest.approx(table[m].mean(), rel=1e-9)
            assert summary.loc[method, f"{m}_std"] == pytest.approx(np.std(table[m]), rel=1e-6)
    # One dataset, named after the samplesheet's folder; figures of the first subject, whose
    # model-space results alone are kept.
    assert set(summary["dataset"]) == {"in"}
    assert sorted(p.relative_to(out).as_posix() for p in (out / "filled").rglob("*.*")) == [
        "filled/linear/s0.nii.gz",
        "filled/nearest/s0.nii.gz",
    ]
    for name in ("comparison.csv", "examples.in.png", "errors.in.png", "report.html"):
        assert (out / "report" / name).is_file()


def test_evaluate_run_with_every_third_frame_known(tmp_path: Path, cohort: Path) -> None:
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=7, known_every=3)
    run_cohort(cohort, out, ["linear"], config, show_progress=False)
    frames = pd.read_csv(out / "report" / "frames.csv")
    assert sorted(frames["frame"].unique()) == [1, 2, 4, 5]  # 0, 3 and 6 known
    state = json.loads((out / "run.json").read_text())
    assert state["settings"]["prepare"]["known_every"] == 3
    # A resume with the first and last frame known only is another run.
    with pytest.raises(TsscError, match=r"prepare\.known_every differs"):
        run_cohort(cohort, out, ["linear"], replace(config, known_every=None), resume=True)


def test_upsample_run_has_no_scores(tmp_path: Path) -> None:
    write_nifti(tmp_path / "a.nii.gz", blob_series((16, 16, 4, 3)))
    out = tmp_path / "run"
    config = PrepareConfig(mode="upsample", size=16, depth=4, frames_between=4)
    run_cohort(str(tmp_path / "a.nii.gz"), out, ["linear"], config, show_progress=False)
    restored = read_scan(out / "linear" / "a.nii.gz")
    assert restored.data.shape == (16, 16, 4, 2 * 5 + 1)
    assert restored.time_step == pytest.approx(0.04 / 5)
    assert not (out / "metrics").exists() and not (out / "report").exists()


def test_run_refuses_unknown_methods_and_full_folders(tmp_path: Path, cohort: Path) -> None:
    with pytest.raises(TsscError, match="unknown method"):
        run_cohort(str(cohort), tmp_path / "run", ["linear", "magic"], show_progress=False)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("")
    with pytest.raises(TsscError, match="not empty"):
        run_cohort(str(cohort), tmp_path / "run", ["linear"], show_progress=False)
    # Report options are checked before the work, not after it.
    with pytest.raises(TsscError, match="figure subject 'x' is not in the input"):
        run_cohort(str(cohort), tmp_path / "r2", ["linear"], figure_subject="x")
    with pytest.raises(TsscError, match="dataset label 'a b'"):
        run_cohort(str(cohort), tmp_path / "r2", ["linear"], dataset="a b")
    assert not (tmp_path / "r2").exists()


def test_overwrite_reports_only_this_run(tmp_path: Path, cohort: Path) -> None:
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=6)
    run_cohort(str(cohort), out, ["linear", "nearest"], config, show_progress=False)
    run_cohort(
        str(cohort), out, ["linear"], config, overwrite=True, show_progress=False, dataset="b"
    )
    assert set(pd.read_csv(out / "report" / "summary.csv")["method"]) == {"linear"}
    assert not list((out / "metrics").glob("*.nearest.*"))
    assert not (out / "filled" / "nearest").exists() and not (out / "nearest").exists()
    # The earlier report's figures (dataset "in") are gone with it.
    assert sorted(p.name for p in (out / "report").glob("*.png")) == [
        "errors.b.png",
        "examples.b.png",
        "psnr_per_frame.png",
    ]


class KilledError(Exception):
    """Stands for the run being killed."""


def _grow(cohort: Path) -> None:
    """Add a third subject to the samplesheet."""
    write_nifti(cohort.parent / "s2.nii.gz", blob_series((20, 16, 12, 14), seed=2))
    cohort.write_text(cohort.read_text() + "s2,s2.nii.gz,,\n")


def test_resume_continues_an_interrupted_run(
    tmp_path: Path, cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=6)
    _grow(cohort)
    real = pipeline.run_subject
    calls: list[str] = []
    kill = ["s1"]

    def interrupted(subject: Subject, *args: object, **kwargs: object) -> list[Path]:
        calls.append(subject.subject)
        if subject.subject in kill:
            kill.clear()
            raise KilledError
        return real(subject, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "run_subject", interrupted)
    with pytest.raises(KilledError):
        run_cohort(str(cohort), out, ["linear"], config, show_progress=False)
    state = json.loads((out / "run.json").read_text())
    assert list(state["done"]) == ["s0"]
    assert not (out / "linear" / "s1.nii.gz").exists() and not (out / "report").exists()
    first = (out / "linear" / "s0.nii.gz").stat().st_mtime_ns
    with pytest.raises(TsscError, match="use --resume to continue"):
        run_cohort(str(cohort), out, ["linear"], config, show_progress=False)

    calls.clear()
    run_cohort(str(cohort), out, ["linear"], config, show_progress=False, resume=True)
    assert calls == ["s1", "s2"]  # s0 is kept as it was
    assert (out / "linear" / "s0.nii.gz").stat().st_mtime_ns == first
    assert list(json.loads((out / "run.json").read_text())["done"]) == ["s0", "s1", "s2"]
    assert pd.read_csv(out / "report" / "summary.csv").loc[0, "subjects"] == 3

    # A finished subject any of whose files was deleted is made again; the rest are kept. So
    # is the figure subject if its model-space series are missing.
    (out / "linear" / "s1.nii.gz").unlink()
    (out / "metrics" / "s2.linear.frames.csv").unlink()
    calls.clear()
    run_cohort(str(cohort), out, ["linear"], config, show_progress=False, resume=True)
    assert calls == ["s1", "s2"]
    (out / "filled" / "linear" / "s0.nii.gz").unlink()
    calls.clear()
    run_cohort(str(cohort), out, ["linear"], config, show_progress=False, resume=True)
    assert calls == ["s0"] and (out / "filled" / "linear" / "s0.nii.gz").is_file()


def test_a_run_that_finished_no_subject_can_be_started_again(tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=4, frames=6)
    # What the scans' headers show is checked before anything is written.
    write_nifti(tmp_path / "a.nii.gz", blob_series((16, 16, 4, 6)))
    with pytest.raises(TsscError, match="3D SSIM needs at least 11"):
        run_cohort(str(tmp_path / "a.nii.gz"), out, ["linear"], config, show_progress=False)
    assert not out.exists()
    # A scan whose voxels are bad shows it only when read: the run stops at it and leaves a
    # run.json that finished no subject; mended, the same folder takes a fresh run.
    bad = blob_series((16, 16, 4, 6)).astype(np.float32)
    bad[0, 0, 0, 0] = np.nan
    write_nifti(tmp_path / "a.nii.gz", bad)
    with pytest.raises(TsscError, match="NaN"):
        run_cohort(
            str(tmp_path / "a.nii.gz"), out, ["linear"], config, ssim_mode="2d", show_progress=False
        )
    assert json.loads((out / "run.json").read_text())["done"] == {}
    write_nifti(tmp_path / "a.nii.gz", blob_series((16, 16, 4, 6)))
    run_cohort(
        str(tmp_path / "a.nii.gz"), out, ["linear"], config, ssim_mode="2d", show_progress=False
    )
    assert (out / "report" / "report.html").is_file()


def test_what_a_header_shows_stops_the_run_before_any_work(tmp_path: Path, cohort: Path) -> None:
    write_nifti(cohort.parent / "s1.nii.gz", blob_series((20, 16, 12, 14)).astype(np.complex64))
    out = tmp_path / "run"
    with pytest.raises(TsscError, match=r"s1\.nii\.gz: holds complex64 values"):
        run_cohort(str(cohort), out, ["linear"], PrepareConfig(size=16, depth=12), "2d")
    assert not out.exists()


def test_resume_a_run_recorded_before_an_option_existed(tmp_path: Path, cohort: Path) -> None:
    # run.json of a tssc that recorded no demons options: that run used their defaults.
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=6)
    run_cohort(cohort, out, "linear,demons", config, show_progress=False)
    state = json.loads((out / "run.json").read_text())
    assert state["settings"]["methods"]["demons"] == {"iterations": 50, "sigma": 2.5, "levels": 4}
    state["settings"]["methods"]["demons"] = {}
    (out / "run.json").write_text(json.dumps(state))
    run_cohort(cohort, out, ["linear", "demons"], config, show_progress=False, resume=True)
    # Other values than the defaults it must have used are still refused.
    (out / "run.json").write_text(json.dumps(state))
    with pytest.raises(TsscError, match=r"methods\.demons\.iterations differs"):
        run_cohort(
            cohort,
            out,
            ["linear", "demons"],
            config,
            show_progress=False,
            resume=True,
            method_options={"iterations": 10},
        )


def test_resume_with_another_batch_size(tmp_path: Path, cohort: Path, checkpoint: Path) -> None:
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=6)
    options = {"checkpoint": str(checkpoint), "batch_size": 16, "flips": 1}
    run_cohort(cohort, out, ["diffusion"], config, show_progress=False, method_options=options)
    state = json.loads((out / "run.json").read_text())
    assert "batch_size" not in state["settings"]["methods"]["diffusion"]
    # An earlier tssc recorded the batch size: not compared either.
    state["settings"]["methods"]["diffusion"]["batch_size"] = 16
    state["done"] = {}
    (out / "run.json").write_text(json.dumps(state))
    options["batch_size"] = 3
    run_cohort(
        cohort,
        out,
        ["diffusion"],
        config,
        show_progress=False,
        resume=True,
        method_options=options,
    )


def test_resume_refuses_what_it_cannot_continue(tmp_path: Path, cohort: Path) -> None:
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=6)
    with pytest.raises(TsscError, match="nothing to resume"):
        run_cohort(str(cohort), out, ["linear"], config, show_progress=False, resume=True)
    with pytest.raises(TsscError, match="exclude each other"):
        run_cohort(str(cohort), out, ["linear"], config, resume=True, overwrite=True)
    run_cohort(str(cohort), out, ["linear"], config, show_progress=False)
    for methods, other, differ in (
        (["linear", "nearest"], config, "methods.nearest differs"),
        (
            ["linear"],
            replace(config, size=12, low_percentile=1),
            "prepare.low_percentile, prepare.size differ",
        ),
    ):
        with pytest.raises(TsscError, match=f"other settings \\({differ}\\)"):
            run_cohort(str(cohort), out, methods, other, show_progress=False, resume=True)
    with pytest.raises(TsscError, match="chunk_size differs"):
        run_cohort(str(cohort), out, ["linear"], config, 4, show_progress=False, resume=True)
    # The frame choice is compared per subject, as resolved.
    with pytest.raises(TsscError, match=r"subject 's0' was run from .* frames \[0, 3, "):
        run_cohort(
            str(cohort),
            out,
            ["linear"],
            replace(config, frames=5),
            show_progress=False,
            resume=True,
        )
    # Reordered, with the default frame range written out: the same run (the default figure
    # subject is the first row, not a setting).
    sheet = "subject,scan,start_frame,end_frame\ns1,s1.nii.gz,2,9\ns0,s0.nii.gz,0,13\n"
    cohort.write_text(sheet)
    run_cohort(str(cohort), out, ["linear"], config, show_progress=False, resume=True)
    # The new first row is the figure subject now: its series are kept, the old one's go.
    assert [p.name for p in (out / "filled").rglob("*.nii.gz")] == ["s1.nii.gz"]
    # A finished subject's scan or frame choice may not change under it, nor the subject go.
    cohort.write_text(sheet.replace("s1,s1.nii.gz,2,9", "s1,s1.nii.gz,1,9"))
    with pytest.raises(TsscError, match="subject 's1' was run from"):
        run_cohort(str(cohort), out, ["linear"], config, show_progress=False, resume=True)
    cohort.write_text("subject,scan\ns0,s0.nii.gz\n")
    with pytest.raises(TsscError, match="'s1' is not in the input"):
        run_cohort(str(cohort), out, ["linear"], config, show_progress=False, resume=True)
    state = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**state, "done": list(state["done"])}))
    with pytest.raises(TsscError, match="a run state of another tssc version"):
        run_cohort(str(cohort), out, ["linear"], config, show_progress=False, resume=True)


def test_known_frames_beyond_a_models_window_are_refused_before_any_work(
    tmp_path: Path, cohort: Path, checkpoint: Path
) -> None:
    # The session's stage-1 model has a 6-frame window: 7 frames with the ends known leave 5
    # between them, one more than it can fill.
    out = tmp_path / "run"
    with pytest.raises(TsscError, match="no known frame within 5 frames after frame 0"):
        run_cohort(
            cohort,
            out,
            ["linear", "diffusion"],
            PrepareConfig(size=16, depth=12, frames=7),
            show_progress=False,
            method_options={"checkpoint": str(checkpoint)},
        )
    assert not (out / "prepared").exists()
    # Every third frame known: windows of 4 frames fit.
    config = PrepareConfig(size=16, depth=12, frames=7, known_every=3)
    options = {"checkpoint": str(checkpoint), "flips": 1}
    run_cohort(cohort, out, ["diffusion"], config, show_progress=False, method_options=options)


def test_frame_errors_name_the_row_of_a_shared_scan(tmp_path: Path) -> None:
    write_nifti(tmp_path / "s.nii.gz", blob_series((16, 16, 12, 14)))
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("subject,scan,start_frame,end_frame\na,s.nii.gz,0,5\nb,s.nii.gz,9,3\n")
    config = PrepareConfig(size=16, depth=12)
    with pytest.raises(TsscError, match=r"subject 'b': end frame 3 must come after start frame 9"):
        run_cohort(sheet, tmp_path / "run", ["linear"], config, show_progress=False)


# --- what a run never touches: files it did not write, paths outside OUT -----------------


def test_overwrite_never_removes_files_it_did_not_write(tmp_path: Path, cohort: Path) -> None:
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=6)
    run_cohort(cohort, out, ["linear", "nearest"], config, show_progress=False)
    made = sorted(p for p in out.rglob("*") if p.is_file())
    mine = [out / "linear" / "mine.txt", out / "report" / "examples.mine.png"]
    for path in mine:
        path.write_text("the user's")
    with pytest.raises(TsscError, match=r"holds files no earlier run wrote: linear/mine\.txt"):
        run_cohort(cohort, out, ["linear"], config, overwrite=True, show_progress=False)
    # Refused before removing anything.
    assert sorted(p for p in out.rglob("*") if p.is_file()) == sorted([*made, *mine])
    mine[0].unlink()
    (out / "slurm-123.out").write_text("a job log beside the run's folders")
    (out / "report" / "examples.mine.png").unlink()
    run_cohort(cohort, out, ["linear"], config, overwrite=True, show_progress=False)
    assert (out / "slurm-123.out").read_text() == "a job log beside the run's folders"
    assert not (out / "nearest").exists()


def test_scans_where_the_run_writes_are_refused_before_any_work(
    tmp_path: Path, cohort: Path
) -> None:
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=6)
    # The user keeps the scans in OUT/prepared/: the run would write beside them, and
    # --overwrite once made it remove them.
    kept = out / "prepared"
    kept.mkdir(parents=True)
    for name in ("s0.nii.gz", "s1.nii.gz"):
        (kept / name).write_bytes((cohort.parent / name).read_bytes())
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"subject,scan\ns0,{kept / 's0.nii.gz'}\ns1,{kept / 's1.nii.gz'}\n")
    for overwrite in (False, True):
        with pytest.raises(TsscError, match=r"subject 's0': the scan lies in .*prepared"):
            run_cohort(sheet, out, ["linear"], config, overwrite=overwrite, show_progress=False)
    assert sorted(p.name for p in out.rglob("*")) == ["prepared", "s0.nii.gz", "s1.nii.gz"]
    # A result of an earlier run given as a scan: --overwrite would remove it.
    other = tmp_path / "other"
    run_cohort(cohort, other, ["linear"], config, show_progress=False)
    result = other / "linear" / "s0.nii.gz"
    sheet.write_text(f"subject,scan\nx,{result}\n")
    with pytest.raises(TsscError, match="the scan lies in"):
        run_cohort(sheet, other, ["linear"], config, overwrite=True, show_progress=False)
    assert result.is_file()


@pytest.mark.parametrize("entry", ["filled/../../victim.txt", "/tmp/victim.txt", "notes.txt"])
def test_run_state_paths_leading_out_of_the_run_are_refused(
    tmp_path: Path, cohort: Path, entry: str
) -> None:
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=6)
    run_cohort(cohort, out, ["linear"], config, show_progress=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("not tssc's")
    (out / "notes.txt").write_text("the user's notes")
    state = json.loads((out / "run.json").read_text())
    state["done"]["s0"].append(entry.replace("/tmp/", f"{tmp_path}/"))
    (out / "run.json").write_text(json.dumps(state))
    (out / "linear" / "s0.nii.gz").unlink()  # s0 would run again, removing its files
    for resume, overwrite in ((True, False), (False, True)):
        with pytest.raises(TsscError, match=r"run\.json: names"):
            run_cohort(
                cohort,
                out,
                ["linear"],
                config,
                resume=resume,
                overwrite=overwrite,
                show_progress=False,
            )
    assert victim.read_text() == "not tssc's"
    assert (out / "notes.txt").read_text() == "the user's notes"
    assert (out / "linear" / "s1.nii.gz").is_file()


def test_resume_runs_again_a_subject_whose_scan_was_replaced(
    tmp_path: Path, cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=6)
    run_cohort(cohort, out, ["linear"], config, show_progress=False)
    before = read_scan(out / "linear" / "s1.nii.gz").data
    write_nifti(cohort.parent / "s1.nii.gz", blob_series((20, 16, 12, 14), seed=7))
    calls: list[str] = []
    real = pipeline.run_subject

    def counted(subject: Subject, *args: object, **kwargs: object) -> list[Path]:
        calls.append(subject.subject)
        return real(subject, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "run_subject", counted)
    run_cohort(cohort, out, ["linear"], config, show_progress=False, resume=True)
    assert calls == ["s1"]
    assert not np.array_equal(read_scan(out / "linear" / "s1.nii.gz").data, before)


def test_resume_refuses_weights_replaced_in_place(
    tmp_path: Path, cohort: Path, checkpoint: Path
) -> None:
    from safetensors.torch import load_file, save_file

    model = tmp_path / "checkpoint"
    shutil.copytree(checkpoint, model)
    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=6)
    options = {"checkpoint": str(model), "flips": 1}
    run_cohort(cohort, out, ["diffusion"], config, show_progress=False, method_options=options)
    # Retrained with the same options, or copied over: the same config, other weights.
    weights = load_file(model / "ema.safetensors")
    save_file({k: v + 0.01 for k, v in weights.items()}, model / "ema.safetensors")
    resumed = {"show_progress": False, "method_options": options, "resume": True}
    with pytest.raises(TsscError, match=r"weights_sha256\.diffusion differs"):
        run_cohort(cohort, out, ["diffusion"], config, **resumed)


def test_what_a_killed_run_left_is_removed_by_the_next(tmp_path: Path, cohort: Path) -> None:
    from tests.test_atomic import _dead_pid, _leftover

    out = tmp_path / "run"
    config = PrepareConfig(size=16, depth=12, frames=6)
    run_cohort(cohort, out, ["linear"], config, show_progress=False)
    dead = _dead_pid()
    left = [_leftover(out / name, "s9.nii.gz", dead) for name in ("prepared", "linear")]
    left.append(_leftover(out / "filled" / "linear", "s9.nii.gz", dead))
    run_cohort(cohort, out, ["linear"], config, show_progress=False, resume=True)
    assert not any(p.exists() for p in left)
    left = [_leftover(out / "metrics", "s9.frames.csv", dead)]
    run_cohort(cohort, out, ["linear"], config, show_progress=False, overwrite=True)
    assert not left[0].exists()


def test_a_series_beyond_memory_stops_the_run_before_any_work(
    tmp_path: Path, cohort: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tssc_py import memory

    monkeypatch.setattr(memory, "physical_memory", lambda: 50_000_000)  # 50 MB
    out = tmp_path / "run"
    config = PrepareConfig(mode="upsample", size=64, depth=12, frames_between=100)
    with pytest.raises(TsscError, match=r"s0\.nii\.gz: subject 's0': the filled series"):
        run_cohort(cohort, out, ["linear"], config, show_progress=False)
    assert not out.exists()
