"""4D read/write keeps data and geometry; bad files give one clear error."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile
import warnings
from importlib.resources import files
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import (
    BIN,
    OBLIQUE,
    REPO,
    assert_one_line_error,
    blob_series,
    leftovers,
    run_cli,
    write_nifti,
)
from tssc_py.errors import TsscError
from tssc_py.io import (
    Scan,
    check_scan,
    default_subject,
    read_scan,
    scan_digest,
    scan_files,
    scan_shape,
    scan_suffix,
    write_scan,
)

EXAMPLE4D = Path(str(files("nibabel") / "tests" / "data" / "example4d.nii.gz"))


def _header_geometry(path: Path) -> dict:
    header = nib.load(path).header
    return {
        "qform": header.get_qform(),
        "sform": header.get_sform(),
        "codes": (int(header["qform_code"]), int(header["sform_code"])),
        "zooms": header.get_zooms(),
        "units": header.get_xyzt_units(),
        "dim": tuple(header["dim"]),
        "dtype": header.get_data_dtype(),
    }


def _assert_same_nifti(a: Path, b: Path) -> None:
    np.testing.assert_array_equal(np.asanyarray(nib.load(a).dataobj), nib.load(b).dataobj)
    ga, gb = _header_geometry(a), _header_geometry(b)
    for key in ga:
        np.testing.assert_array_equal(ga[key], gb[key], err_msg=key)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_is_exact(tmp_path: Path, suffix: str) -> None:
    source = write_nifti(tmp_path / f"in{suffix}", blob_series())
    out = write_scan(read_scan(source), tmp_path / f"out{suffix}")
    _assert_same_nifti(source, out)


def test_nibabel_example4d_round_trip_is_exact(tmp_path: Path) -> None:
    scan = read_scan(EXAMPLE4D)
    assert scan.data.dtype == np.int16 and scan.data.shape == (128, 96, 24, 2)
    assert not np.allclose(scan.affine[:3, :3], np.diag(np.diag(scan.affine[:3, :3])))
    out = write_scan(scan, tmp_path / "example4d.nii.gz")
    _assert_same_nifti(EXAMPLE4D, out)
    assert read_scan(out).time_step == scan.time_step


def _itk_4d(path: Path) -> sitk.Image:
    """Write an oblique 4D ITK image and return it as read back (the file's exact numbers)."""
    data = blob_series((12, 10, 5, 4))
    image = sitk.GetImageFromArray(data.transpose(3, 2, 1, 0), isVector=False)
    image.SetSpacing((1.25, 1.3, 6.0, 0.05))
    image.SetOrigin((10.5, -20.25, 33.0, 0.5))
    angle = 0.3
    direction = np.eye(4)
    direction[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    image.SetDirection(tuple(direction.ravel()))
    sitk.WriteImage(image, str(path))
    return sitk.ReadImage(str(path))


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_itk_round_trip_is_exact(tmp_path: Path, suffix: str) -> None:
    source = _itk_4d(tmp_path / f"in{suffix}")
    scan = read_scan(tmp_path / f"in{suffix}")
    assert scan.data.shape == (12, 10, 5, 4)
    assert scan.time_step == pytest.approx(0.05)
    out = sitk.ReadImage(str(write_scan(scan, tmp_path / f"out{suffix}")))
    assert out.GetOrigin() == source.GetOrigin()
    assert out.GetSpacing() == source.GetSpacing()
    assert out.GetDirection() == source.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(out), sitk.GetArrayFromImage(source))


def test_itk_and_nifti_agree_on_world_coordinates(tmp_path: Path) -> None:
    _itk_4d(tmp_path / "in.mha")
    scan = read_scan(tmp_path / "in.mha")
    nifti = read_scan(write_scan(scan, tmp_path / "as.nii.gz"))
    np.testing.assert_allclose(nifti.affine, scan.affine, atol=1e-5)
    np.testing.assert_array_equal(nifti.data, scan.data)
    back = read_scan(write_scan(nifti.replace(itk=None), tmp_path / "back.mha"))
    np.testing.assert_allclose(back.affine, scan.affine, atol=1e-5)


def test_scan_spacing_and_suffix_helpers(tmp_path: Path) -> None:
    scan = Scan(np.zeros((2, 2, 2, 2), np.float32), OBLIQUE)
    assert scan.spacing == pytest.approx(tuple(np.linalg.norm(OBLIQUE[:3, :3], axis=0)))
    assert default_subject("a/b/sub-01.nii.gz") == "sub-01"
    assert default_subject("x.y.MHA") == "x.y"
    assert scan_suffix("a.mhd") == ".mha" and scan_suffix("a.nii.gz") == ".nii.gz"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TsscError, match="no such file") as info:
        read_scan(tmp_path / "nope.nii.gz")
    assert "nope.nii.gz" in str(info.value)


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "junk.nii.gz"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(TsscError, match="not a readable image"):
        read_scan(path)
    plain = tmp_path / "junk.nii"
    plain.write_bytes(np.random.default_rng(1).bytes(5000))
    with pytest.raises(TsscError, match="not a readable image"):
        read_scan(plain)


