"""Registration baselines on the CPU: train each learned baseline, score all against linear.

One command (``make baselines-cpu``, 12 minutes on one thread of a shared 2-core CPU):

1. synthesises a training cohort (8 ``knee`` and 8 ``cardiac`` subjects, seed 1) and held-out
   ``knee`` and ``cardiac`` cohorts (seed 2), 64x64x16 voxels, 12 frames, as
   ``benchmarks/stage1.py`` does;
2. prepares the training subjects (evaluate mode, ``--size 64 --depth 16``);
3. trains ``voxelmorph``, ``transmorph`` and ``uvinet`` unsupervised, each for the steps of
   ``STEPS`` (chosen to take at most about 8 minutes each on one thread; ``--steps`` sets one
   count for all three; resumable: run again with ``--resume``, which also scores again and
   replaces ``OUT/results.csv``; ``--overwrite`` starts afresh);
4. runs ``linear``, ``demons`` and the three learned baselines on the held-out cohorts through
   ``tssc-run``'s library function and prints PSNR / SSIM (3D) per kind and method with the
   difference to ``linear`` (mean over subjects, and the worst subject).

Every figure in ``benchmarks/RESULTS.md`` for the baselines comes from this script; the table
is also written to ``OUT/results.csv`` (atomically; PSNR in dB).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
import torch
from bench_common import Parser, int_at_least, positive_int, run_script
from recipes import (
    FRAMES,
    PREPARE,
    RESULTS,
    add_run_options,
    data_folders,
    gain_rows,
    make_data,
    note_rescoring,
    open_run,
    plain_cohorts,
    show,
    training_mode,
    write_results,
)

from tssc_py.baselines import MODELS
from tssc_py.baselines.train import TrainConfig, train
from tssc_py.pipeline import run_cohort

STEPS = {"voxelmorph": 1000, "transmorph": 300, "uvinet": 250}
"""Training steps per model (batch 8, the CLI defaults otherwise): at most about 8 minutes each
on one thread of the 2-core machine while another training job runs (0.2 to 0.5, 1.0 to 2 and
1.1 to 2.4 s per step were measured, depending on that job)."""
VAL_SUBJECTS = 2
"""Training subjects held out for validation (the last 2 in name order)."""
KINDS = ("knee", "cardiac")
OUTPUTS = (
    *data_folders(plain_cohorts(0, 0, 0)),
    *MODELS,
    *(f"test_{kind}" for kind in KINDS),
    RESULTS,
)
"""Everything the recipe writes in its folder."""


def main(argv: list[str] | None = None) -> None:
    parser = Parser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("baselines_cpu"), help="Work folder.")
    parser.add_argument(
        "--train-subjects",
        type=int_at_least(2),
        default=8,
        help=f"Per kind, for training ({VAL_SUBJECTS} of them held out for validation).",
    )
    parser.add_argument(
        "--test-subjects", type=positive_int, default=6, help="Per kind, held out and scored."
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        help="Training steps of every model (default: "
        + ", ".join(f"{model} {steps}" for model, steps in STEPS.items())
        + ").",
    )
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads.")
    add_run_options(
        parser, "synthetic cohorts, training runs (one folder per model), scores (test_* folders)"
    )
    args = parser.parse_args(argv)
    out: Path = args.out
    open_run(out, OUTPUTS, args.resume, args.overwrite)
    torch.set_num_threads(args.threads)
    started = time.monotonic()

    make_data(out, plain_cohorts(args.train_subjects, args.train_subjects, args.test_subjects))

    checkpoints = []
    for model in MODELS:
        begun = time.monotonic()
        recipe = TrainConfig(
            model=model,
            steps=args.steps or STEPS[model],
            frames=FRAMES,
            val_subjects=VAL_SUBJECTS,
            val_every=0,
        )
        mode = training_mode(out / model, args.resume)
        checkpoints.append(train([out / "prepared"], out / model, recipe, **mode))
        print(f"{model}: trained in {time.monotonic() - begun:.0f} s", flush=True)

    note_rescoring(out, args.resume)
    rows = []
    for kind in KINDS:
        run = out / f"test_{kind}"
        begun = time.monotonic()
        # The folder is new, or this is a --resume, whose scores of the final models replace
        # the earlier ones (open_run refused anything else).
        run_cohort(
            str(out / kind / "samplesheet.csv"),
            run,
            ["linear", "demons", *MODELS],
            PREPARE,
            overwrite=True,
            show_progress=False,
            method_options={"checkpoint": checkpoints},
        )
        print(f"{kind}: all methods run and scored in {time.monotonic() - begun:.0f} s")
        cohort = pd.read_csv(run / "report" / "cohort.csv")
        per_subject = {m: t.set_index("subject") for m, t in cohort.groupby("method")}
        rows += gain_rows(kind, per_subject)
    table = pd.DataFrame(rows)
    written = write_results(table, out, replace=args.resume)
    print(show(table))
    print(f"table written to {written}")
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(run_script(main))
