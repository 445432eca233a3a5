"""Stage-1 speed and memory per preset: whole-subject DDIM sampling, model FLOPs, training steps.

For each preset, prints one table row: the time to fill a whole subject (every slice's
unknown frames, through the ``diffusion`` method exactly as ``tssc-interpolate`` runs it: its
batching, bf16 autocast on CUDA), slice stacks per second, peak memory, model FLOPs per
DDIM step (one model call over a batch, counted by ``torch.utils.flop_counter``), achieved
TFLOP/s, and training steps per second (masked loss, backward, AdamW). Each preset (and its
compiled variant) runs in its own fresh process (this script re-invoked with ``--case``), so
one row's memory cannot include another's: the peak CUDA allocation during the timed fills on
a GPU; on a CPU the peak resident memory of that process up to the end of the timed fills,
interpreter and the torch import included (``VmHWM``). On a GPU it also gives
the fraction of the card's bf16 peak that sampling reaches, over the whole fill and over the
time spent in the matrix-product and attention kernels alone (the attention-and-MLP work,
read from the PyTorch profiler), against both the card's specified dense bf16 peak and a
measured 8192^3 bf16 matrix product. Untrained weights (the output layer given small random
values): speed does not depend on what the network learnt. The model's prior (``--prior``,
by default ``tssc-train-stage1``'s) is computed in every fill and training step, as in use;
the FLOP count is the network's alone. Run:

    .venv/bin/python benchmarks/stage1_sampling.py --device cpu --preset DiT_tiny

Targets (issue 3): on one H100 (bf16), ``DiT_S`` fills a 256x256, 32-slice, 12-frame subject
with 50 DDIM steps in under 10 s, at 35 % or more of bf16 peak in the attention-and-MLP work;
on a CPU, ``DiT_tiny`` fills a 64x64, 16-slice, 12-frame subject with 25 steps in under 20 s.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import warnings
from itertools import product
from pathlib import Path

import numpy as np
import torch
from bench_common import (
    Parser,
    add_device_option,
    int_at_least,
    peak_rss_mib,
    positive_float,
    positive_int,
    run_script,
    run_worker,
)
from stage1_attention import matmul_attention, sdpa_flops, subject_defaults, sync
from torch.utils.flop_counter import FlopCounterMode

from tssc_py.checkpoint import save_checkpoint
from tssc_py.device import autocast, resolve_device
from tssc_py.errors import TsscError
from tssc_py.methods import get_method
from tssc_py.stage1 import model as dit
from tssc_py.stage1.interpolator import (
    PRIOR_CHOICES,
    Stage1,
    Stage1Config,
    check_flips,
    prior_channels,
)
from tssc_py.stage1.model import DiTConfig, preset_config
from tssc_py.stage1.train import TrainConfig

# Dense bf16 tensor-core peaks from the vendor's data sheets (TFLOP/s), by device-name pattern.
SPEC_PEAK = {r"H100.*PCIe": 756.0, r"H100|H200|GH200": 989.4, r"A100": 312.0, r"L40S": 362.0}
# The profiler names of the operators whose kernels do the matrix-product and attention work;
# the softmax too, which the fused attention kernels include and --temporal-attention matmul
# runs apart (its dtype casts and layout copies are not counted: compare whole fills too).
MATMUL_OPS = re.compile(
    r"^aten::(mm|addmm|bmm|baddbmm|_softmax|_scaled_dot_product|_flash_attention|"
    r"_efficient_attention|_cudnn_attention|convolution|cudnn_convolution)"
)


def flop_counter() -> FlopCounterMode:
    """A FLOP counter that also counts attention on the CPU.

    On the CPU, ``scaled_dot_product_attention`` runs the operator
    ``aten._scaled_dot_product_flash_attention_for_cpu``, for which torch (2.13) has no formula:
    a plain ``FlopCounterMode`` counts it as 0, a third of ``DiT_tiny``'s work at 64x64.
    ``custom_mapping`` (the documented way to add formulas to one counter, with no global
    registration that a later torch could collide with) gives it the formula of the CUDA
    attention operators.
    """
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    mapping = {} if cpu_attention is None else {cpu_attention: sdpa_flops}
    return FlopCounterMode(display=False, custom_mapping=mapping)


def spec_peak(name: str) -> float | None:
    """The data-sheet dense bf16 peak of a GPU, or None when this table does not know it."""
    return next((peak for pattern, peak in SPEC_PEAK.items() if re.search(pattern, name)), None)


def matmul_peak(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """Measured bf16 TFLOP/s of an ``n``-cubed matrix product (random data)."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def untrained_checkpoint(folder: Path, preset: str, size: int, frames: int, prior: str) -> Path:
    """A stage-1 checkpoint of a fresh ``preset`` network over ``prior`` for ``size`` x
    ``size`` frames."""
    priors = prior_channels(prior)
    config = Stage1Config(
        model=DiTConfig.from_dict({**preset_config(preset).to_dict(), "priors": priors}),
        frames=frames,
        size=(size, size),
        prior=prior,
    )
    stage1 = Stage1(config)
    with torch.no_grad():
        stage1.model.final_layer.linear.weight.normal_(std=0.02)
    state = stage1.model.state_dict()
    return save_checkpoint(
        folder / preset, {"kind": "stage1", "stage1": config.to_dict()}, {"ema": state}
    )


