"""Options used by several ``bin/`` scripts, and the command class (:mod:`tssc_py.command`)
they are declared with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

# Re-exported: the scripts declare themselves with cli.command, cli.PATH and the shared options.
from tssc_py.command import PATH as PATH
from tssc_py.command import command as command
from tssc_py.command import compose
from tssc_py.command import overwrite_option as overwrite_option
from tssc_py.command import typed_options as typed_options
from tssc_py.device import DEVICES
from tssc_py.metrics import SSIM_MODES
from tssc_py.prepare import MAX_DEPTH, MAX_FRAMES_BETWEEN, MAX_SIZE, MODES, PrepareConfig
from tssc_py.stage1 import WEIGHTS
from tssc_py.stage1.interpolator import FLIPS
from tssc_py.stage2.ssm import BACKENDS

_DEFAULT = PrepareConfig()


def _upsample_only(ctx: click.Context, param: click.Parameter, value: int) -> int:
    """Refuse --frames-between given without --mode upsample (the scan's own frames would be
    hidden and predicted instead)."""
    given = ctx.get_parameter_source(param.name or "") is not click.core.ParameterSource.DEFAULT
    if given and ctx.params.get("mode") != "upsample":
        raise click.BadParameter("is only used with --mode upsample", ctx, param)
    return value


def _evaluate_only(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """Refuse --known-every given in upsample mode (there every chosen frame is known)."""
    if value is not None and ctx.params.get("mode") != "evaluate":
        raise click.BadParameter("is only used with --mode evaluate", ctx, param)
    return value


prepare_options = compose(
    click.option(
        "--mode",
        type=click.Choice(MODES),
        default=_DEFAULT.mode,
        show_default=True,
        is_eager=True,  # read before --frames-between, wherever it stands on the command line
        help="evaluate: first and last of the chosen frames (or every --known-every'th) are "
        "known, the frames between are hidden, predicted and scored. upsample: every pair of "
        "consecutive chosen frames gets --frames-between new frames; nothing is scored.",
    ),
    click.option(
        "--frames",
        type=click.IntRange(min=2),
        default=None,
        help="Number of frames, spread as evenly as possible: round(linspace(start, end, N)); "
        "upsample mode needs them evenly spaced (N-1 dividing end - start). At least 3 in "
        "evaluate mode. Default: 12 over the whole series in evaluate mode; every frame "
        "between --start-frame and --end-frame when either is given; every frame in upsample "
        "mode.",
    ),
    click.option(
        "--start-frame",
        type=click.IntRange(min=0),
        default=None,
        help="First frame to use, e.g. end-diastole (0-based). Default: 0.",
    ),
    click.option(
        "--end-frame",
        type=click.IntRange(min=0),
        default=None,
        help="Last frame to use, e.g. end-systole (0-based). Default: the last frame.",
    ),
    click.option(
        "--size",
        type=click.IntRange(8, MAX_SIZE),
        default=_DEFAULT.size,
        show_default=True,
        help="In-plane size after resampling (SIZE x SIZE voxels, field of view kept).",
    ),
    click.option(
        "--depth",
        type=click.IntRange(1, MAX_DEPTH),
        default=_DEFAULT.depth,
        show_default=True,
        help="Slices after centred zero padding or cropping.",
    ),
    click.option(
        "--frames-between",
        type=click.IntRange(1, MAX_FRAMES_BETWEEN),
        default=_DEFAULT.frames_between,
        show_default=True,
        callback=_upsample_only,
        help="upsample mode (refused in evaluate mode): new frames generated between each "
        "pair of acquired frames.",
    ),
    click.option(
        "--known-every",
        type=click.IntRange(min=2),
        default=None,
        callback=_evaluate_only,
        help="evaluate mode: every Kth chosen frame is known (the first, every Kth after it, "
        "the last among them: --frames one more than a multiple of K) and the K-1 between "
        "each pair are hidden and scored: K-times temporal super-resolution. Default: the "
        "first and last frame only.",
    ),
    click.option(
        "--low-percentile",
        type=click.FloatRange(0, 100),
        default=_DEFAULT.low_percentile,
        show_default=True,
        help="Intensity percentile mapped to 0 (lower values are clipped).",
    ),
    click.option(
        "--high-percentile",
        type=click.FloatRange(0, 100),
        default=_DEFAULT.high_percentile,
        show_default=True,
        help="Intensity percentile mapped to 1 (higher values are clipped; use 0 and 100 "
        "for an exactly invertible min-max scaling).",
    ),
)
"""The preparation options shared by tssc-prepare and tssc-run (PrepareConfig fields)."""


chunk_size_option = click.option(
    "--chunk-size",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Slices per chunk (the unit one GPU task processes).",
)

ssim_option = click.option(
    "--ssim",
    "ssim_mode",
    type=click.Choice(SSIM_MODES),
    default="3d",
    show_default=True,
    help="3d: SSIM over each whole frame volume (Gaussian window 11, sigma 1.5, as UVI-Net); "
    "2d: mean of per-slice 2D SSIM.",
)


def device_option(default: str | None = "auto") -> Callable[[Any], Any]:
    """The ``--device`` option of every command that runs a network.

    Args:
        default: Its default; None where each method's own default applies (``auto``).
    """
    return click.option(
        "--device",
        type=click.Choice(DEVICES),
        default=default,
        show_default=default is not None,
        help="Where the networks run: auto is CUDA when available (with bf16 autocast), else "
        "the CPU." + (" [default: auto]" if default is None else ""),
    )


model_options = compose(
    click.option(
        "--checkpoint",
        type=click.Path(path_type=Path, file_okay=False),
        multiple=True,
        help="Trained model of a learned method: a checkpoint/ folder of tssc-train-stage1 "
        "(diffusion) or of tssc-train-baseline (voxelmorph, transmorph, uvinet). Repeat for "
        "several methods: each takes the one of its kind (recorded in its config.json).",
    ),
    click.option(
        "--steps",
        type=click.IntRange(min=1),
        default=None,
        help="diffusion: DDIM steps. 1 gives the model's mean estimate (best PSNR/SSIM); more "
        "(e.g. 25) sample sharper frames. [default: 1]",
    ),
    click.option(
        "--eta",
        type=click.FloatRange(min=0),
        default=None,
        help="diffusion: DDIM eta, 0 for deterministic sampling. [default: 0]",
    ),
    click.option(
        "--seed",
        type=click.IntRange(min=0),
        default=None,
        help="diffusion: seed of the sampling noise. [default: 0]",
    ),
    device_option(None),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=None,
        help="Learned methods: slice sequences processed together. [default: 16]",
    ),
    click.option(
        "--samples",
        type=click.IntRange(min=1),
        default=None,
        help="diffusion: DDIM samples averaged per slice; more gives higher PSNR but blurs "
        "what the known frames leave uncertain. [default: 1]",
    ),
    click.option(
        "--flips",
        type=click.Choice([str(n) for n in FLIPS]),
        default=None,
        callback=lambda ctx, param, value: None if value is None else int(value),
        help="diffusion: copies of each slice sequence sampled and averaged: 1 (none), 2 (and "
        "reversed in time), 4 (and those flipped in x), 8 (and those flipped in y); each "
        "copy costs one more sampling run. [default: 8]",
    ),
    click.option(
        "--weights",
        type=click.Choice(WEIGHTS),
        default=None,
        help="diffusion: the EMA weights or the raw ones. [default: ema]",
    ),
    click.option(
        "--compile/--no-compile",
        default=None,
        help="diffusion: on a GPU, compile the network (torch.compile): about 45 s once per "
        "process (measured on an H100), then faster sampling. Ignored on a CPU. "
        "[default: no-compile]",
    ),
)
"""Options of the methods that run a trained model (None: the method's default)."""

METHOD_OPTIONS = (
    "checkpoint",
    "steps",
    "eta",
    "seed",
    "device",
    "batch_size",
    "samples",
    "flips",
    "weights",
    "compile",
)


tiling_options = compose(
    click.option(
        "--tile",
        type=click.IntRange(min=1),
        default=None,
        help="Stage 2: refine in overlapping in-plane tiles of this side (all slices at "
        "once) to bound memory. [default: whole frames]",
    ),
    click.option(
        "--overlap",
        type=click.IntRange(min=0),
        default=16,
        show_default=True,
        help="Stage 2: minimum overlap of neighbouring tiles, in voxels.",
    ),
    click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default=None,
        help="Stage 2: force a state-space backend. [default: mamba_ssm where it imports on "
        "a GPU, else torch]",
    ),
)
"""How stage 2 runs (tssc-refine, tssc-run)."""
