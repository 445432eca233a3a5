"""Stage-1 attention kernels at a preset's shapes: which implementation is fastest where.

Each block of the DiT attends twice: across the frames of a series for every spatial token
(temporal: a few positions, 12 by default, for very many sequences) and across the tokens of a
frame (spatial: hundreds of positions). Fused attention kernels work in tiles of 64 to 128
query and key positions, so at 12 positions most of a tile is padding. For both shapes of one
model call while sampling a subject (all slices in one batch, as ``tssc-interpolate`` runs
it), this script times ``scaled_dot_product_attention`` with torch's own choice of backend,
with each backend forced, the plain matrix-product form (Q K^T, softmax in float32, times V)
and the model's own ``attention`` (the kernel it picks by length), on inputs laid out as the
model makes them (views of one fused QKV projection; bf16 on a GPU as under autocast, float32
on a CPU). Per row: milliseconds per call and per DDIM step
(one call per block), TFLOP/s with the attention's real FLOPs (the formula torch gives its
attention operators, which counts no padding), and the largest deviation from a float64
computation. Run:

    .venv/bin/python benchmarks/stage1_attention.py --device cpu

Why (issue 3): on one H100, the matrix-product and attention kernels of ``DiT_S`` reached
40-41 % of the card's measured bf16 peak; this script showed that the temporal attention held
them back and that the memory-efficient kernel runs it fastest, which the model now uses on
CUDA for short sequences (its row: ``model``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import torch
from bench_common import Parser, add_device_option, int_at_least, positive_int, run_script
from torch.nn.attention import SDPBackend, sdpa_kernel

from tssc_py.device import resolve_device
from tssc_py.errors import TsscError
from tssc_py.stage1 import model as dit
from tssc_py.stage1.model import preset_config

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

# The backends that can be forced, in the order torch documents them.
BACKENDS = (
    SDPBackend.FLASH_ATTENTION,
    SDPBackend.EFFICIENT_ATTENTION,
    SDPBackend.CUDNN_ATTENTION,
    SDPBackend.MATH,
)


def sdpa_flops(
    query_shape: Sequence[int],
    key_shape: Sequence[int],
    value_shape: Sequence[int],
    *args: object,
    out_shape: object = None,
    **kwargs: object,
) -> int:
    """FLOPs of one attention call: Q K^T and (softmax) V, two batched matrix products; the
    formula torch gives its CUDA attention operators."""
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[-2], value_shape[-1]
    return 2 * b * h * s_q * s_k * d_q + 2 * b * h * s_q * s_k * d_v


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention as the model runs it."""
    return torch.nn.functional.scaled_dot_product_attention(q, k, v)


def forced(backend: SDPBackend) -> Attention:
    """``sdpa`` restricted to one backend."""

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        with sdpa_kernel(backend):
            return sdpa(q, k, v)

    return attend


