"""Prepared 4D volumes <-> chunks of 2D+t slice stacks.

A chunk holds ``chunk_size`` consecutive z-slices, each a 2D+t sequence of the *filled* series:
every prepared frame sits at its position (in evaluate mode that includes the hidden frames, so
split -> assemble is lossless), new frames of upsample mode are zeros. Methods never see hidden
frames: :func:`tssc_py.methods.interpolate` blanks every frame that is not known before calling
a method. A chunk is the unit one GPU task processes. Chunks are uncompressed
``.npz`` files (no pickle) with the stack ``(slices, frames, x, y)`` and a JSON header.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from tssc_py.atomic import outputs
from tssc_py.errors import TsscError, about
from tssc_py.io import GZIP_MAX_RATIO, Scan, max_scan_bytes, read_scan, write_scan
from tssc_py.names import check_subject_id
from tssc_py.prepare import PrepareRecord, check_model_space, load_record

CHUNK_VERSION = 1


@dataclass(frozen=True)
class ChunkInfo:
    """Where a chunk sits in its subject's series.

    Attributes:
        subject: Subject id.
        z_start: First slice (prepared space) held by the chunk.
        depth: Slices of the whole prepared volume.
        n_frames: Frames of the filled series.
        known_frames: Frames given to methods as input.
        method: Method that filled the unknown frames, or None while unfilled.
    """

    subject: str
    z_start: int
    depth: int
    n_frames: int
    known_frames: tuple[int, ...]
    method: str | None = None

    def __post_init__(self) -> None:
        # Both name files (chunk names, score tables) wherever a chunk header is read.
        check_subject_id(self.subject, what="the chunk's subject id")
        if self.method is not None:
            check_subject_id(self.method, what="the chunk's method name")


@dataclass
class Chunk:
    """A stack of 2D+t slice sequences, ``stack`` shaped ``(slices, frames, x, y)``."""

    stack: np.ndarray
    info: ChunkInfo


def chunk_name(subject: str, index: int) -> str:
    """File name of a subject's chunk."""
    return f"{subject}.chunk{index:03d}.npz"


def split_volume(prepared: np.ndarray, record: PrepareRecord, chunk_size: int) -> list[Chunk]:
    """Split a prepared ``(x, y, z, t)`` volume into chunks of 2D+t slice stacks.

    The prepared frames are placed at their positions in the filled series; positions with no
    prepared frame (upsample mode) are zero.

    Raises:
        TsscError: if ``chunk_size`` < 1 or the volume does not match the record.
    """
    if chunk_size < 1:
        raise TsscError(f"chunk size must be at least 1, got {chunk_size}")
    check_model_space(prepared.shape, record, filled=False)
    nx, ny, depth, _ = prepared.shape
    known = tuple(record.known_frames)
    chunks = []
    for z_start in range(0, depth, chunk_size):
        z_stop = min(depth, z_start + chunk_size)
        stack = np.zeros((z_stop - z_start, record.n_frames, nx, ny), dtype=np.float32)
        for i, t in enumerate(record.prepared_frames):
            stack[:, t] = prepared[:, :, z_start:z_stop, i].transpose(2, 0, 1)
        info = ChunkInfo(record.subject, z_start, depth, record.n_frames, known)
        chunks.append(Chunk(stack, info))
    return chunks


def assemble_chunks(chunks: Sequence[Chunk]) -> np.ndarray:
    """Put chunks of one subject back into a ``(x, y, z, t)`` volume.

    Raises:
        TsscError: if chunks belong to different subjects or series, overlap, or leave gaps.
    """
    if not chunks:
        raise TsscError("no chunks to assemble")
    first = chunks[0].info
    for chunk in chunks:
        info = chunk.info
        same = (info.subject, info.depth, info.n_frames, info.known_frames, info.method)
        if same != (first.subject, first.depth, first.n_frames, first.known_frames, first.method):
            raise TsscError(
                f"chunks do not belong together: {first.subject} (method {first.method}) "
                f"vs {info.subject} (method {info.method})"
            )
    ordered = sorted(chunks, key=lambda c: c.info.z_start)
    nx, ny = ordered[0].stack.shape[2:]
    volume = np.empty((nx, ny, first.depth, first.n_frames), dtype=np.float32, order="F")
    z = 0
    for chunk in ordered:
        if chunk.info.z_start != z:
            problem = "overlap" if chunk.info.z_start < z else "a gap"
            raise TsscError(f"chunks of {first.subject} have {problem} at slice {z}")
        if chunk.stack.shape[1:] != (first.n_frames, nx, ny):
            raise TsscError(f"chunk of {first.subject} at slice {z} has a different shape")
        stop = z + chunk.stack.shape[0]
        volume[:, :, z:stop] = chunk.stack.transpose(2, 3, 0, 1)
        z = stop
    if z != first.depth:
        raise TsscError(f"chunks of {first.subject} stop at slice {z} of {first.depth}")
    return volume


def save_chunk(chunk: Chunk, path: Path) -> None:
    """Write a chunk to ``path`` (the caller provides atomicity)."""
    header = json.dumps({"version": CHUNK_VERSION, **asdict(chunk.info)})
    with path.open("wb") as handle:
        np.savez(handle, stack=chunk.stack, header=np.array(header))


