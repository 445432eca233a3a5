"""Split into 2D+t chunks and assemble back."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import OBLIQUE, blob_series
from tssc_py.errors import TsscError
from tssc_py.io import Scan, read_scan, write_scan
from tssc_py.methods import interpolate_file
from tssc_py.prepare import PrepareConfig, prepare_scan, record_path, save_record
from tssc_py.slices import (
    Chunk,
    assemble_chunks,
    assemble_files,
    load_chunk,
    save_chunk,
    split_file,
    split_volume,
)


def _prepared(shape, mode="evaluate", frames_between=2, seed=0):
    nx, _, nz, nt = shape
    scan = Scan(blob_series(shape, seed=seed), OBLIQUE)
    config = PrepareConfig(mode=mode, frames=nt, size=nx, depth=nz, frames_between=frames_between)
    return prepare_scan(scan, config, "s")


@settings(max_examples=40, deadline=None)
@given(
    nx=st.integers(3, 7),
    depth=st.integers(1, 11),
    frames=st.integers(3, 6),
    chunk_size=st.integers(1, 14),
    mode=st.sampled_from(["evaluate", "upsample"]),
    seed=st.integers(0, 1000),
)
def test_split_assemble_is_lossless(nx, depth, frames, chunk_size, mode, seed) -> None:
    prepared, record = _prepared((nx, nx, depth, frames), mode, seed=seed)
    chunks = split_volume(prepared.data, record, chunk_size)
    assert len(chunks) == -(-depth // chunk_size)
    assert all(c.stack.shape[0] <= chunk_size for c in chunks)
    volume = assemble_chunks(chunks[::-1])
    assert volume.shape == (nx, nx, depth, record.n_frames)
    np.testing.assert_array_equal(volume[..., record.prepared_frames], prepared.data)
    new = [t for t in range(record.n_frames) if t not in record.prepared_frames]
    assert not volume[..., new].any()


def test_chunk_files_round_trip(tmp_path: Path) -> None:
    prepared, record = _prepared((6, 5, 7, 4))
    chunk = split_volume(prepared.data, record, 3)[1]
    save_chunk(chunk, tmp_path / "c.npz")
    loaded = load_chunk(tmp_path / "c.npz")
    assert loaded.info == chunk.info
    np.testing.assert_array_equal(loaded.stack, chunk.stack)
    assert loaded.info.z_start == 3 and loaded.stack.shape == (3, 4, 6, 6)


def test_not_a_chunk(tmp_path: Path) -> None:
    path = tmp_path / "c.npz"
    path.write_bytes(b"garbage")
    with pytest.raises(TsscError, match=r"not a tssc chunk \(not an \.npz archive\)"):
        load_chunk(path)
    np.savez(path, stack=np.zeros(3))
    with pytest.raises(TsscError, match="not a tssc chunk"):
        load_chunk(path)
    with pytest.raises(TsscError, match="no such file"):
        load_chunk(tmp_path / "missing.npz")


@pytest.mark.parametrize(
    "change", [{"subject": "../../ESCAPED"}, {"subject": ".x"}, {"method": "../linear"}]
)
def test_a_chunk_header_naming_files_outside_is_refused(tmp_path: Path, change: dict) -> None:
    prepared, record = _prepared((6, 5, 7, 4))
    chunk = split_volume(prepared.data, record, 3)[0]
    header = {"version": 1, **asdict(chunk.info), "method": "linear", **change}
    np.savez(tmp_path / "c.npz", stack=chunk.stack, header=np.array(json.dumps(header)))
    with pytest.raises(TsscError, match=r"c\.npz: the chunk's (subject id|method name)"):
        load_chunk(tmp_path / "c.npz")


def test_assemble_refuses_gaps_overlaps_and_mixtures() -> None:
    prepared, record = _prepared((4, 4, 6, 3))
    chunks = split_volume(prepared.data, record, 2)
    with pytest.raises(TsscError, match="a gap"):
        assemble_chunks([chunks[0], chunks[2]])
    with pytest.raises(TsscError, match="overlap"):
        assemble_chunks([chunks[0], chunks[0], chunks[1], chunks[2]])
    with pytest.raises(TsscError, match="stop at slice 4"):
        assemble_chunks(chunks[:2])
    other = Chunk(chunks[1].stack, replace(chunks[1].info, subject="t"))
    with pytest.raises(TsscError, match="do not belong together"):
        assemble_chunks([chunks[0], other, chunks[2]])
    with pytest.raises(TsscError, match="no chunks"):
        assemble_chunks([])


def test_bad_chunk_size() -> None:
    prepared, record = _prepared((4, 4, 6, 3))
    with pytest.raises(TsscError, match="chunk size"):
        split_volume(prepared.data, record, 0)


def test_files(tmp_path: Path) -> None:
    prepared, record = _prepared((6, 6, 5, 4))
    image = write_scan(prepared, tmp_path / "s.nii.gz")
    save_record(record, record_path(image))
    paths = split_file(image, record_path(image), tmp_path / "chunks", chunk_size=2)
    assert [p.name for p in paths] == ["s.chunk000.npz", "s.chunk001.npz", "s.chunk002.npz"]
    with pytest.raises(TsscError, match="output exists"):
        split_file(image, record_path(image), tmp_path / "chunks", chunk_size=2)
    # Unfilled chunks hold the hidden truth: assembled, they would score as perfect.
    with pytest.raises(TsscError, match=r"s\.chunk000\.npz: is not filled"):
        assemble_files(paths, record_path(image), tmp_path / "filled.nii.gz")
    filled_paths = [interpolate_file(p, "linear", tmp_path / "filled" / p.name) for p in paths]
    with pytest.raises(TsscError, match=r"chunk000\.npz does"):
        assemble_files([*filled_paths, filled_paths[0]], record_path(image), tmp_path / "x.nii")
    out = assemble_files(filled_paths, record_path(image), tmp_path / "filled.nii.gz")
    filled = read_scan(out)
    known = record.known_frames
    np.testing.assert_array_equal(filled.data[..., known], prepared.data[..., known])
    np.testing.assert_allclose(filled.affine, prepared.affine)
    # A new split into fewer chunks replaces the old ones, leaving none of them behind (but
    # files of that name it did not write: a filled chunk, another file); paths may be text,
    # as from a notebook, and come back as Path.
    chunks = tmp_path / "chunks"
    (chunks / "s.chunk005.npz").write_bytes(filled_paths[0].read_bytes())
    (chunks / "s.chunk006.npz").write_text("the user's")
    again = split_file(str(image), str(record_path(image)), str(chunks), 3, True)
    assert again == [chunks / "s.chunk000.npz", chunks / "s.chunk001.npz"]
    assert sorted(p.name for p in chunks.iterdir()) == [
        "s.chunk000.npz",
        "s.chunk001.npz",
        "s.chunk005.npz",
        "s.chunk006.npz",
    ]


def test_split_refuses_another_subjects_volume(tmp_path: Path) -> None:
    prepared, record = _prepared((6, 6, 5, 4))
    save_record(record, tmp_path / "s.json")
    moved = write_scan(
        prepared.replace(affine=prepared.affine @ np.diag([1, 1, 2, 1])), tmp_path / "o.nii"
    )
    with pytest.raises(TsscError, match="a series of another subject") as err:
        split_file(moved, tmp_path / "s.json", tmp_path / "chunks")
    assert err.value.path == moved and not (tmp_path / "chunks").exists()


def test_assembled_upsampled_series_has_the_new_time_step(tmp_path: Path) -> None:
    prepared, record = _prepared((6, 6, 5, 3), mode="upsample", frames_between=3)
    image = write_scan(prepared, tmp_path / "s.nii")
    save_record(record, tmp_path / "s.json")
    chunks = split_file(image, tmp_path / "s.json", tmp_path / "chunks")
    filled = [interpolate_file(p, "linear", tmp_path / "filled" / p.name) for p in chunks]
    out = read_scan(assemble_files(filled, tmp_path / "s.json", tmp_path / "filled.nii"))
    assert out.data.shape[3] == record.n_frames == 9
    assert out.time_step == pytest.approx(prepared.time_step / 4)
    assert out.time_step == pytest.approx(record.restored_time_step)


def test_a_chunk_holding_pickled_objects_is_refused_unread(tmp_path: Path) -> None:
    from tests.test_checkpoint import _Payload

    marker = tmp_path / "code-ran"
    path = tmp_path / "c.npz"
    np.savez(path, stack=np.zeros((1, 4, 2, 2)), header=np.array([_Payload(marker)], object))
    with pytest.raises(TsscError, match="not a tssc chunk"):
        load_chunk(path)
    assert not marker.exists()


def test_a_chunk_claiming_more_data_than_it_holds_is_refused_unread(tmp_path: Path) -> None:
    # NumPy would allocate what the array's header claims (10**9 float32s) before reading.
    stack = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": (10**6, 4, 250, 1)}
    np.lib.format.write_array_header_1_0(stack, header)
    stack.write(b"\0" * 1000)
    with zipfile.ZipFile(tmp_path / "c.npz", "w") as archive:
        archive.writestr("stack.npy", stack.getvalue())
        archive.writestr("header.npy", b"")
    with pytest.raises(TsscError, match=r"c\.npz: not a tssc chunk \(array stack\.npy claims"):
        load_chunk(tmp_path / "c.npz")
