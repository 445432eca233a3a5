"""Registration baselines on the CPU: train each learned baseline, score all against linear.

One command (``make baselines-cpu``, 12 minutes on one thread of a shared 2-core CPU):

1. synthesises a training cohort (8 ``knee`` and 8 ``cardiac`` subjects, seed 1) and held-out
   ``knee`` and ``cardiac`` cohorts (seed 2), 64x64x16 voxels, 12 frames, as
   ``benchmarks/stage1.py`` does;
2. prepares the training subjects (evaluate mode, ``--size 64 --depth 16``);
3. trains ``voxelmorph``, ``transmorph`` and ``uvinet`` unsupervised, each for the steps of
   ``STEPS`` (chosen to take at most about 8 minutes each on one thread; resumable: run again
   with ``--resume``);
4. runs ``linear``, ``demons`` and the three learned baselines on the held-out cohorts through
   ``tssc-run``'s library function and prints PSNR / SSIM (3D) per kind and method with the
   difference to ``linear`` (mean over subjects, and the worst subject).

Every figure in ``benchmarks/RESULTS.md`` for the baselines comes from this script; the table
is also written to ``OUT/results.csv``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch
from recipes import FRAMES, PREPARE, gain_rows, make_data

from tssc_py.baselines import MODELS
from tssc_py.baselines.train import TrainConfig, train
from tssc_py.pipeline import run_cohort

STEPS = {"voxelmorph": 1000, "transmorph": 300, "uvinet": 250}
"""Training steps per model (batch 8, the CLI defaults otherwise): at most about 8 minutes each
on one thread of the 2-core machine while another training job runs (0.2 to 0.5, 1.0 to 2 and
1.1 to 2.4 s per step were measured, depending on that job)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("baselines_cpu"), help="Work folder.")
    parser.add_argument("--train-subjects", type=int, default=8, help="Per kind, for training.")
    parser.add_argument("--test-subjects", type=int, default=6, help="Per kind, held out.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads.")
    parser.add_argument("--resume", action="store_true", help="Continue interrupted runs.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out: Path = args.out
    started = time.monotonic()

    make_data(out, args.train_subjects, args.train_subjects, args.test_subjects)

    checkpoints = []
    for model in MODELS:
        begun = time.monotonic()
        recipe = TrainConfig(
            model=model, steps=STEPS[model], frames=FRAMES, val_subjects=2, val_every=0
        )
        checkpoints.append(train([out / "prepared"], out / model, recipe, resume=args.resume))
        print(f"{model}: trained in {time.monotonic() - begun:.0f} s", flush=True)

    rows = []
    for kind in ("knee", "cardiac"):
        run = out / f"test_{kind}"
        begun = time.monotonic()
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
    table.to_csv(out / "results.csv", index=False)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
