"""Fixtures of the real Nextflow runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.nextflow.runner import output, run_pipeline


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real ``-profile test`` run on the local executor (training, then evaluation); its
    folder (``results/`` inside). Tests using it carry ``xdist_group("pipeline")``."""
    where = tmp_path_factory.mktemp("pipeline")
    proc = run_pipeline("-profile", "test", cwd=where, timeout=3000)
    assert proc.returncode == 0, output(proc)
    return where
