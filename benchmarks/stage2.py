"""Stage-2 refinement speed and peak memory per state-space backend, preset and volume size.

Prints a table of volumes refined per second (inference: one whole volume per call, untrained
weights, which cost the same as trained ones) and of training steps per second (batches of 4
crops: forward, MSE + wavelet loss, backward, Adam), with the peak memory of each case: on a
GPU the peak CUDA allocation, on a CPU the peak resident memory of a fresh process that ran
only that case (``VmHWM``: interpreter and torch import included; each case runs in its own
subprocess, so one case's peak cannot hide another's). On a GPU with ``mamba_ssm`` both
backends run on the same weights, and the table gives the pure-PyTorch / mamba-ssm time ratio
and how far the fused backend's correction (output minus input) is from the pure-PyTorch one
(relative L2; the zero-initialised layers get small random values first, as an untrained
network is the identity whatever its backend), then a second table compares the two selective
scans alone, in float32, on random inputs of several lengths (values and gradients). Run:

    .venv/bin/python benchmarks/stage2.py --seconds 10 --device auto

On a CPU the ``refine base 256x256x32`` case (about a minute per call on 2 cores) runs only
with ``--seconds 30`` or more; the output says when it was left out.

Targets (issue 4): ``tiny`` refines 64x64x16 in under 2 s on CPU; ``base`` refines
256x256x32 in under 0.5 s on one H100 with mamba-ssm.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from bench_common import (
    Parser,
    add_device_option,
    peak_rss_mib,
    positive_float,
    run_script,
    run_worker,
)

from tssc_py.device import autocast, resolve_device
from tssc_py.stage2.losses import LossConfig, refine_loss
from tssc_py.stage2.model import build_refine
from tssc_py.stage2.refine import refine_volume
from tssc_py.stage2.ssm import (
    mamba_ssm_available,
    resolve_backend,
    scan_function,
    selective_scan_torch,
)

# (task, preset, (x, y, z)): refining the CPU recipe's volumes and the paper's cardiac size on
# a GPU; training on the CPU recipe's crops and on whole 64x64x16 frames.
CASES = (
    ("refine", "tiny", (64, 64, 16)),
    ("refine", "base", (256, 256, 32)),
    ("train", "tiny", (32, 32, 16)),
    ("train", "tiny", (64, 64, 16)),
)
TRAIN_BATCH = 4
# Scan lengths of the parity table: short, the tiny preset's 64x64x16 at its lowest resolution
# (16x16x16), the base preset's 256x256x32 at its lowest (32x32x32), and longer.
PARITY_LENGTHS = (64, 4096, 32768, 131072)
# Gradients of parameters shared along the sequence are sums over it, accumulated in another
# order by the kernel; the others are per element.
SUMMED = ("A", "D", "delta_bias")


def measure(
    task: str,
    preset: str,
    shape: tuple[int, int, int],
    backend: str,
    device: str,
    seconds: float,
    save: Path | None = None,
):
    """Calls per second and peak memory (MiB) of one case, in this process.

    ``save``: where to write the refine case's correction (output minus input), to compare
    backends.
    """
    where = resolve_device(device)
    torch.manual_seed(0)
    net = build_refine(preset, backend=backend).to(where)
    if task == "refine":
        net.eval()
        with torch.no_grad():
            for value in net.state_dict().values():
                if value.is_floating_point() and not value.any():
                    value.normal_(std=0.02)
        volume = torch.rand(shape).numpy()

        def step() -> None:
            refine_volume(net, volume, device=where)

        if save is not None:
            np.save(save, refine_volume(net, volume, device=where) - volume)

    else:
        optimizer = torch.optim.Adam(net.parameters())
        crops = torch.rand(TRAIN_BATCH, 1, *shape, device=where)
        truth = torch.rand(TRAIN_BATCH, 1, *shape, device=where)
        loss_config = LossConfig(w_tv=0.0)

        def step() -> None:
            with autocast(where):
                pred = net(crops)
            loss, _ = refine_loss(pred, truth, loss_config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    def once() -> None:
        step()
        if where.type == "cuda":
            torch.cuda.synchronize()

    once()  # warm-up (kernel selection, allocator)
    if where.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    done, start = 0, time.perf_counter()
    while done < 2 or time.perf_counter() - start < seconds:
        once()
        done += 1
    rate = done / (time.perf_counter() - start)
    # On a CPU, this process's own peak: it ran only this case (see main).
    cuda = where.type == "cuda"
    peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mib()
    return {"rate": rate, "peak_mib": peak, "backend": resolve_backend(backend, where)}


def scan_parity(length: int, device: torch.device) -> dict[str, float]:
    """Relative L2 differences, pure-PyTorch vs mamba_ssm scan, float32, one random input."""
    g = torch.Generator(device=device).manual_seed(length)
    b, d, n = 2, 64, 16
    r = lambda *s: torch.randn(*s, generator=g, device=device)  # noqa: E731
    inputs = {
        "u": r(b, d, length),
        "delta": r(b, d, length) * 0.5,
        "A": -torch.rand(d, n, generator=g, device=device) * 2 - 0.1,
        "B": r(b, n, length),
        "C": r(b, n, length),
        "D": r(d),
        "z": r(b, d, length),
        "delta_bias": r(d) * 0.1,
    }
    results = []
    for fn in (selective_scan_torch, scan_function("mamba_ssm")):
        leaves = {k: v.clone().requires_grad_(True) for k, v in inputs.items()}
        out = fn(**leaves, delta_softplus=True)
        weights = torch.linspace(-1, 1, out.numel(), device=device).reshape(out.shape)
        (out * weights).sum().backward()
        results.append({"out": out.detach(), **{k: v.grad for k, v in leaves.items()}})

    def rel(key: str) -> float:
        ours, fused = results[0][key], results[1][key]
        return ((ours - fused).norm() / fused.norm()).item()

    return {
        "output": rel("out"),
        "per-element gradients": max(rel(k) for k in inputs if k not in SUMMED),
        "summed gradients": max(rel(k) for k in SUMMED),
    }


CPU_BASE_SECONDS = 30.0
"""On a CPU the ``base`` case runs only with --seconds of at least this."""


def main(argv: list[str] | None = None) -> None:
    parser = Parser(__doc__)
    parser.add_argument(
        "--seconds",
        type=positive_float,
        default=10.0,
        help="Time per measurement (on a CPU, the refine base 256x256x32 case runs only with "
        f"{CPU_BASE_SECONDS:g} or more: about a minute per call on 2 cores).",
    )
    add_device_option(parser)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one case, JSON out
    parser.add_argument("--save", type=Path, help=argparse.SUPPRESS)  # internal: correction
    args = parser.parse_args(argv)
    if args.case:
        task, preset, size, backend = args.case.split(":")
        shape = tuple(int(v) for v in size.split("x"))
        result = measure(task, preset, shape, backend, args.device, args.seconds, args.save)
        print(json.dumps(result))
        return
    where = resolve_device(args.device)
    backends = ["torch"] + (["mamba_ssm"] if where.type == "cuda" and mamba_ssm_available() else [])
    gpu = torch.cuda.get_device_name(where) if where.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, device {gpu}, {torch.get_num_threads()} CPU threads")
    print(
        "each case measured in its own process; memory: "
        + (
            "peak CUDA allocation"
            if where.type == "cuda"
            else "peak RSS of that process, interpreter and torch import included"
        )
    )
    memory = "peak CUDA MiB" if where.type == "cuda" else "peak RSS MiB"
    print(
        f"| task | preset | volume | backend | calls/s | s/call | {memory} | torch/mamba_ssm "
        "| correction vs torch |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|", flush=True)
    skipped = []
    with tempfile.TemporaryDirectory(prefix="tssc-stage2-bench-") as tmp:
        work = Path(tmp)
        for task, preset, shape in CASES:
            if preset == "base" and where.type != "cuda" and args.seconds < CPU_BASE_SECONDS:
                # About a minute per call on 2 cores: included with --seconds 30 or more.
                skipped.append(f"{task} {preset} {'x'.join(map(str, shape))}")
                continue
            size = "x".join(map(str, shape))
            times: dict[str, float] = {}
            for backend in backends:
                case = f"{task}:{preset}:{size}:{backend}"
                command = [sys.executable, __file__, "--case", case, "--device", args.device]
                command += ["--seconds", str(args.seconds)]
                saved = work / f"{task}-{preset}-{size}-{backend}.npy"
                if task == "refine" and len(backends) > 1:
                    command += ["--save", str(saved)]
                output = run_worker(command, f"case {case}")
                result = json.loads(output.strip().splitlines()[-1])
                times[backend] = 1 / result["rate"]
                ratio = f"{times['torch'] / times[backend]:.1f}" if backend != "torch" else ""
                agree = ""
                if backend != "torch" and saved.exists():
                    ours = np.load(saved.with_name(saved.name.replace(backend, "torch")))
                    agree = f"{np.linalg.norm(np.load(saved) - ours) / np.linalg.norm(ours):.1e}"
                print(
                    f"| {task} | {preset} | {size} | {result['backend']} | {result['rate']:.2f} | "
                    f"{1 / result['rate']:.3f} | {result['peak_mib']:.0f} | {ratio} | {agree} |",
                    flush=True,
                )
    for case in skipped:
        print(
            f"({case} left out on the CPU: about a minute per call; it runs with --seconds "
            f"{CPU_BASE_SECONDS:g} or more)"
        )

    if len(backends) > 1:
        print("\nselective scan alone, float32, relative L2 difference pure-PyTorch vs mamba_ssm")
        print("| length | output | per-element gradients | summed gradients (A, D, delta_bias) |")
        print("|---:|---:|---:|---:|")
        for length in PARITY_LENGTHS:
            row = scan_parity(length, where)
            print(f"| {length} | " + " | ".join(f"{v:.1e}" for v in row.values()) + " |")


if __name__ == "__main__":
    sys.exit(run_script(main))
