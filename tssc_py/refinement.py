"""Stage 2 over a method: its training inputs made through the method interface, and the
training that ``tssc-train-stage2`` runs.

Stage 2 imports no stage 1: it trains on the filled series of a
:class:`~tssc_py.stage2.data.Stage1Source`. This module, above both, makes that source from a
method (stage 1's ``diffusion`` by default, the paper's stage 2) or a folder of outputs.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tssc_py.atomic import atomic_path
from tssc_py.errors import TsscError, about
from tssc_py.io import file_sha256, read_scan, write_scan
from tssc_py.methods import Method, fill_chunk, get_method
from tssc_py.prepare import record_path
from tssc_py.runs import REFINES
from tssc_py.slices import assemble_chunks, filled_scan, split_volume
from tssc_py.stage2.data import OutputsFolder, Stage1Source, training_record
from tssc_py.stage2.train import TrainConfig, train


def _made_from(image: Path) -> str:
    """The JSON stamp of what a stage-1 output of ``image`` was made from."""
    digests = {
        name: file_sha256(path)
        for name, path in (("prepared_sha256", image), ("record_sha256", record_path(image)))
    }
    return json.dumps(digests, indent=1, sort_keys=True) + "\n"


@dataclass(frozen=True)
class MethodOutputs:
    """A method run over prepared subjects, each result cached.

    The cache folder holds ``SUBJECT.nii`` results and ``made_with.json`` (the method's name
    and :meth:`~tssc_py.methods.Method.fingerprint`: its options, its checkpoint's config and
    weights' digest, its code's revision), with each result's ``SUBJECT.made_from.json`` (the
    SHA-256 of the prepared image and record it was made from: a subject prepared again, e.g.
    with other known frames, is made again); results made otherwise are made again, the others
    reused.
    """

    method: Method

    def fingerprint(self) -> dict[str, object]:
        return {"method": self.method.name, **self.method.fingerprint()}

    def outputs(
        self, images: Sequence[Path], cache: Path, show_progress: bool = False
    ) -> dict[str, Path]:
        made_with = json.dumps(self.fingerprint(), indent=1, sort_keys=True) + "\n"
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
        bar = tqdm(images, desc="stage-1 outputs", unit="subject", disable=not show_progress)
        for image in bar:
            record = training_record(image)
            target = cache / f"{record.subject}.nii"
            made_from = cache / f"{record.subject}.made_from.json"
            source = _made_from(image)
            if not (target.exists() and made_from.is_file() and made_from.read_text() == source):
                prepared = read_scan(image).data
                with about(image):
                    chunks = split_volume(prepared, record, chunk_size=prepared.shape[2])
                    filled = assemble_chunks([fill_chunk(chunk, self.method) for chunk in chunks])
                write_scan(filled_scan(filled, record), target, overwrite=True)
                with atomic_path(made_from, overwrite=True) as tmp:
                    tmp.write_text(source)
            out[record.subject] = target
        return out


def stage1_source(
    stage1: Path | None,
    stage1_outputs: Path | None,
    device: str = "auto",
    options: dict[str, Any] | None = None,
) -> Stage1Source:
    """Stage 2's inputs: the :data:`~tssc_py.runs.REFINES` method of a stage-1 checkpoint
    (with further ``options`` of it: ``steps``...), or a folder of outputs.

    Raises:
        TsscError: Unless exactly one of the two is given.
    """
    if (stage1 is None) == (stage1_outputs is None):
        raise TsscError("give either a stage-1 checkpoint or a folder of stage-1 outputs")
    if stage1_outputs is not None:
        return OutputsFolder(Path(stage1_outputs))
    given = {k: v for k, v in (options or {}).items() if v is not None}
    return MethodOutputs(get_method(REFINES, checkpoint=stage1, device=device, **given))


def train_refinement(
    inputs: list[str | Path],
    out: Path,
    config: TrainConfig,
    stage1: Path | None = None,
    stage1_outputs: Path | None = None,
    stage1_options: dict[str, Any] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
    typed: Collection[str] | None = None,
) -> Path:
    """Train stage 2 over a stage-1 checkpoint's outputs or a folder of them
    (``tssc-train-stage2``); see :func:`stage1_source` and :func:`tssc_py.stage2.train.train`.

    Returns:
        The checkpoint folder.
    """
    source = stage1_source(stage1, stage1_outputs, config.device, stage1_options)
    return train(inputs, out, config, source, resume, overwrite, show_progress, typed)