_NPY_HEADERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def _check_claims(path: Path) -> None:
    """Refuse an archive whose arrays claim more bytes than its members hold or than a scan may
    have here (:func:`~tssc_py.io.max_scan_bytes`): NumPy allocates what an array's header
    claims before reading it.

    Raises:
        TsscError: Naming the member.
        ValueError: For a member that is not a NumPy array.
    """
    limit = max_scan_bytes()
    with zipfile.ZipFile(path) as archive:
        for member in archive.infolist():
            if member.file_size > min(limit, GZIP_MAX_RATIO * max(member.compress_size, 1)):
                raise TsscError(
                    f"not a tssc chunk (member {member.filename} claims "
                    f"{member.file_size:,} bytes)",
                    path,
                )
            with archive.open(member) as stream:
                read_header = _NPY_HEADERS.get(np.lib.format.read_magic(stream))
                if read_header is None:
                    raise ValueError(f"member {member.filename} has an unknown format version")
                shape, _, dtype = read_header(stream)
            if math.prod(shape) * dtype.itemsize > member.file_size:
                raise TsscError(
                    f"not a tssc chunk (array {member.filename} claims more data than it holds)",
                    path,
                )


def load_chunk(path: str | Path) -> Chunk:
    """Read a chunk written by :func:`save_chunk`.

    Raises:
        TsscError: if the file is missing or not a tssc chunk.
    """
    path = Path(path)
    if not path.is_file():
        raise TsscError("no such file", path)
    if not zipfile.is_zipfile(path):
        raise TsscError("not a tssc chunk (not an .npz archive)", path)
    try:
        _check_claims(path)
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            stack = data["stack"]
        if header.pop("version") != CHUNK_VERSION:
            raise ValueError("unknown chunk version")
        header["known_frames"] = tuple(header["known_frames"])
        with about(path):
            info = ChunkInfo(**header)
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as exc:
        raise TsscError(f"not a tssc chunk ({exc})", path) from None
    if stack.ndim != 4 or stack.shape[1] != info.n_frames:
        raise TsscError(
            f"chunk stack has shape {stack.shape}, expected (slices, {info.n_frames}, x, y)", path
        )
    return Chunk(stack, info)


def split_file(
    prepared: str | Path,
    record: str | Path,
    out: str | Path,
    chunk_size: int = 8,
    overwrite: bool = False,
) -> list[Path]:
    """Split a prepared volume into chunk files ``out/{subject}.chunkNNN.npz``."""
    prepared, out = Path(prepared), Path(out)
    rec = load_record(record)
    scan = read_scan(prepared)
    with about(prepared):
        check_model_space(scan.data.shape, rec, filled=False, affine=scan.affine)
        chunks = split_volume(scan.data, rec, chunk_size)
    paths = [out / chunk_name(rec.subject, i) for i in range(len(chunks))]
    with outputs(overwrite) as group:
        for chunk, path in zip(chunks, paths, strict=True):
            save_chunk(chunk, group.path(path))
    if overwrite:
        # An earlier split into more chunks would leave its last ones for SUBJECT.chunk*.npz:
        # those that are that subject's unfilled chunks (tssc-split's) go.
        for stale in set(out.glob(f"{rec.subject}.chunk[0-9][0-9][0-9].npz")) - set(paths):
            if _split_chunk_of(stale, rec.subject):
                stale.unlink()
    return paths


def _split_chunk_of(path: Path, subject: str) -> bool:
    """Whether ``path`` is an unfilled chunk of ``subject`` (what tssc-split writes)."""
    try:
        info = load_chunk(path).info
    except TsscError:
        return False
    return info.subject == subject and info.method is None


def filled_scan(volume: np.ndarray, record: PrepareRecord) -> Scan:
    """The filled series as a scan in prepared space (prepared geometry, the filled series'
    time step: in upsample mode the acquired step over ``frames_between + 1``)."""
    return Scan(
        volume, np.asarray(record.prepared_affine), record.restored_time_step, record.time_unit
    )


def assemble_files(
    chunks: Sequence[str | Path], record: str | Path, out: str | Path, overwrite: bool = False
) -> Path:
    """Assemble chunk files into the filled prepared-space series at ``out``."""
    files, out = [Path(p) for p in chunks], Path(out)
    rec = load_record(record)
    loaded = [load_chunk(p) for p in files]
    starts: dict[int, Path] = {}
    for path, chunk in zip(files, loaded, strict=True):
        if chunk.info.subject != rec.subject:
            raise TsscError(f"chunk of subject {chunk.info.subject}, record of {rec.subject}", path)
        if chunk.info.method is None:
            # Its unknown frames are the hidden truth: assembled, it would score as perfect.
            raise TsscError("is not filled (a tssc-split chunk: run tssc-interpolate)", path)
        if chunk.info.z_start in starts:
            raise TsscError(
                f"holds slices from {chunk.info.z_start} on, as {starts[chunk.info.z_start]} does",
                path,
            )
        starts[chunk.info.z_start] = path
    volume = assemble_chunks(loaded)
    return write_scan(filled_scan(volume, rec), out, overwrite)
