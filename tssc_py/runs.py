"""What a run folder of ``tssc-run`` (and of the Nextflow pipeline) holds, and the method names
of stage 2 over another method: one module, imported by the runner, the report and the tests,
and importing nothing (no torch)."""

from __future__ import annotations

from collections.abc import Iterable

PREPARED = "prepared"
"""Folder of a run holding each subject's prepared truth and its record."""
FILLED = "filled"
"""Folder of a run holding ``METHOD/SUBJECT.nii.gz``, filled series in model space."""
METRICS = "metrics"
"""Folder of a run holding each subject's per-frame metric tables."""
REPORT = "report"
"""Folder of a run holding the cohort report."""
RUN_STATE = "run.json"
"""A run's settings and finished subjects (:func:`tssc_py.pipeline.run_cohort`)."""

REFINED = "tssc"
"""Method name of stage 2 applied to the ``diffusion`` method's output (the full TSSC-Net)."""
REFINES = "diffusion"
"""The method whose output stage 2 refines in the paper (and in ``tssc-run``)."""
REFINED_SUFFIX = "_sc"
"""Stage 2 over any other method is that method's name and this suffix (spatial consistency)."""


def refined_name(method: str) -> str:
    """The method name of stage 2 over ``method``'s output: :data:`REFINED` over
    :data:`REFINES`, ``METHOD_sc`` over any other (``demons_sc``)."""
    return REFINED if method == REFINES else f"{method}{REFINED_SUFFIX}"


def refined_pairs(methods: Iterable[str]) -> list[tuple[str, str]]:
    """``(method, its refinement)`` for every refinement among ``methods`` whose input method is
    among them too, in the order of the refinements."""
    names = list(dict.fromkeys(methods))
    pairs = []
    for name in names:
        if name == REFINED:
            source = REFINES
        elif name.endswith(REFINED_SUFFIX):
            source = name.removesuffix(REFINED_SUFFIX)
        else:
            continue
        if source in names and refined_name(source) == name:
            pairs.append((source, name))
    return pairs
