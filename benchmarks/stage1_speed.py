"""Stage-1 training and sampling speed on this machine: threads, batch size, model size.

Prints a table of training steps per second (forward + backward + AdamW on random 12-frame
sequences) and DDIM model calls per second for a few configurations, so the CPU recipe's
choices (threads, batch, patch) can be checked on any machine. Run:

    .venv/bin/python benchmarks/stage1_speed.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import time

import torch

from tssc_py.stage1.interpolator import Stage1, Stage1Config
from tssc_py.stage1.model import DiTConfig

RECIPE = {"patch_size": 8, "hidden": 128, "depth": 4, "heads": 4}


def _rate(step, seconds: float) -> float:
    step()  # warm-up
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="Time per measurement.")
    parser.add_argument("--size", type=int, default=64, help="Frame size.")
    args = parser.parse_args()
    cases = [
        ("recipe (patch 8, width 128, 4 blocks)", RECIPE, 8, 2),
        ("recipe, 1 thread", RECIPE, 8, 1),
        ("recipe, batch 16", RECIPE, 16, 2),
        ("patch 4 (4x the tokens)", {**RECIPE, "patch_size": 4}, 8, 2),
    ]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads available")
    print("| case | batch | threads | train steps/s | sequences/s | DDIM calls/s (batch) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, model, batch, threads in cases:
        train, sample = measure(model, batch, threads, args.size, args.seconds)
        rate = train * batch
        print(f"| {name} | {batch} | {threads} | {train:.2f} | {rate:.1f} | {sample:.2f} |")


def measure(
    model: dict[str, int], batch: int, threads: int, size: int, seconds: float
) -> tuple[float, float]:
    """Training steps per second and one-step DDIM calls per second of one configuration."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    stage1 = Stage1(Stage1Config(model=DiTConfig(prior=True, **model), size=(size, size)))
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
    main()
