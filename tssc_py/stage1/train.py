"""Training loop of stage 1 (``tssc-train-stage1``).

AdamW with a linear warm-up and a cosine decay to a tenth of the peak rate, gradient
clipping, an EMA copy of the weights (used for validation and, by default, for inference),
bf16 autocast on CUDA. Every ``checkpoint_every`` steps the whole training state (weights, EMA,
optimizer moments, step, both random generators) goes to ``OUT/checkpoint`` as safetensors +
JSON, so ``resume`` continues exactly where the run stopped: the next loss equals the one an
uninterrupted run would have computed. Every ``val_every`` steps the EMA model fills held-out
sequences from their end frames with DDIM and is scored with the project's PSNR and SSIM next
to the linear blend of the same frames; ``OUT/log.csv`` keeps every logged row.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from tssc_py.device import autocast, check_network_fits, resolve_device
from tssc_py.errors import TsscError, check_integer
from tssc_py.metrics import sequence_scores, versus_linear
from tssc_py.sequences import Sampler, Series, load_cohort, prepared_images, validation_set
from tssc_py.signals import deferred_stop
from tssc_py.stage1 import SAMPLING_FLIPS, SAMPLING_STEPS
from tssc_py.stage1.diffusion import ScheduleConfig
from tssc_py.stage1.interpolator import (
    Stage1,
    Stage1Config,
    check_flips,
    linear_prior,
    prior_channels,
)
from tssc_py.stage1.model import DIT_LIMITS, DiTConfig, VideoDiT, preset_config
from tssc_py.training import (
    AUTO_PRESET,
    Run,
    RunOptions,
    chosen_preset,
    hold_out,
    versus_linear_line,
)

KIND = "stage1"
LOG_COLUMNS = (
    "step",
    "seconds",
    "loss",
    "lr",
    "grad_norm",
    "val_psnr",
    "val_ssim",
    "val_linear_psnr",
    "val_linear_ssim",
    "val_prior_psnr",
    "val_prior_ssim",
)


@dataclass
class TrainConfig(RunOptions):
    """Options of one stage-1 run (besides :class:`~tssc_py.training.RunOptions`).

    Attributes:
        preset: DiT size preset (``DiT_tiny``, ``DiT_S``, ``DiT_B``), or ``auto``: ``DiT_S``
            on a GPU, ``DiT_tiny`` on a CPU (the checkpoint records the one trained).
        patch_size: Override of the preset's patch size (None keeps it).
        hidden: Override of the preset's width.
        depth: Override of the preset's number of blocks.
        heads: Override of the preset's attention heads.
        frames: Frames per training sequence (the model's window).
        warmup: Linear warm-up steps.
        weight_decay: AdamW weight decay.
        grad_clip: Gradient norm clip.
        ema_decay: EMA decay (ramped up from 0 over the first steps).
        scale: Residual multiplier before diffusion.
        prior: What the residual is taken over: ``linear`` (the blend in time), ``demons``
            (the known frames registered and warped to each time), ``rigid_demons`` (the same
            after a rigid registration of each pair), ``demons+linear`` (over
            demons, with the blend as a further input), or ``none`` (no residual: the paper's
            plain masked diffusion); see :mod:`~tssc_py.stage1.interpolator`.
        prediction: Diffusion target (``x0``, ``v`` or ``epsilon``).
        endpoint_fraction: Share of samples whose only known frames are the two ends.
        val_sequences: Validation sequences scored each time.
        val_steps: DDIM steps during validation (by default the ``diffusion`` method's).
        val_flips: Flipped copies averaged during validation (by default the method's).
        w_ssim: Weight of an SSIM term on the model's estimate of the unknown frames (see
            :meth:`~tssc_py.stage1.interpolator.Stage1.loss`); 0 for the plain diffusion loss.
            With the default 0.3 (and the flip copies at inference) the recipe's model beats
            ``linear`` in SSIM on hearts, where the squared error alone smooths too much
            (benchmarks/RESULTS.md).
    """

    lr: float = 5e-4
    preset: str = AUTO_PRESET
    patch_size: int | None = None
    hidden: int | None = None
    depth: int | None = None
    heads: int | None = None
    frames: int = 12
    warmup: int = 200
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    scale: float = 4.0
    prior: str = "rigid_demons"
    prediction: str = ScheduleConfig.prediction
    endpoint_fraction: float = 0.5
    val_sequences: int = 16
    val_steps: int = SAMPLING_STEPS
    val_flips: int = SAMPLING_FLIPS
    w_ssim: float = 0.3

    # What the network predicts and over which prior: a resumed run cannot change them.
    FIXED: ClassVar[tuple[str, ...]] = ("prior", "prediction")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("frames", "val_sequences", "val_steps"):
            if getattr(self, name) < 1 + (name == "frames"):
                raise TsscError(f"{name} is too small: {getattr(self, name)}")
        if not 0 <= self.w_ssim < math.inf:
            raise TsscError(f"w_ssim must be a finite number >= 0, got {self.w_ssim}")
        check_flips(self.val_flips)
        if self.warmup < 0:
            raise TsscError(f"warmup must be >= 0, got {self.warmup}")
        if not 0 <= self.endpoint_fraction <= 1 or not 0 <= self.ema_decay < 1:
            raise TsscError("endpoint_fraction must lie in [0, 1] and ema_decay in [0, 1)")
        for name, value in self.model_overrides().items():
            check_integer(name, value, *DIT_LIMITS[name])

    def model_overrides(self) -> dict[str, int]:
        """The architecture fields given explicitly."""
        names = ("patch_size", "hidden", "depth", "heads")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}


def learning_rate(config: TrainConfig, step: int) -> float:
    """Warm-up then cosine decay to ``lr / 10`` at ``config.steps``."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    span = max(1, config.steps - config.warmup)
    progress = min(1.0, (step - config.warmup) / span)
    return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def _stage1_config(config: TrainConfig, cohort: list[Series]) -> Stage1Config:
    model = preset_config(config.preset).to_dict()
    model.update(config.model_overrides(), priors=prior_channels(config.prior))
    size = cohort[0].stacks.shape[2:]
    return Stage1Config(
        model=DiTConfig.from_dict(model),
        schedule=ScheduleConfig(prediction=config.prediction),
        frames=config.frames,
        size=(int(size[0]), int(size[1])),
        prior=config.prior,
        scale=config.scale,
        prepare=cohort[0].prepare,
    )


def _known_ends(x: torch.Tensor) -> torch.Tensor:
    """The known mask of validation: each sequence filled from its end frames."""
    known = torch.zeros(x.shape[:2], dtype=torch.bool)
    known[:, [0, -1]] = True
    return known


def prior_scores(
    stage1: Stage1, sequences: np.ndarray, batch_size: int, device: torch.device
) -> dict[str, float]:
    """PSNR / SSIM (2D, per frame) of the model's prior on the held-out sequences: computed
    once per run, as the prior depends on the known frames only, not on the weights."""
    x = torch.from_numpy(sequences)
    known = _known_ends(x)
    priors = []
    for i in range(0, len(x), batch_size):
        xb, kb = x[i : i + batch_size].to(device), known[i : i + batch_size].to(device)
        prior = stage1.prior(xb, kb)
        priors.append((xb if prior is None else prior[:, :, 0]).float().cpu())
    psnr, ssim = sequence_scores(torch.cat(priors)[:, 1:-1].numpy(), x[:, 1:-1].numpy())
    return {"val_prior_psnr": psnr, "val_prior_ssim": ssim}


def evaluate(
    stage1: Stage1,
    model: VideoDiT,
    sequences: np.ndarray,
    config: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """PSNR / SSIM (2D, per frame) of the EMA model sampled as inference samples it
    (``val_steps`` DDIM steps, ``val_flips`` copies) and of the linear blend on held-out
    sequences filled from their end frames."""
    model.eval()
    x = torch.from_numpy(sequences)
    known = _known_ends(x)
    gen = torch.Generator().manual_seed(0)
    outs = []
    for i in range(0, len(x), config.batch_size):
        xb, kb = (
            x[i : i + config.batch_size].to(device),
            known[i : i + config.batch_size].to(device),
        )
        with autocast(device):
            outs.append(
                stage1.sample(
                    xb, kb, config.val_steps, 0.0, gen, model=model, flips=config.val_flips
                )
                .float()
                .cpu()
            )
    pred = torch.cat(outs)[:, 1:-1].numpy()
    return versus_linear(pred, linear_prior(x, known)[:, 1:-1].numpy(), x[:, 1:-1].numpy())


def validation_line(step: int, scores: dict[str, float], config: TrainConfig) -> str:
    """The progress line of a validation: the model's scores next to the linear blend's (and
    the prior's, when that is not the blend), and how the model was sampled."""
    line = versus_linear_line(step, scores)
    if config.prior not in ("none", "linear"):
        line += (
            f"; {config.prior} prior {scores['val_prior_psnr']:.2f} dB, "
            f"SSIM {scores['val_prior_ssim']:.4f}"
        )
    return f"{line} ({config.val_steps} DDIM step(s), {config.val_flips} flip(s); 2D SSIM)"


def train(
    inputs: list[str | Path],
    out: Path,
    config: TrainConfig,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    typed: Collection[str] | None = None,
) -> Path:
    """Train a stage-1 model on prepared subjects; returns the checkpoint folder.

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
        TsscError: For bad data, a run folder in the way, or a checkpoint that does not fit.
    """
    run = Run(out, KIND, LOG_COLUMNS, resume, overwrite)
    config = run.options(config, typed)

    images = prepared_images(inputs)
    cohort = load_cohort(images, config.frames)
    train_set, val_set = hold_out(cohort, config.val_subjects, lambda s: s.subject)
    device = resolve_device(config.device)
    config = chosen_preset(config, device, "DiT_tiny", "DiT_S", "stage 1")
    stage1_config = _stage1_config(config, cohort)
    options = "".join(f", --{k.replace('_', '-')} {v}" for k, v in config.model_overrides().items())
    check_network_fits(
        lambda: VideoDiT(stage1_config.model),
        5,
        "the weights, their gradients, the EMA and AdamW's two moments",
        f"the network of --preset {config.preset}{options}",
    )
    subjects = sorted(s.subject for s in cohort)
    run.check_saved("stage1", stage1_config.to_dict(), "was trained on data of another shape")
    run.check_saved("subjects", subjects, "was trained on other subjects than these inputs")

    torch.manual_seed(config.seed)
    stage1 = Stage1(stage1_config)
    model = stage1.model.to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    modules = {"model": model, "ema": ema}
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    step = first_step = run.restore(modules, optimizer, gen, rng, device)

    sampler = Sampler(train_set, config.frames, config.endpoint_fraction)
    val_sequences = validation_set(val_set, config.frames, config.val_sequences)
    validating = len(val_sequences) > 0
    val_prior = prior_scores(stage1, val_sequences, config.batch_size, device) if validating else {}
    saved_config = {
        "stage1": stage1_config.to_dict(),
        "train": asdict(config),
        "subjects": subjects,
    }

    start = time.monotonic() - run.elapsed
    bar = tqdm(
        total=config.steps,
        initial=step,
        desc="tssc-train-stage1",
        unit="step",
        disable=not show_progress,
    )
    losses: list[float] = []
    with deferred_stop() as stop_requested:
        while step < config.steps:
            model.train()
            lr = learning_rate(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            xb, kb = sampler.batch(rng, config.batch_size)
            x = torch.from_numpy(xb).to(device)
            known = torch.from_numpy(kb).to(device)
            with autocast(device):
                loss = stage1.loss(x, known, gen, config.w_ssim)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip))
            optimizer.step()
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                    p_ema.lerp_(p, 1.0 - decay)
            step += 1
            losses.append(float(loss.detach()))
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses):.4f}", lr=f"{lr:.2e}")
            stop = stop_requested()
            validate, checkpoint, logged = run.due(step, config, validating, stop)
            if logged:
                row: dict[str, Any] = {
                    "step": step,
                    "seconds": round(time.monotonic() - start, 1),
                    "loss": float(np.mean(losses)),
                    "lr": lr,
                    "grad_norm": grad_norm,
                }
                if validate:
                    scores = {**evaluate(stage1, ema, val_sequences, config, device), **val_prior}
                    row.update(scores)
                    bar.write(validation_line(step, scores, config), file=sys.stderr)
                run.log(row)
                losses = []
            if checkpoint:
                run.save(saved_config, modules, optimizer, gen, rng, step)
            run.stop_if(stop, step)
    return run.finish(bar, first_step, config)