def test_truncated_gzip(tmp_path: Path, scan_file: Path) -> None:
    raw = scan_file.read_bytes()
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(TsscError, match="not a readable image"):
        read_scan(path)


def test_truncated_uncompressed(tmp_path: Path, scan_file: Path) -> None:
    path = tmp_path / "cut.nii"
    path.write_bytes(gzip.decompress(scan_file.read_bytes())[:1000])
    _refused(path, "header claims 46,080 bytes of voxel data from byte 352, more than the")


def test_3d_where_4d_needed(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "vol.nii.gz", blob_series()[..., 0])
    with pytest.raises(TsscError, match=r"is 3D .* 4D"):
        read_scan(path)
    assert read_scan(path, ndim=3).data.ndim == 3


def test_nan_and_inf_voxels(tmp_path: Path) -> None:
    data = blob_series().astype(np.float32)
    data[1, 2, 3, 4] = np.nan
    data[0, 0, 0, 0] = np.inf
    with pytest.raises(TsscError, match="2 NaN or infinite"):
        read_scan(write_nifti(tmp_path / "nan.nii.gz", data))


def test_write_refuses_what_read_would_refuse(tmp_path: Path) -> None:
    data = blob_series((8, 8, 2, 3)).astype(np.float32)
    data[1, 1, 1, 1] = np.nan
    with pytest.raises(TsscError, match=r"nan.nii.gz: contains 1 NaN or infinite voxel\(s\)"):
        write_scan(Scan(data, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(TsscError, match="holds bool values"):
        write_scan(Scan(data > 0, np.eye(4)), tmp_path / "mask.nii.gz")
    assert not list(tmp_path.iterdir())  # nothing written that could not be read back


def test_values_that_are_not_real_numbers_are_refused(tmp_path: Path) -> None:
    data = blob_series((8, 8, 2, 3))
    complex_path = write_nifti(tmp_path / "c.nii", data.astype(np.complex64))
    with pytest.raises(TsscError, match="holds complex64 values; an image of real numbers"):
        read_scan(complex_path)
    rgb = np.zeros((8, 8, 2, 3), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    with pytest.raises(TsscError, match="an image of real numbers"):
        read_scan(write_nifti(tmp_path / "rgb.nii", rgb))
    with pytest.raises(TsscError, match="beyond the float32 range"):
        read_scan(write_nifti(tmp_path / "huge.nii", data.astype(np.float64) * 1e36))


def test_mixed_case_nifti_suffixes_are_refused(tmp_path: Path, scan_file: Path) -> None:
    scan = read_scan(scan_file)
    with pytest.raises(TsscError, match=r"write the suffix \.Nii\.Gz as \.nii\.gz or \.NII\.GZ"):
        write_scan(scan, tmp_path / "x.Nii.Gz")
    (tmp_path / "x.Nii").write_bytes(scan_file.read_bytes())
    with pytest.raises(TsscError, match=r"write the suffix \.Nii as"):
        read_scan(tmp_path / "x.Nii")


def test_degenerate_geometry_is_refused(tmp_path: Path) -> None:
    img = nib.Nifti1Image(blob_series((8, 8, 2, 3)), None)
    img.set_sform(np.diag([1.5, 1.5, 0, 1]), code=2)  # a zero slice spacing
    path = tmp_path / "flat.nii"
    nib.save(img, path)
    with pytest.raises(TsscError, match="degenerate voxel-to-world matrix"):
        read_scan(path)


def test_unwritable_output_folders_are_one_error(tmp_path: Path, scan_file: Path) -> None:
    scan = read_scan(scan_file)
    (tmp_path / "afile").write_text("")
    with pytest.raises(TsscError, match=r"afile: is not a folder and cannot become one"):
        write_scan(scan, tmp_path / "afile" / "x.nii")
    with pytest.raises(TsscError, match=r"\(.*afile is a file\)"):
        write_scan(scan, tmp_path / "afile" / "deeper" / "x.nii")


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"x")
    with pytest.raises(TsscError, match="unsupported file type"):
        read_scan(path)
    with pytest.raises(TsscError, match=r"unsupported output type; use one of .*\.nrrd$"):
        write_scan(Scan(np.zeros((2, 2, 2, 2)), np.eye(4)), tmp_path / "out.png")
    with pytest.raises(TsscError, match="detached-header outputs are not supported"):
        write_scan(Scan(np.zeros((2, 2, 2, 2)), np.eye(4)), tmp_path / "out.mhd")


def test_existing_output_is_refused_unless_overwrite(tmp_path: Path, scan_file: Path) -> None:
    scan = read_scan(scan_file)
    out = tmp_path / "out.nii.gz"
    out.write_bytes(b"keep me")
    with pytest.raises(TsscError, match="output exists"):
        write_scan(scan, out)
    assert out.read_bytes() == b"keep me"
    write_scan(scan, out, overwrite=True)
    np.testing.assert_array_equal(read_scan(out).data, scan.data)
    assert leftovers(tmp_path) == []


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A write that fails half way (a full disk): its partial temporary file goes too.
    def half_then_fail(image: object, path: str | Path) -> None:
        Path(path).write_bytes(b"\x00" * 100)
        raise OSError("No space left on device")

    monkeypatch.setattr(nib, "save", half_then_fail)
    scan = Scan(np.zeros((2, 2, 2, 2), dtype=np.float32), np.eye(4))
    with pytest.raises(OSError, match="No space left"):
        write_scan(scan, tmp_path / "bad.nii.gz")
    assert list(tmp_path.iterdir()) == []


# --- damaged and hostile files -------------------------------------------------------------


def _edited(source: Path, out: Path, **fields: object) -> Path:
    """``source`` (an uncompressed NIfTI-1 or -2 file) written to ``out`` with header fields set
    byte for byte, as a damaged or hostile writer would (gzip-compressed for ``.gz``).

    A field's value is a number, or ``{index: number}`` for elements of an array field.
    """
    raw = bytearray(source.read_bytes())
    header = np.frombuffer(raw, nib.load(source).header.structarr.dtype, count=1)
    for name, value in fields.items():
        for index, number in (value if isinstance(value, dict) else {(): value}).items():
            header[name][(0, *np.atleast_1d(index))] = number
    out.write_bytes(gzip.compress(bytes(raw)) if out.name.endswith(".gz") else bytes(raw))
    return out


def _itk_blob(path: Path, compress: bool = False) -> Path:
    """A 12x10x5x4 blob series written by SimpleITK (``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``)."""
    data = blob_series((12, 10, 5, 4))
    image = sitk.GetImageFromArray(data.transpose(3, 2, 1, 0), isVector=False)
    sitk.WriteImage(image, str(path), useCompression=compress)
    return path


def _refused(path: Path, *fragments: str) -> None:
    """Both the header check and the full read refuse ``path`` with one error naming it."""
    for read in (scan_shape, read_scan):
        with pytest.raises(TsscError) as info:
            read(path)
        assert info.value.path == path
        for fragment in fragments:
            assert fragment in info.value.message, info.value.message


def _prepare_cli(scan: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    return run_cli(
        "tssc-prepare",
        "--scan",
        scan,
        "--out",
        tmp_path / "p.nii",
        "--size",
        16,
        "--depth",
        4,
        check=False,
    )


@pytest.mark.parametrize("where", ["data", "crc", "length"])
def test_corrupt_gzip_nifti_is_refused(tmp_path: Path, where: str) -> None:
    # Stored (level-0) deflate blocks: a changed voxel byte decodes without complaint, and
    # only the gzip trailer's CRC can tell; the trailer is read only by going to its end.
    plain = write_nifti(tmp_path / "s.nii", blob_series((12, 10, 5, 4)))
    raw = bytearray(gzip.compress(plain.read_bytes(), compresslevel=0))
    raw[{"data": len(raw) // 2, "crc": -6, "length": -2}[where]] ^= 0x10
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(raw)
    with pytest.raises(TsscError, match="not a readable image") as info:
        read_scan(path)
    assert info.value.path == path


def test_corrupt_gzip_nifti_is_one_line_from_a_cli(tmp_path: Path) -> None:
    plain = write_nifti(tmp_path / "s.nii", blob_series((12, 10, 5, 14)))
    raw = bytearray(gzip.compress(plain.read_bytes(), compresslevel=0))
    raw[-6] ^= 0x10
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(raw)
    assert_one_line_error(_prepare_cli(path, tmp_path), str(path), "CRC check failed")


@pytest.mark.parametrize(
    ("suffix", "where"), [(".mha", "data"), (".mha", "checksum"), (".nrrd", "length")]
)
def test_corrupt_compressed_itk_is_refused(tmp_path: Path, suffix: str, where: str) -> None:
    # MetaIO prints "Uncompress failed" and returns what it has; teem does not check a gzip
    # member's length.
    raw = bytearray(_itk_blob(tmp_path / f"s{suffix}", compress=True).read_bytes())
    raw[{"data": -len(raw) // 3, "checksum": -1, "length": -2}[where]] ^= 0x10
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(raw)
    with pytest.raises(TsscError, match="not a readable image") as info:
        read_scan(path)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("compress", "message"),
    [(False, "more than the file holds"), (True, "compressed data end early")],
)
def test_truncated_mha_is_one_line_from_a_cli(tmp_path: Path, compress: bool, message: str) -> None:
    raw = _itk_blob(tmp_path / "s.mha", compress).read_bytes()
    path = tmp_path / "cut.mha"
    path.write_bytes(raw[: len(raw) * 2 // 3])
    assert_one_line_error(_prepare_cli(path, tmp_path), str(path), message)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # MetaIO writes four lines of its own to stderr, then ITK raises.
        ((b"ElementType = MET_SHORT\n", b""), "ElementType required and not defined"),
        # MetaIO overruns its arrays: the process aborts.
        ((b"NDims = 4", b"NDims = 84"), "NDims = 84"),
        # MetaIO formats file names with the pattern as given.
        ((b"= LOCAL", b"= s%03d.raw 1 4 1"), "list or pattern of data files"),
    ],
    ids=["missing-type", "dimensions", "pattern"],
)
def test_damaged_mha_header_is_one_line_from_a_cli(
    tmp_path: Path, change: tuple[bytes, bytes], message: str
) -> None:
    path = tmp_path / "bad.mha"
    path.write_bytes(_itk_blob(tmp_path / "s.mha").read_bytes().replace(*change))
    assert_one_line_error(_prepare_cli(path, tmp_path), str(path), message)


def _nifti2(path: Path) -> Path:
    img = nib.Nifti2Image(blob_series((8, 8, 3, 4)), OBLIQUE)
    nib.save(img, path)
    return path


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("claim.nii", "more than the"),
        ("claim.nii.gz", "more than"),
        ("nifti2.nii", "half this machine's memory"),
        ("claim.mha", "more than the"),
        ("claim.mhd", "more than the"),
        ("compressed.mha", "more than"),
        ("claim.nrrd", "more than the"),
    ],
)
def test_header_claiming_more_data_than_the_file_holds(
    tmp_path: Path, name: str, message: str
) -> None:
    if name.startswith("nifti2"):
        path = _edited(_nifti2(tmp_path / "s.nii"), tmp_path / name, dim={1: 10**5, 2: 10**5})
    elif name.startswith("claim.nii"):
        source = write_nifti(tmp_path / "s.nii", blob_series((12, 8, 3, 4)))
        path = _edited(source, tmp_path / name, dim={1: 1024, 2: 1024, 3: 100, 4: 8})
    else:
        suffix = Path(name).suffix
        _itk_blob(tmp_path / f"s{suffix}", compress=name.startswith("compressed"))
        for source in tmp_path.glob("s.*"):
            raw = source.read_bytes()
            for sizes in (b"DimSize = 12 10 5 4", b"sizes: 12 10 5 4"):
                raw = raw.replace(sizes, sizes.replace(b"12 10", b"1024 1024"))
            (tmp_path / f"{Path(name).stem}{source.suffix}").write_bytes(
                raw.replace(b"= s.", b"= claim.")
            )
        path = tmp_path / name
    _refused(path, "header claims", message)


def _run_measured(name: str, *args: object) -> tuple[subprocess.CompletedProcess, int]:
    """Run ``bin/NAME`` as run_cli does; the result and the process's peak memory (bytes)."""
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(BIN / name), *map(str, args)],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
        # wait4, not wait: it reports this child's own peak resident memory (kB on Linux).
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        stderr.seek(0)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr.read().decode())
    return done, usage.ru_maxrss * 1024


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in kB on Linux")
def test_a_header_claim_is_not_allocated(tmp_path: Path) -> None:
    # 100 kB of gzip claiming 3.4 GB.
    source = write_nifti(tmp_path / "s.nii", blob_series((32, 32, 8, 12)))
    claim = 1024 * 1024 * 200 * 8 * 2
    path = _edited(source, tmp_path / "claim.nii.gz", dim={1: 1024, 2: 1024, 3: 200, 4: 8})
    proc, peak = _run_measured(
        "tssc-prepare", "--scan", path, "--out", tmp_path / "p.nii", "--size", 16, "--depth", 4
    )
    assert_one_line_error(proc, str(path), "header claims")
    # Against the same command on the whole file (the interpreter, torch and the small scan):
    # refusing the claim costs no more.
    done, baseline = _run_measured(
        "tssc-prepare", "--scan", source, "--out", tmp_path / "q.nii", "--size", 16, "--depth", 4
    )
    assert done.returncode == 0, done.stderr
    assert peak < baseline + claim / 20, (peak, baseline)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"datatype": 255}, "data code 255"),
        ({"dim": {0: 8}}, "not a readable image"),  # read as the other byte order
        ({"dim": {2: -8}}, "negative"),
        ({"xyzt_units": 7}, "units"),
        ({"scl_slope": 2.0, "scl_inter": np.inf}, "intercept"),
        ({"vox_offset": 1e30}, "header claims"),
    ],
    ids=["datatype", "dim0", "negative-dim", "units", "intercept", "offset"],
)
def test_hostile_header_values_are_one_error(tmp_path: Path, fields: dict, message: str) -> None:
    source = write_nifti(tmp_path / "s.nii", blob_series((8, 8, 3, 4)))
    for suffix in (".nii", ".nii.gz"):
        _refused(_edited(source, tmp_path / f"bad{suffix}", **fields), message)


