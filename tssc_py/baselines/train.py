"""Unsupervised training of the learned baselines (``tssc-train-baseline``).

The data are stage 1's (:mod:`tssc_py.sequences`): slice sequences of prepared subjects with
a random known-frame pattern (the two ends of a window, or every k-th frame). Each sample is
one pair of consecutive known frames of such a sequence; frames between them are never seen,
as at inference. Adam at a constant rate, as UVI-Net. The run folder, checkpoints, exact
resume, log and progress bar are :class:`~tssc_py.training.Run`'s, as for stage 1; every
``val_every`` steps the model fills held-out sequences from their end frames and is scored
with PSNR and SSIM next to the linear blend of the same frames.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tssc_py.baselines import MODELS
from tssc_py.baselines.model import (
    DEFAULT_FEATURES,
    BaselineConfig,
    Interpolator,
    interpolate_pair,
)
from tssc_py.device import resolve_device
from tssc_py.errors import TsscError
from tssc_py.metrics import versus_linear
from tssc_py.sequences import Sampler, load_cohort, prepared_images, validation_set
from tssc_py.signals import deferred_stop
from tssc_py.training import Run, RunOptions, hold_out, versus_linear_line

LOG_COLUMNS = (
    "step",
    "seconds",
    "loss",
    "lr",
    "val_psnr",
    "val_ssim",
    "val_linear_psnr",
    "val_linear_ssim",
)


@dataclass
class TrainConfig(RunOptions):
    """Options of one baseline run (besides :class:`~tssc_py.training.RunOptions`).

    Attributes:
        model: Which baseline (:data:`~tssc_py.baselines.MODELS`).
        features: Width of the network (None: the model's default, see
            :data:`~tssc_py.baselines.model.DEFAULT_FEATURES`).
        frames: Frames per sampled sequence; validation fills the first ``frames`` frames of
            held-out slices from their two ends.
        smooth: Weight of the smoothness penalty on the flows.
        endpoint_fraction: Share of samples whose pair is the two ends of the sequence (the
            others: two consecutive frames of an every-k-th-frame pattern).
        val_sequences: Validation sequences scored each time.
    """

    model: str = "voxelmorph"
    lr: float = 2e-4
    features: int | None = None
    frames: int = 12
    smooth: float = 1.0
    endpoint_fraction: float = 0.5
    val_sequences: int = 16

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model not in MODELS:
            raise TsscError(f"unknown baseline {self.model!r}; use one of {', '.join(MODELS)}")
        if self.frames < 2 or self.val_sequences < 1:
            raise TsscError("frames must be at least 2 and val_sequences at least 1")
        if self.smooth < 0 or not 0 <= self.endpoint_fraction <= 1:
            raise TsscError("smooth must be >= 0 and endpoint_fraction in [0, 1]")
        BaselineConfig(self.model, self.width)  # refuse a bad width before loading data

    @property
    def width(self) -> int:
        """``features``, or the model's default."""
        return self.features or DEFAULT_FEATURES[self.model]


def pairs(sequences: np.ndarray, known: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One random pair of consecutive known frames per sequence: ``(2, batch, 1, x, y)``."""
    out = []
    for seq, mask in zip(sequences, known, strict=True):
        frames = np.flatnonzero(mask)
        i = int(rng.integers(len(frames) - 1))
        out.append(seq[[frames[i], frames[i + 1]]])
    return np.ascontiguousarray(np.stack(out, axis=1)[:, :, None])


def evaluate(
    model: Interpolator, sequences: np.ndarray, device: torch.device, batch_size: int
) -> dict[str, float]:
    """PSNR / SSIM (2D) of the model and of the linear blend filling sequences from their ends."""
    model.eval()
    frames = sequences.shape[1]
    times = np.arange(1, frames - 1) / (frames - 1)
    pred = interpolate_pair(model, sequences[:, 0], sequences[:, -1], times, device, batch_size)
    ends = sequences[:, [0, -1]]
    blend = (1 - times[:, None, None]) * ends[:, :1] + times[:, None, None] * ends[:, 1:]
    truth = sequences[:, 1:-1]
    return versus_linear(pred, blend.astype(np.float32), truth)


def train(
    inputs: list[str | Path],
    out: Path,
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    typed: Collection[str] | None = None,
) -> Path:
    """Train a baseline on prepared subjects; returns the checkpoint folder.

    Args:
        inputs: Prepared images or folders of them (``tssc-prepare`` outputs).
        out: Run folder: ``checkpoint/`` (latest state) and ``log.csv``.
        config: Training options (on resume, the saved ones are used except ``steps``).
        resume: Continue from ``out/checkpoint``.
        overwrite: Start afresh even if ``out`` holds an earlier run.
        show_progress: Draw a progress bar with the loss on stderr.
        typed: The option names typed on a command line: those that differ from the
            saved ones on ``resume`` are named (without it: those not at their default).

    Raises:
        TsscError: For bad data, a run folder in the way, or a checkpoint that does not fit
            (another model, other subjects or data of another shape).
    """
    run = Run(out, config.model, LOG_COLUMNS, resume, overwrite)
    config = run.options(config, typed)

    cohort = load_cohort(prepared_images(inputs), config.frames)
    train_set, val_set = hold_out(cohort, config.val_subjects, lambda s: s.subject)
    size = cohort[0].stacks.shape[2:]
    baseline = BaselineConfig(
        model=config.model,
        features=config.width,
        size=(int(size[0]), int(size[1])),
        prepare=cohort[0].prepare,
    )
    subjects = sorted(s.subject for s in cohort)
    run.check_saved("baseline", baseline.to_dict(), "was trained on data of another shape")
    run.check_saved("subjects", subjects, "was trained on other subjects than these inputs")
    device = resolve_device(config.device)

    torch.manual_seed(config.seed)
    model = Interpolator(baseline).to(device)
    modules = {"model": model}
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    step = first_step = run.restore(modules, optimizer, gen, rng, device)

    sampler = Sampler(train_set, config.frames, config.endpoint_fraction)
    val_sequences = validation_set(val_set, config.frames, config.val_sequences)
    saved_config = {"baseline": baseline.to_dict(), "train": asdict(config), "subjects": subjects}

    start = time.monotonic() - run.elapsed
    bar = tqdm(
        total=config.steps,
        initial=step,
        desc=f"tssc-train-baseline {config.model}",
        unit="step",
        disable=not show_progress,
    )
    losses: list[float] = []
    with deferred_stop() as stop_requested:
        while step < config.steps:
            model.train()
            x0, x1 = torch.from_numpy(pairs(*sampler.batch(rng, config.batch_size), rng)).to(device)
            loss = model.loss(x0, x1, gen, config.smooth)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
            stop = stop_requested()
            validate, checkpoint, logged = run.due(step, config, len(val_sequences) > 0, stop)
            if logged:
                row: dict[str, Any] = {
                    "step": step,
                    "seconds": round(time.monotonic() - start, 1),
                    "loss": float(np.mean(losses)),
                    "lr": config.lr,
                }
                if validate:
                    scores = evaluate(model, val_sequences, device, config.batch_size)
                    row.update(scores)
                    bar.write(versus_linear_line(step, scores), file=sys.stderr)
                run.log(row)
                losses = []
            if checkpoint:
                run.save(saved_config, modules, optimizer, gen, rng, step)
            run.stop_if(stop, step)
    return run.finish(bar, first_step, config)
