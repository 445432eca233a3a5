"""The whole chain through the bin/ scripts on a tiny synthetic cohort, as a user runs it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.conftest import run_cli
from tssc_py.io import read_scan
from tssc_py.prepare import load_record


def _synth(kind: str, *options: object) -> None:
    """A tiny cohort: 2 subjects of 32x32x12 voxels and 8 frames."""
    run_cli(
        "tssc-synth",
        "--kind",
        kind,
        "--subjects",
        2,
        "--size",
        32,
        "--depth",
        12,
        "--frames",
        8,
        *options,
    )


def test_step_scripts_chain(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort dir"
    _synth("cardiac", "--seed", 3, "--out", cohort)
    scans = sorted(cohort.glob("*.nii.gz"))
    assert len(scans) == 2
    for scan in scans:
        subject = scan.name.removesuffix(".nii.gz")
        prepared = tmp_path / "prep" / f"{subject}.nii.gz"
        record = tmp_path / "prep" / f"{subject}.json"
        run_cli(
            "tssc-prepare",
            "--scan",
            scan,
            "--out",
            prepared,
            "--size",
            32,
            "--depth",
            12,
            "--frames",
            8,
        )
        run_cli(
            "tssc-split",
            "--prepared",
            prepared,
            "--record",
            record,
            "--chunk-size",
            5,
            "--out",
            tmp_path / "chunks",
        )
        chunks = sorted((tmp_path / "chunks").glob(f"{subject}.chunk*.npz"))
        assert len(chunks) == 3
        for method in ("linear", "nearest"):
            filled_chunks = []
            for chunk in chunks:
                out = tmp_path / "filled" / method / chunk.name
                run_cli("tssc-interpolate", "--chunk", chunk, "--method", method, "--out", out)
                filled_chunks.append(out)
            filled = tmp_path / "filled" / method / f"{subject}.nii.gz"
            run_cli("tssc-assemble", "--record", record, "--out", filled, *filled_chunks[::-1])
            restored = tmp_path / "restored" / method / f"{subject}.nii.gz"
            run_cli("tssc-restore", "--filled", filled, "--record", record, "--out", restored)
            source, result = read_scan(scan), read_scan(restored)
            assert result.data.shape == source.data.shape
            assert result.data.dtype == source.data.dtype
            np.testing.assert_array_equal(result.affine, source.affine)
            # Known frames (first and last) survive the whole chain within one grey level
            # wherever the intensity scaling did not clip them.
            rec = load_record(record)
            for t in (0, 7):
                src = source.data[..., t].astype(int)
                diff = np.abs(result.data[..., t].astype(int) - src)
                kept = (src >= rec.intensity_low) & (src <= rec.intensity_high)
                assert diff[kept].max() <= 1
            run_cli(
                "tssc-metrics",
                "--prediction",
                filled,
                "--truth",
                prepared,
                "--record",
                record,
                "--method",
                method,
                "--out",
                tmp_path / "metrics",
            )
    run_cli("tssc-report", "--out", tmp_path / "report", tmp_path / "metrics")
    summary = pd.read_csv(tmp_path / "report" / "summary.csv").set_index("method")
    assert list(summary.index) == ["linear", "nearest"]
    assert (summary["subjects"] == 2).all()
    assert summary.loc["linear", "psnr_mean"] > summary.loc["nearest", "psnr_mean"]
    cohort_table = pd.read_csv(tmp_path / "report" / "cohort.csv")
    assert len(cohort_table) == 4 and (cohort_table["frames"] == 6).all()
    assert (tmp_path / "report" / "psnr_per_frame.png").read_bytes()[:4] == b"\x89PNG"


def test_tssc_run_on_a_synthetic_cohort(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    _synth("knee", "--out", cohort)
    run_cli(
        "tssc-run",
        "--input",
        cohort / "samplesheet.csv",
        "--out",
        tmp_path / "run",
        "--size",
        32,
        "--depth",
        12,
        "--frames",
        8,
        "--no-progress",
    )
    summary = pd.read_csv(tmp_path / "run" / "report" / "summary.csv")
    assert set(summary["method"]) == {"linear", "nearest"}
    assert np.isfinite(summary["psnr_mean"]).all()


def test_train_stage1_then_use_it(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    _synth("knee", "--subjects", 3, "--out", cohort)
    for scan in sorted(cohort.glob("*.nii.gz")):
        run_cli(
            "tssc-prepare",
            "--scan",
            scan,
            "--out",
            tmp_path / "prep" / scan.name,
            "--size",
            32,
            "--depth",
            12,
            "--frames",
            8,
        )
    train = (
        "tssc-train-stage1",
        "--data",
        tmp_path / "prep",
        "--out",
        tmp_path / "train",
        "--frames",
        8,
        "--batch-size",
        2,
        "--val-every",
        3,
        "--val-sequences",
        2,
        "--val-steps",
        2,
        "--checkpoint-every",
        3,
        "--no-progress",
    )
    run_cli(*train, "--steps", 3)
    proc = run_cli(*train, "--steps", 5, "--resume")
    assert "step 5: val PSNR" in proc.stderr
    log = pd.read_csv(tmp_path / "train" / "log.csv")
    assert list(log["step"]) == [3, 5] and log["val_psnr"].notna().all()
    checkpoint = tmp_path / "train" / "checkpoint"

    run_cli(
        "tssc-split",
        "--prepared",
        tmp_path / "prep" / "knee_000.nii.gz",
        "--record",
        tmp_path / "prep" / "knee_000.json",
        "--out",
        tmp_path / "chunks",
    )
    chunk = next((tmp_path / "chunks").glob("*.npz"))
    out = tmp_path / "filled.npz"
    run_cli(
        "tssc-interpolate",
        "--chunk",
        chunk,
        "--method",
        "diffusion",
        "--out",
        out,
        "--checkpoint",
        checkpoint,
        "--steps",
        2,
        "--seed",
        1,
        "--flips",
        2,
        "--device",
        "cpu",
    )
    filled, source = np.load(out), np.load(chunk)
    np.testing.assert_array_equal(filled["stack"][:, [0, 7]], source["stack"][:, [0, 7]])

    run_cli(
        "tssc-run",
        "--input",
        cohort / "samplesheet.csv",
        "--out",
        tmp_path / "run",
        "--methods",
        "linear,diffusion",
        "--checkpoint",
        checkpoint,
        "--steps",
        2,
        "--size",
        32,
        "--depth",
        12,
        "--frames",
        8,
        "--no-progress",
    )
    summary = pd.read_csv(tmp_path / "run" / "report" / "summary.csv")
    assert set(summary["method"]) == {"linear", "diffusion"}
    assert np.isfinite(summary["psnr_mean"]).all()
