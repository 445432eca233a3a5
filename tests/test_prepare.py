"""Preparation choices and its inverse."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import (
    OBLIQUE,
    assert_one_line_error,
    blob_series,
    leftovers,
    run_cli,
    write_nifti,
)
from tssc_py.errors import TsscError
from tssc_py.io import Scan, read_scan, write_scan
from tssc_py.prepare import (
    MAX_DEPTH,
    MAX_FRAMES_BETWEEN,
    MAX_SIZE,
    PrepareConfig,
    check_memory,
    known_frame_indices,
    load_record,
    percentiles,
    prepare_file,
    prepare_scan,
    record_path,
    resample_inplane,
    restore_file,
    restore_scan,
    select_frames,
)

EXACT = PrepareConfig(size=24, depth=6, low_percentile=0, high_percentile=100)


def _scan(shape=(24, 24, 6, 8), **kwargs) -> Scan:
    return Scan(blob_series(shape, **kwargs), OBLIQUE, time_step=0.04)


def _filled(prepared: Scan, record) -> np.ndarray:
    """The prepared frames placed at their positions in the filled series."""
    out = np.zeros((*prepared.data.shape[:3], record.n_frames), np.float32)
    out[..., record.prepared_frames] = prepared.data
    return out


def test_select_frames_defaults_and_ranges() -> None:
    assert select_frames(30, PrepareConfig()) == [int(v) for v in np.round(np.linspace(0, 29, 12))]
    assert select_frames(30, PrepareConfig(frames=4)) == [0, 10, 19, 29]
    assert select_frames(30, PrepareConfig(start_frame=3, end_frame=9)) == list(range(3, 10))
    assert select_frames(30, PrepareConfig(start_frame=3, end_frame=9, frames=3)) == [3, 6, 9]
    assert select_frames(5, PrepareConfig(mode="upsample")) == [0, 1, 2, 3, 4]
    assert select_frames(7, PrepareConfig(mode="upsample", frames=4)) == [0, 2, 4, 6]


def test_upsample_mode_refuses_unevenly_spaced_frames() -> None:
    # 4 of 6 frames: 0, 2, 3, 5. Evaluate mode keeps them (the paper's protocol, scored only);
    # an upsampled series with one time step would put frames 2 and 3 at the wrong times.
    assert select_frames(6, PrepareConfig(frames=4)) == [0, 2, 3, 5]
    with pytest.raises(
        TsscError, match=r"are 0, 2, 3, 5 \(gaps of 1 and 2 frames\); --frames 2 or 6 spaces"
    ):
        select_frames(6, PrepareConfig(mode="upsample", frames=4))


@pytest.mark.parametrize(
    ("n", "config", "message"),
    [
        (8, PrepareConfig(), "fewer frames than needed"),
        (30, PrepareConfig(start_frame=4, end_frame=5), "at least 3 frames"),
        (30, PrepareConfig(start_frame=9, end_frame=3), "must come after"),
        (30, PrepareConfig(start_frame=40), "outside the series"),
        (1, PrepareConfig(mode="upsample"), "has 1 frame: a series of at least 2"),
    ],
)
def test_select_frames_errors(n: int, config: PrepareConfig, message: str) -> None:
    with pytest.raises(TsscError, match=message):
        select_frames(n, config)


def test_config_validation() -> None:
    with pytest.raises(TsscError, match="unknown mode"):
        PrepareConfig(mode="fast")
    with pytest.raises(TsscError, match="percentiles"):
        PrepareConfig(low_percentile=50, high_percentile=10)
    with pytest.raises(TsscError, match="evaluate mode needs at least 3 frames, 2 asked"):
        PrepareConfig(frames=2)
    assert PrepareConfig(mode="upsample", frames=2).frames == 2


def test_round_trip_is_exact_without_resampling() -> None:
    scan = _scan()
    config = replace(EXACT, frames=5)
    prepared, record = prepare_scan(scan, config, "s")
    assert prepared.data.dtype == np.float32
    assert prepared.data.min() == 0 and prepared.data.max() == 1
    restored = restore_scan(_filled(prepared, record), record)
    assert restored.data.dtype == np.int16
    np.testing.assert_array_equal(restored.data, scan.data[..., record.source_frames])
    np.testing.assert_array_equal(restored.affine, scan.affine)


@pytest.mark.parametrize("depth", [10, 11, 4, 3])
def test_depth_padding_and_cropping_are_centred_and_undone(depth: int) -> None:
    scan = _scan()
    prepared, record = prepare_scan(scan, replace(EXACT, depth=depth, frames=3), "s")
    assert prepared.data.shape == (24, 24, depth, 3)
    restored = restore_scan(_filled(prepared, record), record).data
    expected = scan.data[..., record.source_frames]
    if depth >= 6:
        pad = (depth - 6) // 2
        assert record.z_offset == pad
        assert not prepared.data[:, :, :pad].any() and not prepared.data[:, :, pad + 6 :].any()
        np.testing.assert_array_equal(restored, expected)
    else:
        start = (6 - depth) // 2
        kept = slice(start, start + depth)
        np.testing.assert_array_equal(restored[:, :, kept], expected[:, :, kept])
        # Dropped slices come back as background (the intensity that maps to 0).
        assert (
            np.delete(restored, np.arange(start, start + depth), axis=2) == scan.data.min()
        ).all()


def test_prepared_affine_overlays_the_source() -> None:
    scan = _scan((20, 30, 6, 4))
    prepared, record = prepare_scan(scan, replace(EXACT, size=40, depth=10, frames=3), "s")
    assert record.z_offset == 2
    # The outer edges of the field of view coincide; prepared slice k is source slice k - 2.
    pairs = [([-0.5, -0.5, 2], [-0.5, -0.5, 0]), ([39.5, 39.5, 7], [19.5, 29.5, 5])]
    for prepared_index, source_index in pairs:
        np.testing.assert_allclose(
            prepared.affine @ [*prepared_index, 1], scan.affine @ [*source_index, 1], atol=1e-9
        )


def test_resampling_round_trip_within_interpolation_error() -> None:
    scan = _scan((40, 40, 6, 4), scale=1000.0)
    config = PrepareConfig(size=64, depth=6, frames=3, low_percentile=0, high_percentile=100)
    prepared, record = prepare_scan(scan, config, "s")
    restored = restore_scan(_filled(prepared, record), record).data.astype(float)
    truth = scan.data[..., record.source_frames].astype(float)
    error = np.abs(restored - truth)
    # Linear interpolation of a smooth blob: a few percent of the range at most, far less
    # on average; noise (sigma 5) is blurred a little by the two interpolations.
    value_range = truth.max() - truth.min()
    assert error.max() < 0.04 * value_range
    assert error.mean() < 0.01 * value_range


def test_resample_keeps_field_of_view_and_constant_images() -> None:
    data = np.full((10, 12, 3), 7.0, np.float32)
    out = resample_inplane(data, (25, 6), antialias=True)
    assert out.shape == (25, 6, 3)
    np.testing.assert_allclose(out, 7.0, rtol=1e-5)
    ramp = np.broadcast_to(np.arange(10, dtype=np.float32)[:, None, None], (10, 4, 1))
    up = resample_inplane(np.ascontiguousarray(ramp), (20, 4), antialias=False)[:, 0, 0]
    # Pixel centres: output i sits at source (i + 0.5) / 2 - 0.5.
    np.testing.assert_allclose(up[1:-1], (np.arange(1, 19) + 0.5) / 2 - 0.5, atol=1e-5)


def test_robust_percentiles_clip() -> None:
    scan = _scan()
    scan.data[0, 0, 0, 0] = 30000
    config = replace(EXACT, low_percentile=1, high_percentile=99, frames=3)
    prepared, record = prepare_scan(scan, config, "s")
    assert record.intensity_high < 30000
    assert prepared.data.min() == 0 and prepared.data.max() == 1


def test_upsample_mode_positions_and_time_step() -> None:
    scan = _scan((24, 24, 6, 4))
    config = replace(EXACT, mode="upsample", frames_between=3)
    prepared, record = prepare_scan(scan, config, "s")
    assert record.n_frames == 3 * 4 + 1
    assert record.known_frames == record.prepared_frames == [0, 4, 8, 12]
    assert record.predicted_frames == [t for t in range(13) if t % 4]
    restored = restore_scan(_filled(prepared, record), record)
    assert restored.data.shape == (24, 24, 6, 13)
    assert restored.time_step == pytest.approx(0.01)
    np.testing.assert_array_equal(restored.data[..., ::4], scan.data)


def test_evaluate_mode_with_every_kth_frame_known() -> None:
    scan = _scan((24, 24, 6, 13))
    config = replace(EXACT, frames=13, known_every=3)
    prepared, record = prepare_scan(scan, config, "s")
    assert record.n_frames == 13 and record.prepared_frames == list(range(13))
    assert record.known_frames == [0, 3, 6, 9, 12]
    assert record.predicted_frames == [1, 2, 4, 5, 7, 8, 10, 11]
    assert record.config["known_every"] == 3
    np.testing.assert_array_equal(restore_scan(prepared.data, record).data, scan.data)
    # Not given, it is left out of the record: records of earlier versions compare equal.
    _, record = prepare_scan(scan, replace(EXACT, frames=13), "s")
    assert record.known_frames == [0, 12] and "known_every" not in record.config
    with pytest.raises(TsscError, match=r"5 needs .* got 13: --frames 6 or 11 \(spaced unevenly"):
        prepare_scan(scan, replace(EXACT, frames=13, known_every=5), "s")
    # Counts that space the frames evenly are the ones offered when there are some.
    with pytest.raises(TsscError, match=r"got 12: --frames 5 or 13 \(between frames 0 and 12\)"):
        prepare_scan(scan, replace(EXACT, frames=12, known_every=4), "s")
    with pytest.raises(TsscError, match="known_every is only used in evaluate mode"):
        PrepareConfig(mode="upsample", known_every=2)
    with pytest.raises(TsscError, match="known_every must be at least 2"):
        PrepareConfig(known_every=1)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.int8, np.float32])
@pytest.mark.parametrize("qs", [(0.5, 99.5), (0, 100), (1, 99), (13.7, 50)])
def test_percentiles_match_numpy(dtype, qs) -> None:
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if np.issubdtype(dtype, np.integer) else None
    low, high = (info.min, info.max) if info else (-500, 500)
    data = rng.integers(low, high, size=(7, 5, 3, 6), endpoint=True).astype(dtype)
    series = data[..., [0, 2, 5]].astype(np.float32)
    expected = np.percentile(series, qs)
    integer = info is not None and data.dtype.itemsize <= 2
    assert percentiles(series, qs, integer) == pytest.approx(tuple(expected), abs=1e-9)


def test_constant_scan_is_refused() -> None:
    scan = Scan(np.zeros((8, 8, 4, 12), np.int16), np.eye(4))
    with pytest.raises(TsscError, match="constant intensity"):
        prepare_scan(scan, PrepareConfig(size=8, depth=4), "s")


def test_almost_empty_scan_names_the_percentiles() -> None:
    data = np.zeros((8, 8, 4, 12), np.int16)
    data[0, 0, 0, :] = 100  # 12 of 3072 voxels: below the 99.5th percentile
    with pytest.raises(TsscError, match=r"0\.5 and 99\.5 percentiles .* --low-percentile 0"):
        prepare_scan(Scan(data, np.eye(4)), PrepareConfig(size=8, depth=4), "s")
    prepared, _ = prepare_scan(
        Scan(data, np.eye(4)), PrepareConfig(size=8, depth=4, high_percentile=100), "s"
    )
    assert prepared.data.max() == 1.0


def test_restore_keeps_intensities_in_the_prepared_range() -> None:
    prepared, record = prepare_scan(_scan(), replace(EXACT, frames=3), "s")
    beyond = prepared.data.copy()
    beyond[..., 1] = beyond[..., 1] * 1.5 - 0.25  # a method overshooting both ends
    before = beyond.copy()
    restored = restore_scan(beyond, record).data
    assert np.array_equal(beyond, before)  # the input is not clipped in place
    assert restored.min() >= record.intensity_low and restored.max() <= record.intensity_high
    assert restored[..., 1].min() == record.intensity_low  # reached, not passed
    exact = restore_scan(prepared.data, record).data
    assert np.array_equal(restored[..., [0, 2]], exact[..., [0, 2]])


def test_restore_checks_shape() -> None:
    prepared, record = prepare_scan(_scan(), replace(EXACT, frames=3), "s")
    with pytest.raises(TsscError, match="the record expects"):
        restore_scan(prepared.data[:, :, :, :2], record)


def test_restore_refuses_nan() -> None:
    # An integer output type would get an arbitrary value for NaN (0 here, once).
    prepared, record = prepare_scan(_scan(), replace(EXACT, frames=3), "s")
    broken = prepared.data.copy()
    broken[1, 2, 3, 1] = np.nan
    broken[0, 0, 0, 2] = np.inf
    with pytest.raises(TsscError, match=r"contains 2 NaN or infinite value\(s\) \(subject s\)"):
        restore_scan(broken, record)


def test_prepare_checks_a_scan_made_in_memory() -> None:
    # read_scan checks files; a scan built from the user's own loader gets the same checks.
    data = blob_series((24, 24, 6, 8), dtype=np.float32)
    data[3, 3, 3, 3] = np.nan
    with pytest.raises(TsscError, match=r"subject s: contains 1 NaN or infinite voxel\(s\)"):
        prepare_scan(Scan(data, OBLIQUE), EXACT, "s")
    with pytest.raises(TsscError, match="holds complex64 values"):
        prepare_scan(Scan(data.astype(np.complex64), OBLIQUE), EXACT, "s")
    with pytest.raises(TsscError, match="must be a NumPy array, got list"):
        prepare_scan(Scan(data.tolist(), OBLIQUE), EXACT, "s")  # type: ignore[arg-type]
    with pytest.raises(TsscError, match=r"is 3D \(24x24x6\), a 4D"):
        prepare_scan(Scan(data[..., 0], OBLIQUE), EXACT, "s")
    # Its id names files (chunks, scores): the rule of every other entry point.
    for subject in ("../escaped", ""):
        with pytest.raises(TsscError, match=r"has characters other than|is empty"):
            prepare_scan(_scan(), replace(EXACT, frames=3), subject)


def test_known_frame_indices() -> None:
    assert known_frame_indices([5, 0, np.int64(2), 0], 6) == [0, 2, 5]
    mask = np.array([True, False, False, False, False, True])
    with pytest.raises(TsscError, match="got a boolean mask"):
        known_frame_indices(mask, 6)  # would read as frames 0 and 1
    with pytest.raises(TsscError, match=r"integer frame indices, got 1\.5"):
        known_frame_indices([0, 1.5], 6)
    with pytest.raises(TsscError, match=r"known frame\(s\) \[6\] outside the series' 6 frames"):
        known_frame_indices([0, 6], 6)


def test_files_round_trip_and_record(tmp_path: Path, scan_file: Path) -> None:
    config = PrepareConfig(size=32, depth=8, frames=4)
    image, rec_path = prepare_file(scan_file, tmp_path / "p" / "s1.nii.gz", config, "s1")
    assert rec_path == record_path(image) == tmp_path / "p" / "s1.json"
    record = load_record(rec_path)
    assert record.subject == "s1" and record.config == config.to_dict()
    assert read_scan(image).data.shape == (32, 32, 8, 4)
    prepared = read_scan(image)
    filled = write_scan(prepared.replace(data=_filled(prepared, record)), tmp_path / "f.nii.gz")
    out = restore_file(filled, rec_path, tmp_path / "restored.nii.gz")
    restored = read_scan(out)
    assert restored.data.shape == (24, 20, 6, 4)
    np.testing.assert_array_equal(restored.affine, read_scan(scan_file).affine)
    with pytest.raises(TsscError, match="output exists"):
        prepare_file(scan_file, image, config, "s1")
    assert leftovers(tmp_path) == []


def test_prepare_file_errors_name_the_scan(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "short.nii.gz", blob_series((8, 8, 4, 5)))
    with pytest.raises(TsscError, match="fewer frames than needed") as info:
        prepare_file(path, tmp_path / "out.nii.gz", PrepareConfig(size=8, depth=4))
    assert str(path) in str(info.value)
    with pytest.raises(TsscError, match="subject id"):
        prepare_file(path, tmp_path / "out.nii.gz", PrepareConfig(size=8, depth=4), "a b")
    assert list(tmp_path.iterdir()) == [path]


def test_bad_records(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text("{not json")
    with pytest.raises(TsscError, match="not a JSON"):
        load_record(path)
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(TsscError, match="not a tssc preparation record"):
        load_record(path)
    path.write_text(json.dumps({"version": 1, "subject": "x"}))
    with pytest.raises(TsscError, match="malformed"):
        load_record(path)


def test_records_of_a_newer_tssc_are_named_as_such(tmp_path: Path, scan_file: Path) -> None:
    """Fields a later version adds (``known_every`` was one) give one line naming them."""
    config = PrepareConfig(size=8, depth=4, frames=4)
    _, rec_path = prepare_file(scan_file, tmp_path / "s1.nii.gz", config)
    data = json.loads(rec_path.read_text())
    newer = {**data, "phase": 1, "config": {**data["config"], "tilt": 2}}
    rec_path.write_text(json.dumps(newer))
    with pytest.raises(TsscError, match=r"holds phase, config.tilt, unknown to this version"):
        load_record(rec_path)
    rec_path.write_text(json.dumps({**data, "config": {**data["config"], "known_every": 3}}))
    assert load_record(rec_path).config["known_every"] == 3
    rec_path.write_text(json.dumps({**data, "config": [8, 4]}))
    with pytest.raises(TsscError, match="malformed"):
        load_record(rec_path)


EXACT16 = PrepareConfig(size=16, depth=4, frames=8, low_percentile=0, high_percentile=100)


def _round_trip(path: Path, out: Path, config: PrepareConfig = EXACT16) -> nib.Nifti1Image:
    """Prepare the scan at ``path``, restore it unchanged, write it to ``out``; load that."""
    prepared, record = prepare_scan(read_scan(path), config, "s")
    return nib.load(write_scan(restore_scan(prepared.data, record), out))


def test_scaled_integer_scans_come_back_as_their_stored_integers(tmp_path: Path) -> None:
    raw = blob_series((16, 16, 4, 8))
    img = nib.Nifti1Image(raw, np.diag([1.5, 1.5, 8, 1]))
    img.header.set_slope_inter(2.5, -100)  # as scanner exports store them
    nib.save(img, tmp_path / "scaled.nii.gz")
    back = _round_trip(tmp_path / "scaled.nii.gz", tmp_path / "back.nii.gz")
    assert back.get_data_dtype() == np.int16
    assert (float(back.dataobj.slope), float(back.dataobj.inter)) == (2.5, -100.0)
    np.testing.assert_array_equal(back.dataobj.get_unscaled(), raw)


def test_nifti2_and_odd_headers_round_trip(tmp_path: Path) -> None:
    raw = blob_series((16, 16, 4, 8))
    nib.save(nib.Nifti2Image(raw, OBLIQUE), tmp_path / "n2.nii.gz")
    back = _round_trip(tmp_path / "n2.nii.gz", tmp_path / "BACK.NII.GZ")  # upper-case suffix
    assert isinstance(back, nib.Nifti2Image)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), raw)
    np.testing.assert_allclose(back.affine, OBLIQUE)
    # A negative time step (some writers store one) is read as its size.
    img = nib.Nifti1Image(raw, OBLIQUE)
    img.header["pixdim"][4] = -30
    nib.save(img, tmp_path / "neg.nii")
    assert read_scan(tmp_path / "neg.nii").time_step == 30
    assert _round_trip(tmp_path / "neg.nii", tmp_path / "neg_back.nii").header.get_zooms()[3] == 30


def test_restored_series_starts_at_its_first_frame(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "s.nii", blob_series((16, 16, 4, 10)), time_step=0.04)
    back = _round_trip(path, tmp_path / "b.nii", replace(EXACT16, start_frame=3, frames=None))
    assert back.shape[3] == 7
    assert float(back.header["toffset"]) == pytest.approx(3 * 0.04)


def test_restore_refuses_another_subjects_series(tmp_path: Path) -> None:
    paths = {}
    for name, affine in (("a", OBLIQUE), ("b", np.diag([1.0, 1.0, 2.0, 1.0]))):
        scan = write_nifti(tmp_path / f"{name}.nii.gz", blob_series((16, 16, 4, 8)), affine)
        paths[name], _ = prepare_file(scan, tmp_path / "prep" / f"{name}.nii", EXACT16)
    # The same shape, but b's series placed where b is: not a's.
    with pytest.raises(TsscError, match=r"b\.nii: does not lie where the record's prepared"):
        restore_file(paths["b"], record_path(paths["a"]), tmp_path / "x.nii")
    restore_file(paths["a"], record_path(paths["a"]), tmp_path / "a_back.nii")


@pytest.mark.parametrize(
    ("name", "limit"),
    [("size", MAX_SIZE), ("depth", MAX_DEPTH), ("frames_between", MAX_FRAMES_BETWEEN)],
)
def test_config_upper_bounds(name: str, limit: int) -> None:
    assert getattr(PrepareConfig(**{name: limit}), name) == limit
    for bad in (limit + 1, 10**12, 0, 64.0):
        with pytest.raises(TsscError, match=rf"{name} must be an integer from 1 to {limit}, got"):
            PrepareConfig(**{name: bad})


def test_memory_estimate_is_checked_before_work(monkeypatch: pytest.MonkeyPatch) -> None:
    upsample = PrepareConfig(mode="upsample", size=64, depth=8, frames_between=9)
    # 2 chosen frames, 9 between: 11 frames of 64x64x8 and of the scan's 24x24x6, float32.
    needed = 11 * (64 * 64 * 8 + 24 * 24 * 6) * 4
    monkeypatch.setattr("tssc_py.memory.physical_memory", lambda: needed)
    check_memory(upsample, (24, 24, 6, 2))
    monkeypatch.setattr("tssc_py.memory.physical_memory", lambda: needed - 1)
    message = (
        r"^the filled series \(11 frames of 64x64x8 for --size 64, --depth 8, 2 chosen frames "
        r"and --frames-between 9; as many on the scan's 24x24x6 grid\) needs about 0.00159 GB "
        r"of memory, more than this machine's 0.00159 GB$"
    )
    with pytest.raises(TsscError, match=message):
        check_memory(upsample, (24, 24, 6, 2))

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("prepared before the memory check")

    monkeypatch.setattr("tssc_py.memory.physical_memory", lambda: 1000)
    monkeypatch.setattr("tssc_py.prepare.percentiles", no_work)
    with pytest.raises(TsscError, match=r"series \(8 frames of 24x24x6 for --size 24, --depth 6;"):
        prepare_scan(_scan(), replace(EXACT, frames=8), "s")
    # The frame choice is checked first: its error, not an estimate of a choice that fails.
    with pytest.raises(TsscError, match="fewer frames than needed"):
        check_memory(replace(EXACT, frames=9), (24, 24, 6, 8))


SMALL = PrepareConfig(size=16, depth=6, frames=4)


@pytest.mark.parametrize("subject", ["../../ESCAPED", "/tmp/ESCAPED", ".hidden", "a" * 101])
def test_a_records_subject_is_checked_on_load(
    tmp_path: Path, scan_file: Path, subject: str
) -> None:
    _, rec_path = prepare_file(scan_file, tmp_path / "p" / "s.nii", SMALL)
    data = json.loads(rec_path.read_text())
    rec_path.write_text(json.dumps({**data, "subject": subject}))
    with pytest.raises(TsscError, match=r"s\.json: the record's subject id"):
        load_record(rec_path)


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("tssc-split", ["--prepared", "{p}/s.nii", "--record", "{p}/s.json", "--out", "{o}"]),
        (
            "tssc-metrics",
            [
                *("--prediction", "{p}/s.nii", "--truth", "{p}/s.nii"),
                *("--record", "{p}/s.json", "--method", "linear", "--out", "{o}"),
            ],
        ),
    ],
)
def test_a_record_cannot_make_a_step_write_outside_its_out(
    tmp_path: Path, scan_file: Path, tool: str, args: list[str]
) -> None:
    prepared = tmp_path / "p"
    _, rec_path = prepare_file(scan_file, prepared / "s.nii", SMALL)
    data = json.loads(rec_path.read_text())
    rec_path.write_text(json.dumps({**data, "subject": "../../ESCAPED"}))
    out = tmp_path / "deep" / "er" / "out"
    given = [a.format(p=prepared, o=out) for a in args]
    assert_one_line_error(run_cli(tool, *given, check=False), "the record's subject id")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["p", "s.json", "s.nii", "scan.nii.gz"]


def test_restore_refuses_a_raw_scan_of_the_prepared_grid(tmp_path: Path) -> None:
    # Prepared at the scan's own size and depth, the prepared grid is the scan's: only the
    # values tell a raw scan from a filled series.
    scan = write_nifti(tmp_path / "s.nii.gz", blob_series((16, 16, 6, 6)))
    image, rec_path = prepare_file(
        scan, tmp_path / "p.nii", PrepareConfig(size=16, depth=6, frames=6)
    )
    proc = run_cli(
        "tssc-restore",
        "--filled",
        scan,
        "--record",
        rec_path,
        "--out",
        tmp_path / "r.nii.gz",
        check=False,
    )
    assert_one_line_error(proc, "s.nii.gz: its known frames hold int16 values", "a raw scan?")
    assert not (tmp_path / "r.nii.gz").exists()
    run_cli("tssc-restore", "--filled", image, "--record", rec_path, "--out", tmp_path / "r.nii")


@pytest.mark.parametrize(
    "change",
    [
        {"n_frames": 10**9},  # restoring would allocate 10**9 frames
        {"original_shape": [24, 20, 6]},
        {"original_shape": [24, 20, 6, 40]},  # other frames than the record's
        {"known_frames": [0, 2]},
    ],
)
def test_a_record_whose_sizes_do_not_follow_from_it_is_refused(
    tmp_path: Path, scan_file: Path, change: dict
) -> None:
    _, rec_path = prepare_file(scan_file, tmp_path / "s.nii", SMALL)
    data = json.loads(rec_path.read_text())
    rec_path.write_text(json.dumps({**data, **change}))
    with pytest.raises(TsscError, match=r"s\.json: the record's"):
        load_record(rec_path)


def test_restoring_to_a_grid_beyond_memory_is_refused_first(
    tmp_path: Path, scan_file: Path
) -> None:
    image, rec_path = prepare_file(scan_file, tmp_path / "s.nii", SMALL)
    data = json.loads(rec_path.read_text())
    rec_path.write_text(json.dumps({**data, "original_shape": [10**5, 10**5, 1000, 8]}))
    filled = write_scan(read_scan(image), tmp_path / "f.nii")
    proc = run_cli(
        "tssc-restore", "--filled", filled, "--record", rec_path, "--out", tmp_path / "r.nii",
        check=False,
    )  # fmt: skip
    assert_one_line_error(proc, "on the scan's 100000x100000x1000 grid) needs about")
