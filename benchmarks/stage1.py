"""Stage-1 quality recipe: train on synthetic knee and cardiac subjects, score held-out ones.

One command (``make stage1-cpu``, under an hour on 2 CPU cores; ``make stage1-gpu`` is the
longer version for one GPU: ``--train-knee 48 --train-cardiac 48 --batch-size 32 --steps 4000``,
5 minutes on an H200):

1. synthesises a training cohort (16 ``knee`` and 16 ``cardiac`` subjects) and held-out
   ``knee`` and ``cardiac`` cohorts (other seeds), 64x64x16 voxels, 12 frames. The cardiac
   subjects are there because a model only learns the motion it sees: trained on knees
   alone (a first calibration), it added knee-like corrections to hearts and fell below
   ``linear`` there;
2. prepares the training subjects (evaluate mode, ``--size 64 --depth 16``);
3. trains stage 1 (the recipe's options below; resumable: run again with ``--resume``, which
   also scores again and replaces ``OUT/results.csv``; ``--overwrite`` starts afresh);
4. runs ``linear`` and ``diffusion`` (the defaults: one DDIM step, mean of 8 flipped copies)
   on the held-out cohorts through ``tssc-run``'s library function, then ``diffusion`` without
   the flipped copies, with the mean of 4 one-step runs of each copy, and with 25 DDIM steps
   (no copies), and prints PSNR / SSIM (3D) per kind and method with the difference to
   ``linear`` (mean over subjects, and the worst subject).

Every figure in ``benchmarks/RESULTS.md`` for stage 1 comes from this script; the table is
also written to ``OUT/results.csv`` (atomically; PSNR in dB).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
from bench_common import Parser, non_negative_float, non_negative_int, positive_int, run_script
from recipes import (
    DATA,
    FRAMES,
    PREPARE,
    RESULTS,
    add_run_options,
    gain_rows,
    make_data,
    note_rescoring,
    open_run,
    show,
    training_mode,
    write_results,
)

from tssc_py.errors import TsscError
from tssc_py.pipeline import run_cohort
from tssc_py.stage1.train import TrainConfig, train

# The CPU recipe: a 1.8 M-parameter DiT (patch 8: 64 tokens per frame), batch 8; the loss is
# the default's (diffusion loss + 0.3 * (1 - SSIM)).
RECIPE = TrainConfig(
    preset="DiT_tiny",
    patch_size=8,
    hidden=128,
    depth=4,
    heads=4,
    frames=FRAMES,
    steps=5000,
    batch_size=8,
    lr=5e-4,
    warmup=200,
    endpoint_fraction=0.75,
    val_subjects=2,
    val_sequences=16,
    val_every=1000,
    val_steps=10,
    checkpoint_every=500,
)
# (suffix, methods, DDIM steps, samples averaged, flip copies): the defaults (one step, 8 flip
# copies), then without flip copies, the mean of 4 samples of each copy, and 25-step sampling
# without flip copies (sharper frames).
VARIANTS = (
    ("", ["linear", "diffusion"], 1, 1, 8),
    ("_1flip", ["diffusion"], 1, 1, 1),
    ("_x4", ["diffusion"], 1, 4, 8),
    ("_25steps", ["diffusion"], 25, 1, 1),
)
KINDS = ("knee", "cardiac")
OUTPUTS = (*DATA, "stage1", *(f"test_{k}{v[0]}" for k in KINDS for v in VARIANTS), RESULTS)
"""Everything the recipe writes in its folder."""


def main(argv: list[str] | None = None) -> None:
    parser = Parser(__doc__)
    parser.add_argument("--out", type=Path, default=Path("stage1_cpu"), help="Work folder.")
    parser.add_argument(
        "--train-knee", type=non_negative_int, default=16, help="Knee training subjects."
    )
    parser.add_argument(
        "--train-cardiac", type=non_negative_int, default=16, help="Cardiac training subjects."
    )
    parser.add_argument(
        "--test-subjects",
        type=positive_int,
        default=6,
        help="Held-out subjects per kind (knee and cardiac, another seed), scored.",
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
    if args.train_knee + args.train_cardiac <= RECIPE.val_subjects:
        raise TsscError(
            f"{args.train_knee + args.train_cardiac} training subject(s) leave none for "
            f"training after the {RECIPE.val_subjects} held out for validation"
        )
    open_run(out, OUTPUTS, args.resume, args.overwrite)
    started = time.monotonic()

    make_data(out, args.train_knee, args.train_cardiac, args.test_subjects)

    trained = time.monotonic()
    chosen = {"steps": args.steps, "batch_size": args.batch_size, "w_ssim": args.w_ssim}
    recipe = TrainConfig(**{**RECIPE.__dict__, **chosen})
    mode = training_mode(out / "stage1", args.resume)
    checkpoint = train([out / "prepared"], out / "stage1", recipe, **mode)
    print(f"trained in {time.monotonic() - trained:.0f} s", flush=True)

    note_rescoring(out, args.resume)
    rows = []
    for kind in KINDS:
        per_subject = {}
        for suffix, methods, steps, samples, flips in VARIANTS:
            run = out / f"test_{kind}{suffix}"
            # The folder is new, or this is a --resume, whose scores of the final model replace
            # the earlier ones (open_run refused anything else).
            run_cohort(
                str(out / kind / "samplesheet.csv"),
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
        rows += gain_rows(kind, per_subject)
    table = pd.DataFrame(rows)
    written = write_results(table, out, replace=args.resume)
    print(show(table))
    print(f"table written to {written}")
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(run_script(main))