def route_temporal_attention(how: str, frames: int) -> None:
    """Run the attention over ``frames`` positions ``how`` instead, in this process only.

    ``sdpa``: torch's own choice of kernel, as the model ran it before it chose one for short
    sequences; ``matmul``: two matrix products around a float32 softmax, the alternative
    ``stage1_attention.py`` times alone (each row of this script runs in its own process).
    """
    if how == "sdpa":
        dit.SHORT_ATTENTION = 0
    elif how == "matmul":
        fused = torch.nn.functional.scaled_dot_product_attention

        def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *args, **kwargs):
            if q.shape[-2] == frames and not args and not kwargs:
                return matmul_attention(q, k, v)
            return fused(q, k, v, *args, **kwargs)

        torch.nn.functional.scaled_dot_product_attention = attend


def measure(
    args: argparse.Namespace, preset: str, device: torch.device, work: Path, compile: bool
) -> dict:
    """One preset's row of the table."""
    torch.manual_seed(0)
    route_temporal_attention(args.temporal_attention, args.frames)
    checkpoint = untrained_checkpoint(work, preset, args.size, args.frames, args.prior)
    method = get_method(
        "diffusion",
        checkpoint=str(checkpoint),
        steps=args.steps,
        device=device.type,
        batch_size=args.slices if args.batch_size is None else args.batch_size,
        compile=compile,
        flips=args.flips,
    )
    stage1 = method.stage1
    stack = np.random.default_rng(0).random(
        (args.slices, args.frames, args.size, args.size), dtype=np.float32
    )
    known = known_frames(args.frames, args.every)

    def fill() -> float:
        sync(device)
        start = time.perf_counter()
        method.fill(stack, known)
        sync(device)
        return time.perf_counter() - start

    first_s = fill()  # warm-up: compilation, kernel selection, allocator, caches
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = [fill() for _ in range(args.repeats)]
    subject_s = statistics.median(times)
    if device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = peak_rss_mib()  # this process ran only this preset (see main)

    # FLOPs of one fill: one model call per DDIM step, flip copy and batch, linear in the batch.
    batch = min(method.batch_size, args.slices)
    x = torch.from_numpy(stack[:batch]).to(device)
    mask = torch.zeros(batch, args.frames, dtype=torch.bool, device=device)
    mask[:, known] = True
    t = torch.full((batch,), stage1.diffusion.steps - 1, device=device)
    counter = flop_counter()
    prior = stage1.prior(x, mask)  # the registration's work is not counted: the model's only
    with torch.no_grad(), autocast(device), counter:
        stage1.model(x, t, mask, prior)  # eager: FLOPs are the same
    flops = counter.get_total_flops() / batch * args.slices * args.steps * args.flips
    row = {
        "preset": preset
        + ("" if args.temporal_attention == "model" else f", temporal {args.temporal_attention}")
        + (", compiled" if method.network is not stage1.model else ""),
        "first_s": first_s,
        "subject_s": subject_s,
        "stacks_per_s": args.slices / subject_s,
        "peak_mib": peak_mib,
        "gflop_per_step": counter.get_total_flops() / 1e9,
        "tflops": flops / subject_s / 1e12,
    }
    if device.type == "cuda":
        row["matmul_s"] = matmul_kernel_seconds(method, stack, known)
    # Training is never compiled: the compiled row would measure the eager rate again.
    row["train_steps_per_s"] = None if compile else train_rate(stage1, args, device)
    return row


