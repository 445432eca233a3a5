"""Training loop of stage 2 (``tssc-train-stage2``).

Pairs of stage-1 volumes and their truth (see :mod:`tssc_py.stage2.data`), random in-plane
crops with flips, Adam with a linear decay to zero (the paper's schedule), the loss of
:mod:`tssc_py.stage2.losses` with each term logged, validation on held-out subjects (PSNR,
SSIM and the cross-slice error of the refined frames next to those of stage 1 alone),
checkpoints as safetensors + JSON with exact ``--resume`` (:class:`tssc_py.training.Run`).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tssc_py.device import autocast, check_network_fits, resolve_device
from tssc_py.errors import TsscError, check_integer
from tssc_py.metrics import cross_slice_error, psnr, ssim
from tssc_py.prepare import load_record, record_path
from tssc_py.sequences import prepared_images
from tssc_py.signals import deferred_stop
from tssc_py.stage2.data import CropSampler, Pair, Stage1Source, load_pairs
from tssc_py.stage2.losses import LossConfig, refine_loss, usable_level
from tssc_py.stage2.model import REFINE_LIMITS, RefineConfig, RefineNet, preset_config
from tssc_py.stage2.refine import refine_volume
from tssc_py.stage2.ssm import resolve_backend
from tssc_py.training import AUTO_PRESET, Run, RunOptions, chosen_preset, hold_out

KIND = "stage2"
LOG_COLUMNS = (
    "step",
    "seconds",
    "loss",
    "mse",
    "wavelet",
    "tv",
    "lr",
    "val_psnr",
    "val_ssim",
    "val_cross_slice",
    "val_stage1_psnr",
    "val_stage1_ssim",
    "val_stage1_cross_slice",
)


@dataclass
class TrainConfig(RunOptions):
    """Options of one stage-2 run (besides :class:`~tssc_py.training.RunOptions`).

    Attributes:
        preset: Network size preset (``tiny``, ``base``), or ``auto``: ``base`` on a GPU,
            ``tiny`` on a CPU (the checkpoint records the one trained).
        channels: Override of the preset's width.
        blocks: Override of the preset's number of tri-directional blocks.
        backend: State-space backend (``auto``, ``torch``, ``mamba_ssm``).
        crop: In-plane crop side of the training samples.
        w_mse: MSE weight.
        w_wavelet: Wavelet weight.
        w_tv: Total-variation weight: 0 by default, where the paper uses 1. On 0..1
            intensities the TV of a frame is about 35 times its MSE to the truth (the first
            steps' log of the recipe), so at weight 1 TV, not fidelity, steers the network.
        wavelet: Wavelet of the wavelet term.
        level: Wavelet levels.
        context: Give the network the known frames around each refined one
            (:attr:`~tssc_py.stage2.model.RefineConfig.context`).
    """

    # The CPU recipe's budget (benchmarks/stage2_recipe.py trains with these defaults): 1000
    # steps, the subjects stage 1 validates on held out too, a checkpoint every 250 steps.
    steps: int = 1000
    batch_size: int = 4
    val_subjects: int = 2
    checkpoint_every: int = 250
    preset: str = AUTO_PRESET
    channels: int | None = None
    blocks: int | None = None
    backend: str = "auto"
    crop: int = 32
    w_mse: float = 1.0
    w_wavelet: float = 1.0
    w_tv: float = 0.0
    wavelet: str = "haar"
    level: int = 3
    context: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.crop < 1:
            raise TsscError(f"crop must be at least 1, got {self.crop}")
        for name, value in self.network_overrides().items():
            check_integer(name, value, *REFINE_LIMITS[name])

    def network_overrides(self) -> dict[str, int]:
        """The architecture fields given explicitly."""
        names = ("channels", "blocks")
        return {n: getattr(self, n) for n in names if getattr(self, n) is not None}

    def refine_config(self) -> RefineConfig:
        """The network's config: the preset with the given overrides."""
        overrides = self.network_overrides()
        return preset_config(self.preset, backend=self.backend, context=self.context, **overrides)

    def loss_config(self) -> LossConfig:
        """The loss weights and wavelet."""
        return LossConfig(self.w_mse, self.w_wavelet, self.w_tv, self.wavelet, self.level)


def evaluate(net: RefineNet, pairs: list[Pair], device: torch.device) -> dict[str, float]:
    """Scores of refined and of stage-1 frames of held-out subjects (means over frames)."""
    net.eval()
    scores: dict[str, list[float]] = {}
    for pair in pairs:
        for i, (made, truth) in enumerate(zip(pair.generated, pair.truth, strict=True)):
            context = None if pair.context is None else pair.context[i]
            refined = refine_volume(net, made, device=device, context=context)
            for prefix, volume in (("val", refined), ("val_stage1", made)):
                scores.setdefault(f"{prefix}_psnr", []).append(psnr(volume, truth))
                scores.setdefault(f"{prefix}_ssim", []).append(ssim(volume, truth, "2d"))
                scores.setdefault(f"{prefix}_cross_slice", []).append(
                    cross_slice_error(volume, truth)
                )
    return {k: float(np.mean(v)) for k, v in scores.items()}


def say_stage1_gap(train_pairs: list[Pair], val_pairs: list[Pair]) -> None:
    """Say on stderr how good the stage-1 frames stage 2 learns from are, next to those of the
    validation subjects: a stage 1 trained on the same subjects makes smaller errors on them
    than on new ones, and stage 2 then learns to repair errors smaller than it will meet."""

    def mean_psnr(pairs: list[Pair]) -> float:
        frames = [zip(p.generated, p.truth, strict=True) for p in pairs]
        return float(np.mean([psnr(made, truth) for f in frames for made, truth in f]))

    line = f"stage-1 frames: PSNR {mean_psnr(train_pairs):.2f} dB on the training subjects"
    if val_pairs:
        line += f", {mean_psnr(val_pairs):.2f} on the validation subjects"
    print(line, file=sys.stderr)


def say_lowered_level(shapes: Iterable[tuple[int, int, int]], loss: LossConfig) -> None:
    """Say on stderr when training crops are too small for the wavelet levels asked for."""
    used, shape = min((usable_level(shape, loss.wavelet, loss.level), shape) for shape in shapes)
    if used < loss.level:
        print(
            f"wavelet levels: {used} of the {loss.level} asked for (--level), as many as "
            f"{loss.wavelet} allows on training crops of {'x'.join(map(str, shape))} voxels",
            file=sys.stderr,
        )


def train(
    inputs: list[str | Path],
    out: Path,
    config: TrainConfig,
    stage1: Stage1Source,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    typed: Collection[str] | None = None,
) -> Path:
    """Train stage 2 on prepared subjects and their stage-1 outputs.

    Args:
        inputs: Prepared images or folders of them (evaluate mode).
        out: Run folder: ``checkpoint/``, ``log.csv`` and ``stage1_outputs/`` (where
            ``stage1`` makes its outputs).
        config: Training options (on resume, the saved ones are used except ``steps``).
        stage1: Where the stage-1 outputs come from (:mod:`tssc_py.refinement` makes one from
            a method or a folder).
        resume: Continue from ``out/checkpoint``.
        overwrite: Start afresh even if ``out`` holds an earlier run.
        show_progress: Draw a progress bar.
        typed: The option names typed on a command line: those that differ from the
            saved ones on ``resume`` are named (without it: those not at their default).

    Returns:
        The checkpoint folder.

    Raises:
        TsscError: For bad inputs or a checkpoint that does not fit.
    """
    run = Run(out, KIND, LOG_COLUMNS, resume, overwrite)
    config = run.options(config, typed)
    images = prepared_images(inputs)
    first: dict[str, Path] = {}
    for image in images:
        subject = load_record(record_path(image)).subject
        if subject in first:
            # Stage-1 outputs are cached by subject: the second would train on the first's.
            raise TsscError(f"subject {subject!r} comes twice, also from {first[subject]}", image)
        first[subject] = image
    subjects = sorted(first)
    run.check_saved("subjects", subjects, "was trained on other subjects than these inputs")
    prepared_with = load_record(record_path(images[0])).config
    # Other known frames (--known-every) are other training pairs.
    run.check_saved("prepare", prepared_with, "was trained on subjects prepared otherwise")
    # Everything that can be refused is checked before stage 1 runs over the cohort.
    _, val_subjects = hold_out(subjects, config.val_subjects, str)
    device = resolve_device(config.device)
    config = chosen_preset(config, device, "tiny", "base", "stage 2")
    refine_config = config.refine_config()
    if config.crop % refine_config.multiple:
        raise TsscError(
            f"--crop must be a multiple of {refine_config.multiple} for the --preset "
            f"{config.preset} network (it halves the in-plane size {refine_config.down} times), "
            f"got {config.crop}"
        )
    given = "".join(f", --{k} {v}" for k, v in config.network_overrides().items())
    check_network_fits(
        lambda: RefineNet(refine_config),
        4,
        "the weights, their gradients and Adam's two moments",
        f"the network of --preset {config.preset}{given}",
    )
    source = stage1.fingerprint()  # a method's weights too: a retrained stage 1 is another
    run.check_saved("stage1", source, "was trained on other stage-1 outputs")
    generated = stage1.outputs(images, run.out / "stage1_outputs", show_progress)
    pairs = load_pairs(images, generated, refine_config.context)
    pairs.sort(key=lambda p: p.subject)
    train_pairs = [p for p in pairs if p.subject not in val_subjects]
    val_pairs = [p for p in pairs if p.subject in val_subjects]
    say_stage1_gap(train_pairs, val_pairs)

    torch.manual_seed(config.seed)
    net = RefineNet(refine_config).to(device)
    backend = resolve_backend(config.backend, device)
    # On stderr as the other commands print it (the progress bar may be off).
    print(f"stage 2 state-space backend: {backend}", file=sys.stderr)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    modules = {"model": net}
    step = first_step = run.restore(modules, optimizer, gen, rng, device)
    loss_config = config.loss_config()
    saved_config = {
        "refine": net.config.to_dict(),
        "loss": loss_config.to_dict(),
        "train": asdict(config),
        "subjects": subjects,
        "prepare": prepared_with,
        "stage1": source,
    }
    sampler = CropSampler(train_pairs, config.crop, refine_config.multiple)
    if loss_config.w_wavelet > 0:
        say_lowered_level(sampler.crop_shapes(), loss_config)
    start = time.monotonic() - run.elapsed
    bar = tqdm(
        total=config.steps,
        initial=step,
        desc="tssc-train-stage2",
        unit="step",
        disable=not show_progress,
        postfix={"backend": backend},
    )
    terms: list[dict[str, float]] = []
    with deferred_stop() as stop_requested:
        while step < config.steps:
            net.train()
            lr = config.lr * (1.0 - step / config.steps)
            for group in optimizer.param_groups:
                group["lr"] = lr
            xb, yb = sampler.batch(rng, config.batch_size)
            x, y = torch.from_numpy(xb).to(device), torch.from_numpy(yb).to(device)
            with autocast(device):
                pred = net(x)
            loss, parts = refine_loss(pred, y, loss_config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            terms.append({"loss": float(loss.detach()), **parts})
            bar.update()
            bar.set_postfix(loss=f"{np.mean([t['loss'] for t in terms]):.4f}", backend=backend)
            stop = stop_requested()
            validate, checkpoint, logged = run.due(step, config, bool(val_pairs), stop)
            if logged:
                row: dict[str, Any] = {
                    "step": step,
                    "seconds": round(time.monotonic() - start, 1),
                    "lr": lr,
                    **{k: float(np.mean([t[k] for t in terms])) for k in terms[0]},
                }
                if validate:
                    scores = evaluate(net, val_pairs, device)
                    row.update(scores)
                    bar.write(
                        f"step {step}: val PSNR {scores['val_psnr']:.2f} dB "
                        f"(stage 1 {scores['val_stage1_psnr']:.2f}), cross-slice error "
                        f"{scores['val_cross_slice']:.4f} (stage 1 "
                        f"{scores['val_stage1_cross_slice']:.4f})",
                        file=sys.stderr,
                    )
                run.log(row)
                terms = []
            if checkpoint:
                run.save(saved_config, modules, optimizer, gen, rng, step)
            run.stop_if(stop, step)
    return run.finish(bar, first_step, config)
