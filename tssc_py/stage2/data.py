"""Stage-2 training data: stage-1 volumes paired with their ground truth.

Stage 2 learns to repair what stage 1 produces, so its inputs are stage-1 outputs: the
filled series (prepared space) of evaluate-mode subjects, whose hidden frames are known. They
are either made here by running the frozen stage-1 checkpoint over the subjects (and cached in
the run folder, so a resumed run does not sample them again; made again when the checkpoint
or the sampling options change) or read from a folder of
``tssc-assemble`` outputs named ``SUBJECT.nii`` / ``SUBJECT.nii.gz``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tssc_py.atomic import atomic_path
from tssc_py.errors import TsscError, about
from tssc_py.io import file_sha256, read_scan, write_scan
from tssc_py.methods import Diffusion, fill_chunk
from tssc_py.prepare import PrepareRecord, load_record, record_path
from tssc_py.slices import assemble_chunks, filled_scan, split_volume


@dataclass
class Pair:
    """One subject's generated frames and their truth, each ``(frames, x, y, z)`` float32."""

    subject: str
    generated: np.ndarray
    truth: np.ndarray


def _record(image: Path) -> PrepareRecord:
    record = load_record(record_path(image))
    if record.mode != "evaluate":
        raise TsscError(
            "is an upsample-mode subject: stage 2 trains on evaluate-mode subjects, whose "
            "hidden frames have a ground truth",
            image,
        )
    return record


def _made_from(image: Path) -> str:
    """The JSON stamp of what a stage-1 output of ``image`` was made from."""
    digests = {
        name: file_sha256(path)
        for name, path in (("prepared_sha256", image), ("record_sha256", record_path(image)))
    }
    return json.dumps(digests, indent=1, sort_keys=True) + "\n"


def generate_stage1(
    images: Sequence[Path], cache: Path, runner: Diffusion, show_progress: bool = False
) -> dict[str, Path]:
    """Run the stage-1 ``diffusion`` method over prepared subjects, caching each result.

    Args:
        images: Prepared images (with records).
        cache: Folder of ``SUBJECT.nii`` results and ``made_with.json`` (the runner's
            :meth:`~tssc_py.methods.diffusion.Diffusion.fingerprint`: the checkpoint's config,
            its weights' digest, the sampling options and code revision they were made with),
            with each result's ``SUBJECT.made_from.json`` (the SHA-256 of the prepared image and
            record it was made from: a subject prepared again, e.g. with other known frames, is
            made again); results made otherwise are made again, the others reused.
        runner: The ``diffusion`` method, ready.
        show_progress: Draw a progress bar over the subjects.

    Returns:
        Subject -> filled series path.
    """
    made_with = json.dumps(runner.fingerprint(), indent=1, sort_keys=True) + "\n"
    stamp = cache / "made_with.json"
    if not stamp.is_file() or stamp.read_text() != made_with:
        # Each result with its stamp: what the cache holds besides them is not its own.
        for stamp_of in cache.glob("*.made_from.json"):
            subject = stamp_of.name.removesuffix(".made_from.json")
            (cache / f"{subject}.nii").unlink(missing_ok=True)
            stamp_of.unlink()
        with atomic_path(stamp, overwrite=True) as tmp:
            tmp.write_text(made_with)
    out = {}
    for image in tqdm(images, desc="stage-1 outputs", unit="subject", disable=not show_progress):
        record = _record(image)
        target = cache / f"{record.subject}.nii"
        made_from = cache / f"{record.subject}.made_from.json"
        source = _made_from(image)
        if not (target.exists() and made_from.is_file() and made_from.read_text() == source):
            prepared = read_scan(image).data
            with about(image):
                chunks = split_volume(prepared, record, chunk_size=prepared.shape[2])
                filled = assemble_chunks([fill_chunk(chunk, runner) for chunk in chunks])
            write_scan(filled_scan(filled, record), target, overwrite=True)
            with atomic_path(made_from, overwrite=True) as tmp:
                tmp.write_text(source)
        out[record.subject] = target
    return out


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


def load_pairs(images: Sequence[Path], generated: dict[str, Path]) -> list[Pair]:
    """Pair every predicted frame of each subject with its truth.

    Raises:
        TsscError: For a subject without a generated series or shapes that do not match.
    """
    pairs = []
    for image in images:
        record = _record(image)
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
        pairs.append(
            Pair(
                record.subject,
                np.ascontiguousarray(np.moveaxis(made[..., frames], -1, 0), np.float32),
                np.ascontiguousarray(np.moveaxis(truth[..., frames], -1, 0), np.float32),
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


class CropSampler:
    """Random in-plane crops (all slices) of random generated frames, flipped at random.

    Args:
        pairs: Training pairs.
        crop: In-plane crop side, a multiple of 4 (capped at the frame size rounded down to
            one: the network halves the in-plane size twice).

    Raises:
        TsscError: For frames smaller than 4 voxels in-plane.
    """

    def __init__(self, pairs: Sequence[Pair], crop: int) -> None:
        self.pairs = list(pairs)
        self.crop = crop
        small = [p.subject for p in self.pairs if min(p.generated.shape[1:3]) < 4]
        if small:
            raise TsscError(f"subject {small[0]!r}: frames under 4 voxels in-plane cannot train")
        self.weights = np.array([len(p.generated) for p in self.pairs], dtype=float)
        self.weights /= self.weights.sum()

    def crop_shapes(self) -> set[tuple[int, int, int]]:
        """The shapes of the crops :meth:`batch` cuts, one per distinct pair shape."""
        return {self._crop_shape(p.generated.shape[1:]) for p in self.pairs}

    def _crop_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        nx, ny, nz = shape
        return min(self.crop, nx // 4 * 4), min(self.crop, ny // 4 * 4), nz

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(size, 1, c, c, z)`` inputs and targets."""
        inputs, targets = [], []
        for _ in range(size):
            pair = self.pairs[int(rng.choice(len(self.pairs), p=self.weights))]
            t = int(rng.integers(len(pair.generated)))
            nx, ny = pair.generated.shape[1:3]
            cx, cy, _ = self._crop_shape(pair.generated.shape[1:])
            x0 = int(rng.integers(nx - cx, endpoint=True))
            y0 = int(rng.integers(ny - cy, endpoint=True))
            a = pair.generated[t, x0 : x0 + cx, y0 : y0 + cy]
            b = pair.truth[t, x0 : x0 + cx, y0 : y0 + cy]
            for axis in range(3):
                if rng.random() < 0.5:
                    a, b = np.flip(a, axis), np.flip(b, axis)
            inputs.append(a)
            targets.append(b)
        return np.stack(inputs)[:, None].copy(), np.stack(targets)[:, None].copy()