def test_hostile_header_is_one_line_from_a_cli(tmp_path: Path) -> None:
    # nibabel logs what it finds wrong with a header to stderr, before raising.
    source = write_nifti(tmp_path / "s.nii", blob_series((12, 10, 5, 14)))
    path = _edited(source, tmp_path / "bad.nii.gz", datatype=255, pixdim={1: -1.4})
    assert_one_line_error(_prepare_cli(path, tmp_path), str(path), "data code 255")


@pytest.mark.parametrize(
    "fields",
    [
        {"srow_x": {0: np.nan}},
        {"srow_z": {3: np.inf}},
        {"sform_code": 0, "qform_code": 1, "quatern_b": np.nan},
        {"sform_code": 0, "qform_code": 1, "qoffset_x": np.inf},
    ],
    ids=["sform-nan", "sform-inf", "qform-nan", "qform-inf"],
)
def test_non_finite_affine_is_refused(tmp_path: Path, fields: dict) -> None:
    source = write_nifti(tmp_path / "s.nii", blob_series((8, 8, 3, 4)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from a determinant of NaN
        _refused(_edited(source, tmp_path / "bad.nii", **fields), "NaN or infinite")


def test_non_finite_affine_or_time_step_in_memory_is_refused(tmp_path: Path) -> None:
    scan = Scan(blob_series((8, 8, 3, 4)), OBLIQUE.copy())
    scan.affine[1, 3] = np.nan
    with pytest.raises(TsscError, match=r"^s1: .*NaN or infinite"):
        check_scan(scan, "s1")
    with pytest.raises(TsscError, match="time step"):
        write_scan(scan.replace(affine=OBLIQUE, time_step=np.inf), tmp_path / "x.nii")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("step", [np.nan, np.inf, -np.inf])
def test_non_finite_time_step_is_refused(tmp_path: Path, step: float) -> None:
    source = write_nifti(tmp_path / "s.nii", blob_series((8, 8, 3, 4)))
    _refused(_edited(source, tmp_path / "bad.nii.gz", pixdim={4: step}), "time step", "pixdim[4]")
    # Zero means unknown in NIfTI: kept, and written back.
    scan = read_scan(_edited(source, tmp_path / "zero.nii.gz", pixdim={4: 0.0}))
    assert read_scan(write_scan(scan, tmp_path / "out.nii")).time_step == 0.0


def test_non_finite_time_step_is_one_line_from_a_cli(tmp_path: Path) -> None:
    source = write_nifti(tmp_path / "s.nii", blob_series((12, 10, 5, 14)))
    path = _edited(source, tmp_path / "bad.nii.gz", pixdim={4: np.nan})
    assert_one_line_error(_prepare_cli(path, tmp_path), str(path), "time step")


def test_random_header_damage_is_a_scan_or_one_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    # (file, header bytes, damaged copy): NIfTI-1 and -2, plain and gzip, MetaImage and NRRD.
    cases = []
    nifti1 = write_nifti(tmp_path / "s1.nii", blob_series((8, 8, 3, 4)))
    for plain in (nifti1, _nifti2(tmp_path / "s2.nii")):
        size = nib.load(plain).header.sizeof_hdr
        cases += [
            (plain, size, tmp_path / "damaged.nii"),
            (plain, size, tmp_path / "damaged.nii.gz"),
        ]
    for name, end in (("s.mha", b"LOCAL\n"), ("s.nrrd", b"\n\n")):
        itk = _itk_blob(tmp_path / name, compress=True)
        cases.append((itk, itk.read_bytes().index(end), tmp_path / f"damaged{itk.suffix}"))
    for i in range(96):
        source, size, path = cases[i % len(cases)]
        raw = bytearray(source.read_bytes())
        for at in rng.integers(0, size, size=rng.integers(1, 4)):
            raw[at] = rng.integers(0, 256)
        path.write_bytes(gzip.compress(bytes(raw), 1) if path.suffix == ".gz" else bytes(raw))
        for read in (scan_shape, read_scan):
            try:
                read(path)
            except TsscError as exc:
                assert exc.path == path


@pytest.mark.parametrize(("suffix", "data"), [(".mhd", ".raw"), (".nhdr", ".raw.gz")])
def test_a_detached_scan_is_its_header_and_data_file(
    tmp_path: Path, suffix: str, data: str
) -> None:
    header = _itk_blob(tmp_path / f"s{suffix}", compress=data.endswith(".gz"))
    (raw,) = [p for p in tmp_path.iterdir() if p != header]
    assert scan_files(header) == [header, raw] and scan_files(tmp_path / "a.nii") == [
        tmp_path / "a.nii"
    ]
    before = scan_digest(header)
    # Data replaced in place, header unchanged: another scan.
    raw.write_bytes(raw.read_bytes()[::-1])
    assert scan_digest(header) != before
