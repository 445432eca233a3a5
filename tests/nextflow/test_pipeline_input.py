"""Bad input under the real Nextflow: each refused before any task starts, with a non-zero
exit and one message naming the parameter, or the samplesheet, its line and the rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.nextflow.nextflow_files import REPO
from tests.nextflow.runner import launched_tasks, nextflow, output, run_pipeline
from tests.nextflow.test_schema import BAD_SHEETS

pytestmark = pytest.mark.slow


def _refused(tmp_path: Path, *args: str | Path) -> str:
    proc = run_pipeline(*args, cwd=tmp_path)
    text = output(proc)
    assert proc.returncode != 0, text
    assert "Submitted process" not in text and not launched_tasks(tmp_path), text
    assert "Traceback" not in text and "Exception" not in text, text
    return text


def _scan(tmp_path: Path, name: str = "s1.nii.gz") -> Path:
    scan = tmp_path / name
    scan.write_bytes(b"")  # nothing is read before the checks end
    return scan


SHEET_MESSAGES = {
    "subject with a slash": "line 2: subject 'sub/1': subject ids are at most 100 letters",
    "subject with a space": "line 2: subject 'sub 1': subject ids",
    "subject with a quote": "line 2: subject 'sub'1': subject ids",
    "subject ..": "line 2: subject '..': subject ids",
    "hidden subject": "line 2: subject '.s1': subject ids",
    "subject like an option": "line 2: subject '-s1': subject ids",
    "subject too long": "line 2: subject 'sss",
    "empty subject": "line 2: empty subject",
    "empty scan": "line 2: empty scan",
    "duplicate subject": "line 3: duplicate subject 's1' (line 2)",
    "frame not an integer": "line 2: start_frame 'first': start_frame must be a frame index",
    "no scan column": "samplesheet is missing column(s): scan",
    "no rows": "samplesheet has no rows",
}


def test_every_bad_sheet_of_the_schema_tests_has_a_message() -> None:
    assert SHEET_MESSAGES.keys() == BAD_SHEETS.keys()


@pytest.mark.parametrize("case", BAD_SHEETS, ids=BAD_SHEETS.keys())
def test_a_bad_samplesheet_is_refused(tmp_path: Path, case: str) -> None:
    _scan(tmp_path, "a.nii.gz")
    _scan(tmp_path, "b.nii.gz")
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(BAD_SHEETS[case])
    assert f"{sheet}: {SHEET_MESSAGES[case]}" in _refused(tmp_path, "--input", sheet)


def test_a_negative_frame_is_refused(tmp_path: Path) -> None:
    _scan(tmp_path)
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("subject,scan,start_frame\ns1,s1.nii.gz,-1\n")
    assert "line 2: start_frame '-1': start_frame must be a frame index" in _refused(
        tmp_path, "--input", sheet
    )


def test_a_missing_scan_is_refused(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("subject,scan\ns1,gone.nii.gz\n")
    assert f"{sheet}: s1: gone.nii.gz: no such file" in _refused(tmp_path, "--input", sheet)


BAD_PARAMS = {
    "unknown method": (
        ["--methods", "linear,cubic"],
        "--methods 'linear,cubic': --methods is a comma-separated list",
    ),
    "wrong type": (["--size", "big"], "--size 'big': must be an integer"),
    "below the minimum": (["--size", "4"], "--size '4': must be at least 8"),
    "not in the enum": (["--device", "tpu"], "--device 'tpu': must be one of auto, cpu, cuda"),
    "boolean": (["--skip_refine", "maybe"], "--skip_refine 'maybe': must be a boolean"),
    "multiple": (
        ["--train_stage2_crop", "30"],
        "--train_stage2_crop '30': must be a multiple of 4",
    ),
    "unknown parameter": (["--frobnicate", "3"], "--frobnicate: unknown parameter"),
    "misspelt parameter": (["--Known_Every", "3"], "did you mean --known_every?"),
    "missing checkpoint folder": (
        ["--refine_checkpoint", "nowhere"],
        "--refine_checkpoint 'nowhere': no such file or folder",
    ),
}


@pytest.mark.parametrize("case", BAD_PARAMS, ids=BAD_PARAMS.keys())
def test_a_bad_parameter_is_refused(tmp_path: Path, case: str) -> None:
    args, message = BAD_PARAMS[case]
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"subject,scan\ns1,{_scan(tmp_path)}\n")
    text = _refused(tmp_path, "--input", sheet, *args)
    assert "Invalid parameters:" in text and message in text


def test_bad_parameters_are_listed_together(tmp_path: Path) -> None:
    text = _refused(tmp_path, "-profile", "test", "--size", "big", "--mode", "fast")
    assert "--size 'big'" in text and "--mode 'fast'" in text


def test_a_learned_method_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(f"subject,scan\ns1,{_scan(tmp_path)}\n")
    text = _refused(tmp_path, "--input", sheet, "--methods", "linear,uvinet")
    assert (
        "--methods uvinet: no trained model; give its checkpoint/ folder with --checkpoint "
        "(kind uvinet)" in text
    )


def test_a_checkpoint_of_another_kind_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "stage2"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"kind": "stage2"}))
    text = _refused(tmp_path, "-profile", "test", "--checkpoint", folder)
    assert f"--checkpoint {folder}: a 'stage2' checkpoint" in text


def test_help_lists_every_visible_parameter_and_runs_nothing(tmp_path: Path) -> None:
    proc = nextflow("run", REPO / "main.nf", "--help", cwd=tmp_path)
    assert proc.returncode == 0, output(proc)
    schema = json.loads((REPO / "nextflow_schema.json").read_text())
    for group in schema["$defs"].values():
        assert f"{group['title']}:" in proc.stdout
        for name, entry in group["properties"].items():
            assert (f"  --{name} " in proc.stdout) is not entry.get("hidden", False), name
    assert not launched_tasks(tmp_path)
