"""4D read/write keeps data and geometry; bad files give one clear error."""

from __future__ import annotations

import gzip
from importlib.resources import files
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from tests.conftest import OBLIQUE, blob_series, leftovers, write_nifti
from tssc_py.errors import TsscError
from tssc_py.io import Scan, default_subject, read_scan, scan_suffix, write_scan

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
    with pytest.raises(TsscError, match="not a readable image"):
        read_scan(path)


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
