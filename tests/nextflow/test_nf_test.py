"""The nf-test files (nf-test.config, tests/main.nf.test): run where Nextflow and nf-test are
installed, skipped with the reason here (Nextflow's jar cannot be downloaded on our machines)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.nextflow.nextflow_files import REPO

MISSING = [tool for tool in ("nextflow", "nf-test") if shutil.which(tool) is None]


@pytest.mark.slow
@pytest.mark.skipif(
    bool(MISSING),
    reason=f"nf-test files (tests/main.nf.test) not run: {' and '.join(MISSING)} not on PATH",
)
def test_nf_test_pipeline_tests_pass() -> None:
    done = subprocess.run(
        ["nf-test", "test", "tests/main.nf.test", "--profile", "test"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
