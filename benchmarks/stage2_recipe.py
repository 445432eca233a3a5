"""Stage-2 quality recipe: refine the stage-1 recipe's outputs, score full TSSC vs stage 1 alone.

One command (``make stage2-cpu``, well under 45 minutes on 2 CPU cores), run after
``make stage1-cpu`` (it uses that run's folder: the trained stage-1 model, the 32 prepared
training subjects and the held-out cohorts, turning and held-out motion included):

1. makes the stage-1 outputs of the training subjects with the frozen stage-1 model (the
   ``diffusion`` method's defaults: one DDIM step, 8 flip copies), cached in
   ``OUT/stage2/stage1_outputs``;
2. trains stage 2 (the recipe's options below; resumable: run again with ``--resume``, which
   also scores again and replaces ``OUT/results.csv``; ``--overwrite`` starts afresh);
3. runs ``linear`` and ``diffusion`` + stage 2 on the held-out cohorts through ``tssc-run``'s
   library function, which reports stage 1 alone (``diffusion``) next to full TSSC (``tssc``),
   and prints every metric per cohort and method with the difference to stage 1 alone (mean over
   subjects, and the number of subjects where full TSSC is better).

Every figure in ``benchmarks/RESULTS.md`` for the stage-2 recipe comes from this script; the
table is also written to ``OUT/results.csv`` (atomically; PSNR in dB).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd
from bench_common import Parser, non_negative_float, positive_int, run_script
from recipes import (
    MOVING_TESTS,
    PREPARE,
    RESULTS,
    add_run_options,
    add_stage1_run_option,
    note_rescoring,
    open_run,
    show,
    training_mode,
    write_results,
)

from tssc_py.errors import TsscError
from tssc_py.metrics import LOWER_IS_BETTER, METRICS
from tssc_py.pipeline import run_cohort
from tssc_py.refinement import train_refinement
from tssc_py.runs import REFINED, REFINES
from tssc_py.stage2.model import PRESETS
from tssc_py.stage2.train import TrainConfig

# The CPU recipe: tssc-train-stage2's defaults with the tiny network (32x32 crops of all 16
# slices: 8x8x16 = 1024 tokens per scan after the stem, batch 4, 1000 steps).
RECIPE = TrainConfig(preset="tiny")
OUTPUTS = ("stage2", *(f"test_{name}" for name in MOVING_TESTS), RESULTS)
"""Everything the recipe writes in its folder."""


def main(argv: list[str] | None = None) -> None:
    parser = Parser(__doc__)
    add_stage1_run_option(parser, "whose model and subjects stage 2 is trained and scored on")
    parser.add_argument("--out", type=Path, default=Path("stage2_cpu"), help="Work folder.")
    parser.add_argument("--steps", type=positive_int, default=RECIPE.steps, help="Training steps.")
    parser.add_argument("--w-tv", type=non_negative_float, default=RECIPE.w_tv, help="TV weight.")
    parser.add_argument(
        "--w-wavelet", type=non_negative_float, default=RECIPE.w_wavelet, help="Wavelet weight."
    )
    parser.add_argument(
        "--preset", choices=sorted(PRESETS), default=RECIPE.preset, help="Network size preset."
    )
    parser.add_argument(
        "--crop", type=positive_int, default=RECIPE.crop, help="In-plane crop side of training."
    )
    parser.add_argument("--channels", type=positive_int, help="Override of the preset's width.")
    parser.add_argument(
        "--blocks", type=positive_int, help="Override of the preset's number of Mamba blocks."
    )
    parser.add_argument(
        "--context",
        action="store_true",
        help="Give stage 2 the known frames around each refined one (tssc-train-stage2 --context).",
    )
    add_run_options(parser, "training run (stage2/), scores (test_* folders)")
    args = parser.parse_args(argv)
    stage1_run: Path = args.stage1_run
    stage1 = stage1_run / "stage1" / "checkpoint"
    needed = [stage1, stage1_run / "prepared"]
    needed += [stage1_run / name / "samplesheet.csv" for name in MOVING_TESTS]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise TsscError(f"{', '.join(missing)} missing: run `make stage1-cpu` first")
    out: Path = args.out
    open_run(out, OUTPUTS, args.resume, args.overwrite)
    started = time.monotonic()

    chosen = {
        k: getattr(args, k)
        for k in ("steps", "w_tv", "w_wavelet", "preset", "crop", "channels", "blocks", "context")
    }
    recipe = TrainConfig(**{**RECIPE.__dict__, **chosen})
    mode = training_mode(out / "stage2", args.resume)
    prepared = [stage1_run / "prepared"]
    checkpoint = train_refinement(prepared, out / "stage2", recipe, stage1=stage1, **mode)
    print(f"trained in {time.monotonic() - started:.0f} s", flush=True)

    note_rescoring(out, args.resume)
    rows = []
    for name in MOVING_TESTS:
        run = out / f"test_{name}"
        # The folder is new, or this is a --resume, whose scores of the final model replace
        # the earlier ones (open_run refused anything else).
        run_cohort(
            str(stage1_run / name / "samplesheet.csv"),
            run,
            ["linear", REFINES],
            PREPARE,
            overwrite=True,
            show_progress=False,
            method_options={"checkpoint": stage1},
            refine_options={"checkpoint": checkpoint},
        )
        scores = pd.concat(pd.read_csv(p) for p in sorted((run / "metrics").glob("*.metrics.csv")))
        by_method = {m: t.set_index("subject") for m, t in scores.groupby("method")}
        base = by_method[REFINES]
        for method, table in by_method.items():
            row: dict[str, object] = {"cohort": name, "method": method}
            for metric in (m for m in METRICS if m in table):
                gain = table[metric] - base[metric]
                better = gain < 0 if metric in LOWER_IS_BETTER else gain > 0
                row[metric] = table[metric].mean()
                row[f"{metric}_vs_stage1"] = gain.mean()
                row[f"{metric}_better"] = f"{int(better.sum())}/{len(gain)}"
            rows.append(row)
    table = pd.DataFrame(rows)
    written = write_results(table, out, replace=args.resume)
    print(show(table))
    print(f"table written to {written}")
    print(f"stage 1 alone: {REFINES}; full TSSC: {REFINED}")
    print(f"total {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    sys.exit(run_script(main))
