"""Stage-1 quality recipe: train on synthetic knees and hearts, some turning, score held-out ones.

One command (``make stage1-cpu``, about an hour and a quarter on 2 CPU cores; ``make
stage1-gpu`` is the longer version for one GPU):

1. synthesises a training cohort, 64x64x16 voxels, 12 frames: 8 ``knee`` and 8 ``cardiac``
   subjects as the scenes draw them and 8 of each turning (``recipes.TURNING``: a 20-40 degree
   in-plane rotation sweep, breathing, texture, another contrast), and held-out cohorts of
   each (another seed) plus hearts with a motion no training subject has
   (``cardiac_shifting``: translation and breathing without rotation). The hearts are there
   because a model only learns the motion it sees (trained on knees alone, it added knee-like
   corrections to hearts); the turning subjects because large motion is what the method is for;
2. prepares the training subjects (evaluate mode, ``--size 64 --depth 16``);
3. trains stage 1 over the ``--prior`` (default ``rigid_demons``; resumable: run again with
   ``--resume``, which also scores again and replaces ``OUT/results.csv``; ``--overwrite``
   starts afresh);
4. runs ``linear``, ``demons`` and ``diffusion`` (the defaults: one DDIM step, mean of 8
   flipped copies) on every held-out cohort through ``tssc-run``'s library function, then
   ``diffusion`` without the flipped copies, and prints PSNR / SSIM (3D) per cohort and method
   with the differences to ``linear`` and ``demons`` (mean over subjects, and the worst
   subject).

Every figure in ``benchmarks/RESULTS.md`` for stage 1 since 2026-12-07 comes from this script;
the table is also written to ``OUT/results.csv`` (atomically; PSNR in dB).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
from bench_common import Parser, non_negative_float, non_negative_int, positive_int, run_script
from recipes import (
    FRAMES,
    MOVING_TESTS,
    PREPARE,
    RESULTS,
    add_run_options,
    data_folders,
    gain_rows,
    make_data,
    moving_cohorts,
    note_rescoring,
    open_run,
    show,
    training_mode,
    write_results,
)

from tssc_py.errors import TsscError
from tssc_py.pipeline import run_cohort
from tssc_py.stage1.interpolator import PRIOR_CHOICES
from tssc_py.stage1.train import TrainConfig, train

# The CPU recipe: a 1.8 M-parameter DiT (patch 8: 64 tokens per frame), batch 8, over the
# rigid_demons prior; the loss is the default's (diffusion loss + 0.3 * (1 - SSIM)). 4000
# steps: the prior's registration makes a step about 1.4 times as long as over the linear blend.
RECIPE = TrainConfig(
    preset="DiT_tiny",
    patch_size=8,
    hidden=128,
    depth=4,
    heads=4,
    frames=FRAMES,
    steps=4000,
    batch_size=8,
    lr=5e-4,
    warmup=200,
    endpoint_fraction=0.75,
    prior="rigid_demons",
    val_subjects=2,
    val_sequences=16,
    val_every=1000,
    checkpoint_every=500,
)
# (suffix, methods, DDIM steps, samples averaged, flip copies): the defaults (one step, 8 flip
# copies), then without flip copies.
VARIANTS = (
    ("", ["linear", "demons", "diffusion"], 1, 1, 8),
    ("_1flip", ["diffusion"], 1, 1, 1),
)
OUTPUTS = (
    *data_folders(moving_cohorts(0, 0, 0, 0)),
    "stage1",
    *(f"test_{name}{v[0]}" for name in MOVING_TESTS for v in VARIANTS),
    RESULTS,
)
"""Everything the recipe writes in its folder."""


def main(argv: list[str] | None = None) -> None:
    parser = Parser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("stage1_cpu"), help="Work folder.")
    parser.add_argument(
        "--train-knee", type=non_negative_int, default=8, help="Knee training subjects."
    )
    parser.add_argument(
        "--train-cardiac", type=non_negative_int, default=8, help="Cardiac training subjects."
    )
    parser.add_argument(
        "--train-turning",
        type=non_negative_int,
        default=8,
        help="Turning training subjects of each kind (recipes.TURNING).",
    )
    parser.add_argument(
        "--test-subjects",
        type=positive_int,
        default=6,
        help="Held-out subjects per cohort (another seed), scored.",
    )
    parser.add_argument(
        "--prior", choices=PRIOR_CHOICES, default=RECIPE.prior, help="Stage 1's prior."
    )
    parser.add_argument("--steps", type=positive_int, default=RECIPE.steps, help="Training steps.")
    parser.add_argument(
        "--batch-size", type=positive_int, default=RECIPE.batch_size, help="Sequences per step."
    )
    parser.add_argument(
        "--w-ssim",
        type=non_negative_float,
        default=RECIPE.w_ssim,
        help="SSIM term of the training loss.",
    )
    add_run_options(parser, "synthetic cohorts, training run (stage1/), scores (test_* folders)")
    args = parser.parse_args(argv)
    out: Path = args.out
    training = args.train_knee + args.train_cardiac + 2 * args.train_turning
    if training <= RECIPE.val_subjects:
        raise TsscError(
            f"{training} training subject(s) leave none for "
            f"training after the {RECIPE.val_subjects} held out for validation"
        )
    open_run(out, OUTPUTS, args.resume, args.overwrite)
    started = time.monotonic()

    cohorts = moving_cohorts(
        args.train_knee, args.train_cardiac, args.train_turning, args.test_subjects
    )
    make_data(out, cohorts)

    trained = time.monotonic()
    chosen = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "w_ssim": args.w_ssim,
        "prior": args.prior,
    }
    recipe = TrainConfig(**{**RECIPE.__dict__, **chosen})
    mode = training_mode(out / "stage1", args.resume)
    checkpoint = train([out / "prepared"], out / "stage1", recipe, **mode)
    print(f"trained in {time.monotonic() - trained:.0f} s", flush=True)

    note_rescoring(out, args.resume)
    rows = []
    for name in MOVING_TESTS:
        per_subject = {}
        for suffix, methods, steps, samples, flips in VARIANTS:
            run = out / f"test_{name}{suffix}"
            # The folder is new, or this is a --resume, whose scores of the final model replace
            # the earlier ones (open_run refused anything else).
            run_cohort(
                str(out / name / "samplesheet.csv"),
                run,
                methods,
                PREPARE,
                overwrite=True,
                show_progress=False,
                method_options={
                    "checkpoint": checkpoint,
                    "steps": steps,
                    "samples": samples,
                    "flips": flips,
                },
            )
            cohort = pd.read_csv(run / "report" / "cohort.csv")
            for method, table in cohort.groupby("method"):
                per_subject[f"{method}{suffix.replace('_', ' ')}"] = table.set_index("subject")
        rows += gain_rows(name, per_subject)
    table = pd.DataFrame(rows)
    written = write_results(table, out, replace=args.resume)
    print(show(table))
    print(f"table written to {written}")
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(run_script(main))
