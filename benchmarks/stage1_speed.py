"""Stage-1 training and sampling speed on this machine: threads, batch size, model size.

Prints a table of training steps per second (forward + backward + AdamW on random 12-frame
sequences) and DDIM model calls per second for a few configurations, so the CPU recipe's
choices (threads, batch, patch) can be checked on any machine. The cases run with torch's
thread count (``OMP_NUM_THREADS`` when set, else torch's default for the machine's cores) or
``--threads``, plus one case on a single thread when that count is above 1. Run:

    .venv/bin/python benchmarks/stage1_speed.py --seconds 15
"""

from __future__ import annotations

import sys
import time

import torch
from bench_common import Parser, positive_float, positive_int, run_script

from tssc_py.errors import TsscError
from tssc_py.stage1.interpolator import Stage1, Stage1Config
from tssc_py.stage1.model import DiTConfig

RECIPE = {"patch_size": 8, "hidden": 128, "depth": 4, "heads": 4}
PATCH_LCM = 8
"""Frame sizes must be a multiple of every case's patch size (8 and 4)."""


def _rate(step, seconds: float) -> float:
    step()  # warm-up
    done, start = 0, time.perf_counter()
    # At least one timed call: a --seconds shorter than one call would otherwise give 0.
    while done < 1 or time.perf_counter() - start < seconds:
        step()
        done += 1
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = Parser(__doc__)
    parser.add_argument(
        "--seconds", type=positive_float, default=15.0, help="Time per measurement."
    )
    parser.add_argument(
        "--size", type=positive_int, default=64, help="Frame size (a multiple of 8: the patches)."
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="torch threads of the cases (default: torch's count here, "
        f"{torch.get_num_threads()}).",
    )
    args = parser.parse_args(argv)
    if args.size % PATCH_LCM:
        raise TsscError(f"--size {args.size} is not a multiple of {PATCH_LCM} (the patch sizes)")
    available = torch.get_num_threads()
    threads = available if args.threads is None else args.threads
    cases = [("recipe (patch 8, width 128, 4 blocks)", RECIPE, 8, threads)]
    if threads > 1:
        cases.append(("recipe, 1 thread", RECIPE, 8, 1))
    cases += [
        ("recipe, batch 16", RECIPE, 16, threads),
        ("patch 4 (4x the tokens)", {**RECIPE, "patch_size": 4}, 8, threads),
    ]
    print(
        f"torch {torch.__version__}; torch's thread count here {available}, cases run with "
        f"{threads}" + (" and 1" if threads > 1 else "")
    )
    print("| case | batch | threads | train steps/s | sequences/s | DDIM calls/s (batch) |")
    print("|---|---:|---:|---:|---:|---:|", flush=True)
    for name, model, batch, count in cases:
        train, sample = measure(model, batch, count, args.size, args.seconds)
        rate = train * batch
        print(f"| {name} | {batch} | {count} | {train:.2f} | {rate:.1f} | {sample:.2f} |")


def measure(
    model: dict[str, int], batch: int, threads: int, size: int, seconds: float
) -> tuple[float, float]:
    """Training steps per second and one-step DDIM calls per second of one configuration."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    stage1 = Stage1(Stage1Config(model=DiTConfig(priors=1, **model), size=(size, size)))
    with torch.no_grad():
        stage1.model.final_layer.linear.weight.normal_(std=0.02)
    opt = torch.optim.AdamW(stage1.model.parameters(), lr=1e-4)
    x = torch.rand(batch, 12, size, size)
    known = torch.zeros(batch, 12, dtype=torch.bool)
    known[:, [0, -1]] = True

    def train_step() -> None:
        loss = stage1.loss(x, known)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def sample_step() -> None:
        stage1.sample(x, known, steps=1)

    return _rate(train_step, seconds), _rate(sample_step, seconds / 2)


if __name__ == "__main__":
    sys.exit(run_script(main))