def matmul_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Attention as two batched matrix products around a float32 softmax."""
    scores = torch.matmul(q, k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B', h, L, L)
    return torch.matmul(scores.softmax(-1, dtype=torch.float32).to(v.dtype), v)


def model_qkv(
    batch: int, length: int, hidden: int, heads: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random q, k, v, each (batch, heads, length, hidden/heads), as views of one projection."""
    qkv = torch.randn(batch, length, 3, heads, hidden // heads, device=device, dtype=dtype)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (timings of CUDA calls end there)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def subject_defaults(gpu: bool) -> tuple[str, int, int]:
    """(preset, frame size, slices) of the subject the stage-1 benchmarks measure by default:
    the issue's GPU subject (DiT_S, 256x256, 32 slices) or its CPU one (DiT_tiny, 64, 16)."""
    return ("DiT_S", 256, 32) if gpu else ("DiT_tiny", 64, 16)


def seconds_per_call(
    attend: Attention, qkv: tuple[torch.Tensor, ...], device: torch.device, calls: int, repeats: int
) -> float:
    """Median over ``repeats`` of the mean time of ``calls`` back-to-back calls."""
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        for _ in range(calls):
            attend(*qkv)
        sync(device)
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def measure(
    name: str, attend: Attention, qkv: tuple[torch.Tensor, ...], args: argparse.Namespace
) -> dict | None:
    """One implementation's row for one attention shape; None when it cannot run there."""
    with torch.no_grad():
        try:
            out = attend(*qkv)  # warm-up: kernel selection, workspace
        except RuntimeError:  # a forced backend that does not support these inputs or device
            return None
        reference = matmul_attention(*(x.double() for x in qkv))
        error = (out.double() - reference).abs().max().item()
        del out, reference
        seconds = seconds_per_call(attend, qkv, args.device, args.calls, args.repeats)
    q, k, v = qkv
    flops = sdpa_flops(q.shape, k.shape, v.shape)
    return {"implementation": name, "seconds": seconds, "flops": flops, "error": error}


def main(argv: list[str] | None = None) -> None:
    parser = Parser(__doc__)
    add_device_option(parser)
    parser.add_argument("--preset", help="DiT preset (default DiT_S on a GPU, DiT_tiny on a CPU).")
    parser.add_argument(
        "--size",
        type=positive_int,
        help="Frame size, divisible by the preset's patch (default 256 on a GPU, 64 on a CPU).",
    )
    parser.add_argument("--slices", type=positive_int, help="Slices per batch (default 32 / 16).")
    parser.add_argument("--frames", type=int_at_least(2), default=12, help="Frames per series.")
    parser.add_argument("--calls", type=positive_int, default=10, help="Calls per timing.")
    parser.add_argument("--repeats", type=positive_int, default=3, help="Timings (median).")
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    gpu = args.device.type == "cuda"
    default_preset, default_size, default_slices = subject_defaults(gpu)
    preset = args.preset or default_preset
    config = preset_config(preset)
    size = default_size if args.size is None else args.size
    slices = default_slices if args.slices is None else args.slices
    if size % config.patch_size:
        raise TsscError(
            f"--size {size} is not divisible by {preset}'s patch size {config.patch_size}"
        )
    tokens = (size // config.patch_size) ** 2
    dtype = torch.bfloat16 if gpu else torch.float32
    shapes = {
        "temporal": (slices * tokens, args.frames),
        "spatial": (slices * args.frames, tokens),
    }

    name = torch.cuda.get_device_name(args.device) if gpu else "CPU"
    print(f"torch {torch.__version__}, device {name}, {torch.get_num_threads()} CPU threads")
    print(
        f"{preset} ({config.depth} blocks, width {config.hidden}, {config.heads} heads) on "
        f"{slices} slices of {size}x{size}, {args.frames} frames; {str(dtype)[6:]} inputs"
    )
    header = ["attention", "q (B', h, L, d)", "implementation", "ms/call", "ms/DDIM step"]
    header += ["TFLOP/s", "max abs error"]
    print("| " + " | ".join(header) + " |")
    print("|---|---|---|" + "---:|" * (len(header) - 3), flush=True)
    choices = [("sdpa (torch's choice)", sdpa)]
    choices += [(f"sdpa {backend.name.lower()}", forced(backend)) for backend in BACKENDS]
    choices.append(("matmul + softmax", matmul_attention))
    choices.append(("model (as tssc runs it)", dit.attention))
    for attention, (batch, length) in shapes.items():
        torch.manual_seed(0)
        qkv = model_qkv(batch, length, config.hidden, config.heads, args.device, dtype)
        chosen = SDPBackend(torch._fused_sdp_choice(*qkv)).name.lower()
        choices[0] = (f"sdpa (torch's choice: {chosen})", sdpa)
        for implementation, attend in choices:
            row = measure(implementation, attend, qkv, args)
            shape = "(" + ", ".join(map(str, qkv[0].shape)) + ")"
            if row is None:
                cells = [attention, shape, implementation, "not available", "", "", ""]
            else:
                cells = [
                    attention,
                    shape,
                    implementation,
                    f"{1e3 * row['seconds']:.3g}",
                    f"{1e3 * row['seconds'] * config.depth:.3g}",
                    f"{row['flops'] / row['seconds'] / 1e12:.3g}",
                    f"{row['error']:.2g}",
                ]
            print("| " + " | ".join(cells) + " |", flush=True)
        del qkv
        if gpu:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    sys.exit(run_script(main))
