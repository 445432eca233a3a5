"""Stage 1 as an interpolation method: DDIM sampling from a trained checkpoint."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import numpy as np
import torch
from torch import nn

from tssc_py.device import autocast, resolve_device
from tssc_py.errors import TsscError
from tssc_py.methods.base import Method, register
from tssc_py.stage1 import SAMPLING_FLIPS, SAMPLING_STEPS
from tssc_py.stage1.interpolator import check_flips, check_samples, load_stage1, windows

SAMPLING_REVISION = 2
"""Raise when the same weights and options sample differently (2: each slice sequence has its
own noise, 2026-11-26), so that cached outputs (stage 2's) are made again."""


def slice_generator(seed: int, known_frames: np.ndarray) -> torch.Generator:
    """One slice sequence's own noise source, from the seed and the sequence's known frames.

    A slice's result then depends neither on the chunk nor on the batch it is filled in, nor on
    its neighbours (a generator shared by a chunk gave every chunk, and every subject, the same
    noise: one-slice chunks made neighbouring slices artificially alike).
    """
    digest = zlib.crc32(np.ascontiguousarray(known_frames, dtype=np.float32).tobytes())
    high, low = np.random.SeedSequence([seed, digest]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(high) << 32 | int(low))


@register
class Diffusion(Method):
    """The stage-1 diffusion transformer (``tssc-train-stage1`` checkpoint).

    Series longer than the model's window are cut into windows joined at known frames (with
    ``upsample`` mode and 10 frames between acquisitions, each window is one acquired pair and
    its 10 new frames). Slices are sampled in batches; slices whose known frames hold no
    signal (depth padding) keep the linear blend.

    Args:
        checkpoint: Checkpoint folder.
        steps: DDIM steps. One step returns the model's estimate of the conditional mean of
            the unknown frames (the best PSNR / SSIM); more steps sample sharper frames that
            commit to one plausible version of what the known frames leave uncertain.
        eta: DDIM eta (0: deterministic for a given seed).
        seed: Seed of the sampling noise.
        device: ``auto``, ``cpu`` or ``cuda``.
        batch_size: Sequences sampled together.
        weights: ``ema`` or ``model``.
        samples: DDIM samples averaged per sequence (see ``Stage1.sample``).
        flips: Flipped copies of each sequence averaged (1, 2, 4 or 8; see ``Stage1.sample``):
            each costs one more sampling run; 8, the default, measured best on both synthetic
            kinds (benchmarks/RESULTS.md).
        compile: On a GPU, compile the network with ``torch.compile`` (its first batch of
            each size then takes about a minute longer, every model call after it less time:
            benchmarks/RESULTS.md); ignored on a CPU.
    """

    name = "diffusion"
    min_known = 2
    checkpoint_kind = "stage1"
    revision = SAMPLING_REVISION
    options = (
        "checkpoint",
        "steps",
        "eta",
        "seed",
        "device",
        "batch_size",
        "weights",
        "samples",
        "flips",
        "compile",
    )

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        steps: int = SAMPLING_STEPS,
        eta: float = 0.0,
        seed: int = 0,
        device: str = "auto",
        batch_size: int = 16,
        weights: str = "ema",
        samples: int = 1,
        flips: int = SAMPLING_FLIPS,
        compile: bool = False,
    ) -> None:
        if checkpoint is None:
            raise TsscError("method 'diffusion' needs a trained model (--checkpoint DIR)")
        if batch_size < 1:
            raise TsscError(f"batch size must be at least 1, got {batch_size}")
        self.device = resolve_device(device)
        self.stage1 = load_stage1(checkpoint, weights, self.device)
        # Checked here, not at the first fill: a run then stops before any work.
        self.stage1.diffusion.check_ddim(steps, eta)
        check_samples(samples)
        self.checkpoint = Path(checkpoint)
        self.steps, self.eta, self.seed, self.batch_size = steps, eta, seed, batch_size
        check_flips(flips)
        self.samples, self.flips, self.weights = samples, flips, weights
        self.network: nn.Module = self.stage1.model
        if compile and self.device.type == "cuda":
            # A compiled Module is a Module (OptimizedModule); the stub says only Callable.
            self.network = cast(nn.Module, torch.compile(self.stage1.model))

    def check_known(self, known: Sequence[int], n_frames: int) -> None:
        super().check_known(known, n_frames)
        windows(known, n_frames, self.stage1.config.frames)

    def fill(self, stack: np.ndarray, known: Sequence[int]) -> np.ndarray:
        config = self.stage1.config
        if tuple(stack.shape[2:]) != config.size:
            size = "x".join(map(str, config.size))
            raise TsscError(
                f"frames are {stack.shape[2]}x{stack.shape[3]}, but the model in "
                f"{self.checkpoint} was trained on {size} (prepare with --size {config.size[0]})"
            )
        out = stack.copy()
        active = np.flatnonzero(np.abs(stack[:, list(known)]).reshape(len(stack), -1).max(axis=1))
        noise = {row: slice_generator(self.seed, stack[row, list(known)]) for row in active}
        mask = np.zeros(stack.shape[1], dtype=bool)
        mask[list(known)] = True
        for start, stop in windows(known, stack.shape[1], config.frames):
            kn = torch.from_numpy(mask[start:stop])
            for i in range(0, len(active), self.batch_size):
                rows = active[i : i + self.batch_size]
                x = torch.from_numpy(stack[rows, start:stop]).to(self.device)
                k = kn.to(self.device).expand(len(rows), -1)
                with autocast(self.device):
                    y = self.stage1.sample(
                        x,
                        k,
                        self.steps,
                        self.eta,
                        [noise[row] for row in rows],
                        model=self.network,
                        samples=self.samples,
                        flips=self.flips,
                    )
                out[rows, start:stop] = y.float().cpu().numpy()
        # Slices outside `active` keep their zeros: the blend of empty known frames is empty.
        return out
