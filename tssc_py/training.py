"""What every training command shares: the run folder, its CSV log and exact resume.

A run folder holds ``checkpoint/`` (the latest state, see :mod:`tssc_py.checkpoint`) and
``log.csv``. A checkpoint stores, besides the weights, everything the next step depends on:
optimizer moments, the step, the torch generator (noise) and the NumPy generator (data
order), so that a resumed run computes exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from tssc_py.atomic import atomic_path, check_folder, remove_leftovers
from tssc_py.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_optimizer_state,
    optimizer_state,
    save_checkpoint,
)
from tssc_py.errors import TsscError, check_integer, differences
from tssc_py.signals import STOP_NAMES, Terminated, signals_held

T = TypeVar("T")
Options = TypeVar("Options", bound="RunOptions")

LOG_EVERY = 50
"""Steps between log rows (besides the rows at validations and checkpoints)."""

AUTO_PRESET = "auto"
"""The ``preset`` value that picks the network size from the device."""


MAX_BATCH_SIZE = 4096
"""Most samples a training step takes: far above the defaults (4 to 8) and what fills a GPU
(a few hundred): a typo is refused before it sizes the batches."""


@dataclass
class RunOptions:
    """Options every training command has; field names are the CLI option names.

    Attributes:
        steps: Optimizer steps in total (a resumed run may raise it).
        batch_size: Samples per step.
        lr: Peak learning rate.
        val_subjects: Subjects held out for validation (the last in name order).
        val_every: Steps between validations (0: at the end only).
        checkpoint_every: Steps between checkpoints (the last step is always saved).
        seed: Seed of the initial weights, the data order and the noise.
        device: ``auto``, ``cpu`` or ``cuda``.
    """

    steps: int = 2000
    batch_size: int = 8
    lr: float = 1e-3
    val_subjects: int = 1
    val_every: int = 500
    checkpoint_every: int = 500
    seed: int = 0
    device: str = "auto"

    FIXED: ClassVar[tuple[str, ...]] = ()
    """Options that define what the saved network computes: resuming with another value of
    one of them is refused, not ignored."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise TsscError(f"steps must be at least 1, got {self.steps}")
        check_integer("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        for name in ("val_subjects", "val_every", "checkpoint_every", "seed"):
            if getattr(self, name) < 0:
                raise TsscError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.lr < 0:
            raise TsscError(f"lr must be >= 0, got {self.lr}")


def hold_out(items: Sequence[T], count: int, name: Callable[[T], str]) -> tuple[list[T], list[T]]:
    """Split subjects into training and validation: the last ``count`` in name order.

    Name order makes the split the same on every run and every resume.

    Raises:
        TsscError: If no subject would be left for training.
    """
    if count >= len(items):
        raise TsscError(
            f"{len(items)} subject(s) leave none for training after holding out "
            f"{count} for validation (lower --val-subjects)"
        )
    ordered = sorted(items, key=name)
    cut = len(ordered) - count
    return ordered[:cut], ordered[cut:]


def _listed(items: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def versus_linear_line(step: int, scores: Mapping[str, float]) -> str:
    """The progress line of a validation scored against ``linear`` (``versus_linear``)."""
    return (
        f"step {step}: val PSNR {scores['val_psnr']:.2f} dB "
        f"(linear {scores['val_linear_psnr']:.2f}), SSIM {scores['val_ssim']:.4f} "
        f"(linear {scores['val_linear_ssim']:.4f})"
    )


def chosen_preset(config: Options, device: torch.device, cpu: str, gpu: str, what: str) -> Options:
    """``config`` with the preset ``auto`` made ``gpu`` on a GPU and ``cpu`` elsewhere (said on
    stderr), so that the checkpoint records the network that was trained."""
    if getattr(config, "preset", None) != AUTO_PRESET:
        return config
    preset = gpu if device.type == "cuda" else cpu
    print(f"{what} preset: {preset} (--preset auto on {device.type})", file=sys.stderr)
    changes: dict[str, Any] = {"preset": preset}  # a field of some trainers' options only
    return replace(config, **changes)


class Run:
    """A training run folder.

    Args:
        out: The folder (created on the first save).
        kind: Checkpoint kind (``stage1``, ``stage2``...).
        columns: Columns of ``log.csv``; the first must be ``step``.
        resume: Open the saved checkpoint to continue from it.
        overwrite: Allow starting afresh over an earlier run.

    Raises:
        TsscError: If resuming without a resumable checkpoint, starting over an earlier run
            without ``overwrite``, or given both ``resume`` and ``overwrite``.
    """

    def __init__(
        self,
        out: str | Path,
        kind: str,
        columns: Sequence[str],
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        if resume and overwrite:
            raise TsscError("resume and overwrite exclude each other (--resume, --overwrite)")
        self.out = Path(out)
        self.kind = kind
        self.columns = tuple(columns)
        self.checkpoint = self.out / "checkpoint"
        self.log_path = self.out / "log.csv"
        self.rows: list[dict[str, Any]] = []
        self.saved: Checkpoint | None = None
        check_folder(self.out)
        # What a killed earlier run left half-saved (a checkpoint folder, the log).
        remove_leftovers(self.out)
        if resume:
            self.saved = load_checkpoint(self.checkpoint, kind)
            if "train" not in self.saved.config or not self.saved.has("training"):
                raise TsscError("has no training state to resume from", self.checkpoint)
        elif not overwrite and (self.checkpoint.exists() or self.log_path.exists()):
            raise TsscError(
                "holds an earlier run (use --resume to continue or --overwrite)", self.out
            )

    def options(self, given: Options, typed: Collection[str] | None = None) -> Options:
        """The options to run with: on resume the saved ones, except ``steps`` (may grow).

        Given options that differ from the saved value are named on stderr, since they are not
        used: those in ``typed`` (the names typed on a command line), or, without it, those
        that differ from their default.

        Raises:
            TsscError: If the saved options are not this version's, or a given option of
                ``FIXED`` differs from the saved one.
        """
        if self.saved is None:
            return given
        try:
            options = type(given)(**{**self.saved.config["train"], "steps": given.steps})
        except TypeError as exc:
            raise TsscError(
                f"saved training options this version does not know ({exc}): "
                "resume with the tssc version that saved them",
                self.checkpoint,
            ) from None
        default = type(given)()
        ignored_names = [
            name
            for name, value in vars(given).items()
            if (name in typed if typed is not None else value != getattr(default, name))
            and value != getattr(options, name)
        ]
        ignored = [f"{n} {getattr(options, n)} (not {getattr(given, n)})" for n in ignored_names]
        for name in type(given).FIXED:
            if name in ignored_names:
                raise TsscError(
                    f"was trained with {name} {getattr(options, name)}, not "
                    f"{getattr(given, name)}: train another model for that (another folder or "
                    "--overwrite)",
                    self.checkpoint,
                )
        if ignored:
            tqdm.write(f"resuming with the saved options: {', '.join(ignored)}", file=sys.stderr)
        return options

    def check_saved(self, key: str, value: Any, problem: str) -> None:
        """Refuse to resume when the saved config's ``key`` differs from ``value``.

        Raises:
            TsscError: Naming the checkpoint, ``problem`` and what differs.
        """
        if self.saved is not None and self.saved.config.get(key) != value:
            saved = self.saved.config.get(key)
            if isinstance(saved, dict) and isinstance(value, dict):
                problem += f" ({differences(saved, value)})"
            elif isinstance(saved, list) and isinstance(value, list):
                gone = [v for v in saved if v not in value]
                new = [v for v in value if v not in saved]
                parts = [f"only in the checkpoint: {_listed(gone)}"] if gone else []
                parts += [f"only in the inputs: {_listed(new)}"] if new else []
                problem += f" ({'; '.join(parts)})" if parts else ""
            raise TsscError(problem, self.checkpoint)

    def restore(
        self,
        modules: Mapping[str, nn.Module],
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        rng: np.random.Generator,
        device: torch.device,
    ) -> int:
        """Load the saved state into the given objects; return the step (0 when fresh)."""
        if self.saved is None:
            return 0
        for name, module in modules.items():
            self.saved.load_into(module, name)
        state = self.saved.json("training")
        tensors = self.saved.tensors("training")
        try:
            load_optimizer_state(optimizer, tensors, state["optimizer"])
            generator.set_state(tensors["torch_generator"])
            rng.bit_generator.state = state["numpy_generator"]
            step = int(state["step"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise TsscError(
                f"training state unreadable ({type(exc).__name__}: {exc})", self.checkpoint
            ) from None
        self.rows = self._read_log(step)
        return step

    def due(
        self, step: int, options: RunOptions, can_validate: bool, stop: int | None = None
    ) -> tuple[bool, bool, bool]:
        """What happens after ``step``: (validate, checkpoint, log a row).

        The last step always validates (when there is a validation set) and saves; every
        checkpoint gets a log row, so that a resumed run logs exactly the rows of an
        uninterrupted one (each row's loss is the mean since the previous row). ``stop`` (the
        signal that came, SIGTERM or Ctrl-C; None: none) saves and logs at once, without
        validating: a batch system allows only seconds between SIGTERM and SIGKILL.
        """
        if stop is not None:
            return False, True, True
        last = step == options.steps
        validate = can_validate and (
            last or (options.val_every > 0 and step % options.val_every == 0)
        )
        checkpoint = last or (options.checkpoint_every > 0 and step % options.checkpoint_every == 0)
        return validate, checkpoint, validate or checkpoint or step % LOG_EVERY == 0

    def stop_if(self, signum: int | None, step: int) -> None:
        """End the run after ``step``'s checkpoint when the signal ``signum`` came (None: none).

        Raises:
            Terminated: If a signal came.
        """
        if signum is not None:
            raise Terminated(
                f"stopped by {STOP_NAMES.get(signum, f'signal {signum}')} after step {step}, "
                f"saved in {self.checkpoint}: continue with --resume",
                signum,
            )

    def finish(self, bar: tqdm, first_step: int, options: RunOptions) -> Path:
        """Close the progress bar, say so if a resumed run had nothing left to do.

        Returns:
            The checkpoint folder.
        """
        bar.close()
        if first_step >= options.steps:
            bar.write(
                f"already at step {first_step}; raise --steps to train longer", file=sys.stderr
            )
        return self.checkpoint

    @property
    def elapsed(self) -> float:
        """Seconds logged so far (carried over by a resumed run)."""
        return float(self.rows[-1]["seconds"]) if self.rows else 0.0

    def log(self, row: Mapping[str, Any]) -> None:
        """Keep one log row (written with the next checkpoint)."""
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"unknown log columns {sorted(unknown)}")
        self.rows.append(dict(row))

    def save(
        self,
        config: Mapping[str, Any],
        modules: Mapping[str, nn.Module],
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        rng: np.random.Generator,
        step: int,
    ) -> None:
        """Write the checkpoint (atomically replacing the previous one) and the log, with
        SIGTERM and Ctrl-C held until both are written: a log behind its checkpoint would lose
        rows on resume."""
        with signals_held():
            opt_tensors, opt_meta = optimizer_state(optimizer)
            save_checkpoint(
                self.checkpoint,
                {"kind": self.kind, **config, "step": step},
                {
                    **{name: module.state_dict() for name, module in modules.items()},
                    "training": {**opt_tensors, "torch_generator": generator.get_state()},
                },
                {
                    "training": {
                        "step": step,
                        "optimizer": opt_meta,
                        "numpy_generator": rng.bit_generator.state,
                    }
                },
            )
            text = io.StringIO()
            writer = csv.DictWriter(text, fieldnames=self.columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
            with atomic_path(self.log_path, overwrite=True) as tmp:
                tmp.write_text(text.getvalue())

    def _read_log(self, up_to: int) -> list[dict[str, str]]:
        if not self.log_path.is_file():
            return []
        with self.log_path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            rows = [row for row in reader if int(row["step"]) <= up_to]
        if tuple(reader.fieldnames or ()) != self.columns:
            raise TsscError(
                f"has the columns {reader.fieldnames}, this version logs {list(self.columns)}: "
                "start afresh with --overwrite",
                self.log_path,
            )
        return rows
