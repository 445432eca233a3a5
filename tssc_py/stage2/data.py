"""Stage-2 training data: stage-1 volumes paired with their ground truth.

Stage 2 learns to repair what stage 1 produces, so its inputs are stage-1 outputs: the
filled series (prepared space) of evaluate-mode subjects, whose hidden frames are known. They
come from a :class:`Stage1Source` the caller gives: a folder of ``tssc-assemble`` outputs
named ``SUBJECT.nii`` / ``SUBJECT.nii.gz`` (:class:`OutputsFolder`), or a method run over the
subjects (:class:`tssc_py.refinement.MethodOutputs`); stage 2 itself runs no stage 1.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from tssc_py.errors import TsscError
from tssc_py.io import read_scan
from tssc_py.prepare import PrepareRecord, load_record, record_path
from tssc_py.stage2.refine import context_channels


@dataclass
class Pair:
    """One subject's generated frames and their truth, each ``(frames, x, y, z)`` float32,
    and where asked the context of each, ``(frames, 3, x, y, z)`` (see
    :func:`~tssc_py.stage2.refine.context_channels`)."""

    subject: str
    generated: np.ndarray
    truth: np.ndarray
    context: np.ndarray | None = None


def training_record(image: Path) -> PrepareRecord:
    """The record of a prepared image that stage 2 can train on.

    Raises:
        TsscError: For an upsample-mode subject (no ground truth of its new frames).
    """
    record = load_record(record_path(image))
    if record.mode != "evaluate":
        raise TsscError(
            "is an upsample-mode subject: stage 2 trains on evaluate-mode subjects, whose "
            "hidden frames have a ground truth",
            image,
        )
    return record


def outputs_source(folder: Path) -> dict[str, object]:
    """What a folder of stage-1 outputs is, for a checkpoint to record: the settings they
    were made with (its ``made_with.json``, where ``tssc-train-stage2`` made them), else the
    folder itself."""
    stamp = folder / "made_with.json"
    if stamp.is_file():
        try:
            return {"made_with": json.loads(stamp.read_text())}
        except (OSError, ValueError):
            pass
    return {"folder": str(folder.resolve())}


def load_pairs(
    images: Sequence[Path], generated: dict[str, Path], context: bool = False
) -> list[Pair]:
    """Pair every predicted frame of each subject with its truth (and its context, taken from
    the stage-1 series as inference takes it, where ``context``).

    Raises:
        TsscError: For a subject without a generated series or shapes that do not match.
    """
    pairs = []
    for image in images:
        record = training_record(image)
        if record.subject not in generated:
            raise TsscError(f"no stage-1 output for subject {record.subject!r}", image)
        truth = read_scan(image).data
        made = read_scan(generated[record.subject]).data
        if made.shape != truth.shape:
            raise TsscError(
                f"has shape {made.shape}, its prepared subject {truth.shape}",
                generated[record.subject],
            )
        frames = record.predicted_frames
        around = None
        if context:
            around = np.stack([context_channels(made, record.known_frames, t) for t in frames])
        pairs.append(
            Pair(
                record.subject,
                np.ascontiguousarray(np.moveaxis(made[..., frames], -1, 0), np.float32),
                np.ascontiguousarray(np.moveaxis(truth[..., frames], -1, 0), np.float32),
                around,
            )
        )
    return pairs


def outputs_folder(folder: Path, subjects: Sequence[str]) -> dict[str, Path]:
    """Find ``SUBJECT.nii`` or ``SUBJECT.nii.gz`` for each subject in ``folder``.

    Raises:
        TsscError: If one is missing.
    """
    found = {}
    for subject in subjects:
        matches = [folder / f"{subject}{s}" for s in (".nii", ".nii.gz")]
        hit = next((p for p in matches if p.is_file()), None)
        if hit is None:
            raise TsscError(f"has no stage-1 output for subject {subject!r}", folder)
        found[subject] = hit
    return found


class Stage1Source(Protocol):
    """Where stage 2's inputs come from."""

    def fingerprint(self) -> dict[str, object]:
        """What the outputs are: recorded in the checkpoint, compared on ``--resume``."""
        ...

    def outputs(self, images: Sequence[Path], cache: Path, show_progress: bool) -> dict[str, Path]:
        """Subject -> its filled series, for every prepared image (made in ``cache`` where
        the source makes them)."""
        ...


@dataclass(frozen=True)
class OutputsFolder:
    """A folder of existing stage-1 outputs, ``SUBJECT.nii[.gz]``."""

    folder: Path

    def fingerprint(self) -> dict[str, object]:
        return outputs_source(self.folder)

    def outputs(self, images: Sequence[Path], cache: Path, show_progress: bool) -> dict[str, Path]:
        subjects = [load_record(record_path(image)).subject for image in images]
        return outputs_folder(self.folder, subjects)


class CropSampler:
    """Random in-plane crops (all slices) of random generated frames, flipped at random.

    Args:
        pairs: Training pairs.
        crop: In-plane crop side, a multiple of ``multiple`` (capped at the frame size rounded
            down to one).
        multiple: What the network's in-plane sizes must be divisible by
            (:attr:`~tssc_py.stage2.model.RefineConfig.multiple`).

    Raises:
        TsscError: For frames smaller than ``multiple`` voxels in-plane.
    """

    def __init__(self, pairs: Sequence[Pair], crop: int, multiple: int) -> None:
        self.pairs = list(pairs)
        self.crop, self.multiple = crop, multiple
        small = [p.subject for p in self.pairs if min(p.generated.shape[1:3]) < multiple]
        if small:
            raise TsscError(
                f"subject {small[0]!r}: frames under {multiple} voxels in-plane cannot train "
                "this network"
            )
        self.weights = np.array([len(p.generated) for p in self.pairs], dtype=float)
        self.weights /= self.weights.sum()

    def crop_shapes(self) -> set[tuple[int, int, int]]:
        """The shapes of the crops :meth:`batch` cuts, one per distinct pair shape."""
        return {self._crop_shape(p.generated.shape[1:]) for p in self.pairs}

    def _crop_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        nx, ny, nz = shape
        m = self.multiple
        return min(self.crop, nx // m * m), min(self.crop, ny // m * m), nz

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(size, I, c, c, z)`` inputs (I: 1, or 4 with the pairs' context) and
        ``(size, 1, c, c, z)`` targets."""
        inputs, targets = [], []
        for _ in range(size):
            pair = self.pairs[int(rng.choice(len(self.pairs), p=self.weights))]
            t = int(rng.integers(len(pair.generated)))
            nx, ny = pair.generated.shape[1:3]
            cx, cy, _ = self._crop_shape(pair.generated.shape[1:])
            x0 = int(rng.integers(nx - cx, endpoint=True))
            y0 = int(rng.integers(ny - cy, endpoint=True))
            a = pair.generated[None, t]
            if pair.context is not None:
                a = np.concatenate([a, pair.context[t]])
            a = a[:, x0 : x0 + cx, y0 : y0 + cy]
            b = pair.truth[None, t, x0 : x0 + cx, y0 : y0 + cy]
            for axis in range(1, 4):
                if rng.random() < 0.5:
                    a, b = np.flip(a, axis), np.flip(b, axis)
            inputs.append(a)
            targets.append(b)
        return np.stack(inputs).copy(), np.stack(targets).copy()