def matmul_kernel_seconds(method, stack: np.ndarray, known: list[int]) -> float:
    """GPU time of one fill spent in the matrix-product and attention kernels."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        method.fill(stack, known)
        torch.cuda.synchronize()
    with warnings.catch_warnings():  # "Profiler clears events at the end of each cycle"
        warnings.simplefilter("ignore", UserWarning)
        events = prof.key_averages()
    total_us = sum(e.self_device_time_total for e in events if MATMUL_OPS.match(e.key))
    return total_us / 1e6


def train_rate(stage1: Stage1, args: argparse.Namespace, device: torch.device) -> float:
    """Training steps per second on random sequences (batch ``args.train_batch``)."""
    model = stage1.model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.rand(args.train_batch, args.frames, args.size, args.size, device=device)
    mask = torch.zeros(args.train_batch, args.frames, dtype=torch.bool, device=device)
    mask[:, [0, -1]] = True

    def step() -> None:
        with autocast(device):
            loss = stage1.loss(x, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    sync(device)
    done, start = 0, time.perf_counter()
    while done < 3 or time.perf_counter() - start < args.seconds:
        step()
        done += 1
    sync(device)
    rate = done / (time.perf_counter() - start)
    model.eval()
    return rate


def check_options(args: argparse.Namespace, presets: list[str]) -> None:
    """Refuse, before any work, options the measurement cannot run with.

    Raises:
        TsscError: An unknown preset, a frame size its patches do not tile, flips other than
            1, 2, 4, 8, or every frame known (nothing to fill).
    """
    check_flips(args.flips)
    for preset in presets:
        patch = preset_config(preset).patch_size
        if args.size % patch:
            raise TsscError(f"--size {args.size} is not divisible by {preset}'s patch size {patch}")
    if len(known_frames(args.frames, args.every)) == args.frames:
        raise TsscError(
            f"every one of the {args.frames} frames is known with --every {args.every}: "
            "nothing to fill"
        )


def known_frames(frames: int, every: int) -> list[int]:
    """Every ``every``-th frame and the last one."""
    known = list(range(0, frames, every))
    if known[-1] != frames - 1:
        known.append(frames - 1)
    return known


def case_command(args: argparse.Namespace, device: torch.device, case: str) -> list[str]:
    """The command that measures one ``case`` (``PRESET:compiled``) in a fresh process."""
    command = [sys.executable, str(Path(__file__).resolve()), "--case", case]
    command += ["--device", device.type]
    options = ("size", "slices", "frames", "every", "steps", "batch_size", "flips", "prior")
    for name in (*options, "temporal_attention"):
        value = getattr(args, name)
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    command += ["--train-batch", str(args.train_batch), "--repeats", str(args.repeats)]
    return [*command, "--seconds", repr(args.seconds)]


def main(argv: list[str] | None = None) -> None:
    parser = Parser(__doc__)
    add_device_option(parser)
    parser.add_argument(
        "--preset",
        action="append",
        help="DiT preset (repeatable); default DiT_S on a GPU, DiT_tiny on a CPU.",
    )
    parser.add_argument(
        "--size",
        type=positive_int,
        help="Frame size, divisible by the preset's patch (default 256 on a GPU, 64 on a CPU).",
    )
    parser.add_argument("--slices", type=positive_int, help="Slices per subject (default 32 / 16).")
    parser.add_argument("--frames", type=int_at_least(2), default=12, help="Frames per series.")
    parser.add_argument(
        "--every",
        type=positive_int,
        default=11,
        help="Every Nth frame is known (and the last).",
    )
    parser.add_argument("--steps", type=positive_int, help="DDIM steps (default 50 / 25).")
    parser.add_argument(
        "--batch-size", type=positive_int, help="Slices sampled together (default all)."
    )
    parser.add_argument(
        "--flips",
        type=positive_int,
        default=1,
        help="Flipped copies averaged: 1, 2, 4 or 8 (the method's default is 8).",
    )
    parser.add_argument(
        "--prior",
        choices=PRIOR_CHOICES,
        default=TrainConfig.prior,
        help="The model's prior, computed in every fill and training step (default: "
        "tssc-train-stage1's).",
    )
    parser.add_argument(
        "--temporal-attention",
        choices=("model", "sdpa", "matmul"),
        default="model",
        help="Attention over the frames as the model runs it (model), with torch's own choice "
        "of kernel (sdpa), or as two matrix products around a float32 softmax (matmul: the "
        "alternative stage1_attention.py times alone).",
    )
    parser.add_argument("--train-batch", type=positive_int, default=8, help="Training batch.")
    parser.add_argument("--repeats", type=positive_int, default=3, help="Timed fills (median).")
    parser.add_argument(
        "--seconds", type=positive_float, default=10.0, help="Training time measured."
    )
    parser.add_argument(
        "--compile", action="store_true", help="Also measure with the network compiled (GPU)."
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, JSON out
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    if args.case:
        preset, compiled = args.case.split(":")
        with tempfile.TemporaryDirectory(prefix="tssc-stage1-bench-") as tmp:
            print(json.dumps(measure(args, preset, device, Path(tmp), compiled == "1")))
        return
    default_preset, default_size, default_slices = subject_defaults(gpu)
    args.size = default_size if args.size is None else args.size
    args.slices = default_slices if args.slices is None else args.slices
    args.steps = (50 if gpu else 25) if args.steps is None else args.steps
    presets = args.preset or [default_preset]
    check_options(args, presets)

    name = torch.cuda.get_device_name(device) if gpu else "CPU"
    print(f"torch {torch.__version__}, device {name}, {torch.get_num_threads()} CPU threads")
    print(
        f"subject: {args.slices} slices of {args.size}x{args.size}, {args.frames} frames "
        f"(known: {', '.join(map(str, known_frames(args.frames, args.every)))}), "
        f"{args.steps} DDIM steps, {args.flips} flip copies, prior {args.prior}"
        + (", bf16 autocast" if gpu else ", float32")
    )
    peaks: dict[str, float] = {}
    if gpu:
        peaks["measured"] = matmul_peak(device)
        torch.cuda.empty_cache()  # the rows run in other processes: leave them the memory
        if (spec := spec_peak(name)) is not None:
            peaks["spec"] = spec
        print("bf16 peaks (TFLOP/s): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))
    print(
        "each row measured in its own process; memory: "
        + (
            "peak CUDA allocation during the timed fills"
            if gpu
            else "peak RSS of that process up to the end of the timed fills, interpreter and "
            "torch import included"
        )
    )
    memory = "peak CUDA MiB" if gpu else "peak RSS MiB"
    header = ["preset", "first fill s", "subject s", "stacks/s", memory, "GFLOP/step", "TFLOP/s"]
    header.append("train steps/s")
    for which in peaks:
        header += [f"% {which} peak", f"% {which} peak in matmul+attention"]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1), flush=True)
    for preset, compile in product(presets, [False, True] if args.compile else [False]):
        case = f"{preset}:{int(compile)}"
        output = run_worker(case_command(args, device, case), f"preset {preset}")
        row = json.loads(output.strip().splitlines()[-1])
        cells = [
            row["preset"],
            f"{row['first_s']:.1f}",
            f"{row['subject_s']:.2f}",
            f"{row['stacks_per_s']:.2f}",
            f"{row['peak_mib']:.0f}",
            f"{row['gflop_per_step']:.1f}",
            f"{row['tflops']:.3g}",
            "as above" if row["train_steps_per_s"] is None else f"{row['train_steps_per_s']:.2f}",
        ]
        for peak in peaks.values():
            work = row["tflops"] * row["subject_s"]  # TFLOP of one fill
            cells += [
                f"{100 * row['tflops'] / peak:.0f}",
                f"{100 * work / row['matmul_s'] / peak:.0f}",
            ]
        print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    sys.exit(run_script(main))
