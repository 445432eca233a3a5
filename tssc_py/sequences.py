"""The 2D+t slice-sequence dataset that stage 1, stage 2 and the baselines share: prepared
subjects cut into slice sequences, and the samplers stage 1 and the baselines train with.

A prepared subject (``tssc-prepare`` output: an image and its JSON record) holds only real
frames, in both modes, so every frame of it can serve as ground truth. Each training sample
is one slice's sequence of ``frames`` frames: a random contiguous window, or ``frames`` frames
spread evenly over the whole series (larger motion per step), flipped at random in time and
in each in-plane axis, with a random known-frame pattern: the two end frames, or every k-th
frame (always including both ends), so one model serves every upsampling factor.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tssc_py.errors import TsscError
from tssc_py.io import SUFFIXES, read_scan, scan_suffix
from tssc_py.prepare import load_record, record_path


@dataclass
class Series:
    """One prepared subject as slice sequences.

    Attributes:
        subject: Subject id.
        path: The prepared image.
        stacks: ``(slices, frames, x, y)`` float32 in [0, 1]; empty (padding) slices dropped.
        prepare: The preparation options the subject was made with.
    """

    subject: str
    path: Path
    stacks: np.ndarray
    prepare: dict


def prepared_images(inputs: Sequence[str | Path] | str | Path) -> list[Path]:
    """Prepared images named by ``inputs``: image files, or folders of them with records (one
    path alone is taken as such, not as a sequence of characters).

    Raises:
        TsscError: For a missing input or when nothing is found.
    """
    images: list[Path] = []
    for item in [inputs] if isinstance(inputs, str | Path) else inputs:
        path = Path(item)
        if path.is_dir():
            candidates = sorted(
                p
                for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and scan_suffix(p) in SUFFIXES
            )
            found = [p for p in candidates if record_path(p).is_file()]
            if not found:
                raise TsscError("holds no prepared image with its .json record", path)
            skipped = [p.name for p in candidates if p not in found]
            if skipped:
                listed = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
                tqdm.write(
                    f"{path}: {len(skipped)} image(s) without a record skipped: {listed}",
                    file=sys.stderr,
                )
            images += found
        elif path.is_file():
            if not record_path(path).is_file():
                raise TsscError(
                    f"is not a prepared image: no {record_path(path).name} record next to it "
                    "(make one with tssc-prepare)",
                    path,
                )
            images.append(path)
        else:
            raise TsscError("no such file or folder", path)
    return list(dict.fromkeys(images))


def load_series(image: Path) -> Series:
    """Read one prepared image and its record.

    Raises:
        TsscError: If the record is missing or does not match the image.
    """
    record = load_record(record_path(image))
    data = read_scan(image).data
    if data.shape[3] != len(record.prepared_frames):
        raise TsscError(
            f"has {data.shape[3]} frames, its record {len(record.prepared_frames)}", image
        )
    stacks = np.ascontiguousarray(data.transpose(2, 3, 0, 1), dtype=np.float32)  # z, t, x, y
    flat = stacks.reshape(len(stacks), -1)
    keep = flat.max(axis=1) > flat.min(axis=1)
    return Series(record.subject, image, stacks[keep], record.config)


def load_cohort(images: Sequence[Path], frames: int) -> list[Series]:
    """Load prepared subjects for training with windows of ``frames`` frames.

    Raises:
        TsscError: If subjects differ in frame size, a subject has fewer frames than
            ``frames`` or no non-empty slice, or two images share a subject id.
    """
    cohort = [load_series(Path(p)) for p in images]
    seen: dict[str, Path] = {}
    for series in cohort:
        if series.subject in seen:
            raise TsscError(
                f"subject {series.subject!r} also comes from {seen[series.subject]}", series.path
            )
        seen[series.subject] = series.path
        if not len(series.stacks):
            raise TsscError("has no slice with any signal", series.path)
        if series.stacks.shape[1] < frames:
            raise TsscError(
                f"has {series.stacks.shape[1]} frames, fewer than the training window of "
                f"{frames} (lower --frames)",
                series.path,
            )
        if series.stacks.shape[2:] != cohort[0].stacks.shape[2:]:
            raise TsscError(
                f"frame size {series.stacks.shape[2:]} differs from "
                f"{cohort[0].stacks.shape[2:]} of {cohort[0].path} (prepare all with one --size)",
                series.path,
            )
    return cohort


def known_pattern(rng: np.random.Generator, frames: int, endpoint_fraction: float) -> np.ndarray:
    """A random known-frame mask of ``frames`` frames: both ends, or every k-th frame + ends."""
    known = np.zeros(frames, dtype=bool)
    known[[0, -1]] = True
    if frames > 2 and rng.random() >= endpoint_fraction:
        known[:: int(rng.integers(2, frames - 1, endpoint=True))] = True
    return known


class Sampler:
    """Random training batches from a cohort.

    Args:
        cohort: Training subjects.
        frames: Frames per sequence.
        endpoint_fraction: Share of samples whose only known frames are the two ends.
        whole_fraction: Share of samples spread evenly over the whole series (the others are
            contiguous windows); irrelevant when series have exactly ``frames`` frames.
    """

    def __init__(
        self,
        cohort: Sequence[Series],
        frames: int,
        endpoint_fraction: float = 0.5,
        whole_fraction: float = 0.25,
    ) -> None:
        self.cohort = list(cohort)
        self.frames = frames
        self.endpoint_fraction = endpoint_fraction
        self.whole_fraction = whole_fraction
        # Every slice equally likely, whatever its subject.
        self.weights = np.array([len(s.stacks) for s in self.cohort], dtype=float)
        self.weights /= self.weights.sum()

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One ``(frames, x, y)`` sequence and its ``(frames,)`` known mask."""
        series = self.cohort[int(rng.choice(len(self.cohort), p=self.weights))]
        stack = series.stacks[int(rng.integers(len(series.stacks)))]
        total = stack.shape[0]
        if total > self.frames and rng.random() < self.whole_fraction:
            idx = np.round(np.linspace(0, total - 1, self.frames)).astype(int)
        else:
            start = int(rng.integers(total - self.frames, endpoint=True))
            idx = np.arange(start, start + self.frames)
        seq = stack[idx]
        for axis in range(3):
            if rng.random() < 0.5:
                seq = np.flip(seq, axis=axis)
        return np.ascontiguousarray(seq), known_pattern(rng, self.frames, self.endpoint_fraction)

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(size, frames, x, y)`` sequences and ``(size, frames)`` known masks."""
        pairs = [self.sample(rng) for _ in range(size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def validation_set(cohort: Sequence[Series], frames: int, limit: int) -> np.ndarray:
    """Up to ``limit`` fixed sequences (first window, slices spread evenly) for validation.

    An empty cohort (``--val-subjects 0``) gives an empty array.
    """
    if not cohort:
        return np.zeros((0, frames, 0, 0), np.float32)
    stacks = np.concatenate([s.stacks[:, :frames] for s in cohort])
    pick = np.unique(np.round(np.linspace(0, len(stacks) - 1, min(limit, len(stacks)))))
    return stacks[pick.astype(int)]
