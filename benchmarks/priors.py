"""Stage 1's priors alone on the stage-1 recipe's held-out subjects: quality and cost.

What each prior (``tssc_py.stage1.interpolator.ESTIMATES``: the estimate a residual stage-1
model starts from and corrects) and the ``demons`` method (SimpleITK) make of the unknown
frames, before any network: the share of the recipe's result that registration alone gives,
and what computing the prior costs per subject. Run after ``make stage1-cpu`` (it reads the
prepared held-out subjects in ``RUN/test_*/prepared``):

    .venv/bin/python benchmarks/priors.py --stage1-run stage1_cpu

For every held-out cohort and estimate it prints PSNR (dB, data range 1) over the unknown
frames of the non-empty slices in the prepared space (intensities in [0, 1]; not the restored
scans the pipeline's metrics score, so the levels differ from the recipe's table but the
order of the estimates is what matters), the mean over subjects and the difference to the
``demons`` method (mean and the worst subject), and the median seconds per subject (all of a
subject's slices in one batch, ``--device``).
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from bench_common import Parser, add_device_option, run_script
from recipes import MOVING_TESTS, add_stage1_run_option, show

from tssc_py.device import resolve_device
from tssc_py.errors import TsscError
from tssc_py.methods import get_method
from tssc_py.metrics import psnr
from tssc_py.prepare import load_record, record_path
from tssc_py.sequences import load_series, prepared_images
from tssc_py.stage1.interpolator import ESTIMATES

METHOD = "demons method"
"""The row of the ``demons`` method, the reference of the differences."""


def score_cohort(folder: Path, device: torch.device) -> list[dict[str, object]]:
    """One row per estimate: PSNR per subject and seconds per subject."""
    method = get_method("demons")
    scores: dict[str, list[float]] = {name: [] for name in (*ESTIMATES, METHOD)}
    seconds: dict[str, list[float]] = {name: [] for name in scores}
    for image in prepared_images([folder]):
        series = load_series(image)
        known = [int(k) for k in load_record(record_path(image)).known_frames]
        stacks = series.stacks
        hidden = [t for t in range(stacks.shape[1]) if t not in known]
        x = torch.from_numpy(stacks).to(device)
        mask = torch.zeros(x.shape[:2], dtype=torch.bool, device=device)
        mask[:, known] = True
        for name, estimate in ESTIMATES.items():
            start = time.perf_counter()
            with torch.inference_mode():
                out = estimate(x, mask).cpu().numpy()
            seconds[name].append(time.perf_counter() - start)
            scores[name].append(psnr(out[:, hidden], stacks[:, hidden]))
        start = time.perf_counter()
        out = method.fill(stacks, known)
        seconds[METHOD].append(time.perf_counter() - start)
        scores[METHOD].append(psnr(out[:, hidden], stacks[:, hidden]))
    if not scores[METHOD]:
        raise TsscError("no prepared subjects", folder)
    reference = np.array(scores[METHOD])
    return [
        {
            "estimate": name,
            "subjects": len(values),
            "psnr_dB": float(np.mean(values)),
            "vs_demons_method_dB": float(np.mean(np.array(values) - reference)),
            "worst_vs_demons_method_dB": float(np.min(np.array(values) - reference)),
            "seconds_per_subject": statistics.median(seconds[name]),
        }
        for name, values in scores.items()
    ]


def main(argv: list[str] | None = None) -> None:
    parser = Parser(__doc__)
    add_stage1_run_option(parser, "whose held-out subjects are scored")
    add_device_option(parser)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    folders = [args.stage1_run / f"test_{name}" / "prepared" for name in MOVING_TESTS]
    for folder in folders:
        if not folder.is_dir():
            raise TsscError("no such folder: run benchmarks/stage1.py --out first", folder)
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} CPU threads")
    rows = []
    for name, folder in zip(MOVING_TESTS, folders, strict=True):
        rows += [{"cohort": name, **row} for row in score_cohort(folder, device)]
    print(show(pd.DataFrame(rows)))


if __name__ == "__main__":
    sys.exit(run_script(main))
