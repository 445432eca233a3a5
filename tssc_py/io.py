"""4D scan input and output that keeps geometry.

NIfTI (``.nii``, ``.nii.gz``) goes through nibabel, MetaImage (``.mha``, ``.mhd``) and NRRD
(``.nrrd``, ``.nhdr``) through SimpleITK. Arrays are always indexed ``(x, y, z, t)``, and the
geometry is a 4x4 voxel-to-world affine in nibabel's RAS+ millimetre convention plus the time
between frames. Reading a scan and writing it back unchanged keeps data and geometry exactly:
the source NIfTI header or ITK origin/spacing/direction travels with the scan.
"""

from __future__ import annotations

import dataclasses
import gzip
import zlib
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.arrayproxy import ArrayProxy

from tssc_py.atomic import OutputSet, outputs
from tssc_py.errors import TsscError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
OUTPUT_SUFFIXES = (*NIFTI_SUFFIXES, ".mha", ".nrrd")
"""What results can be written as: single files (a detached header's data file would be lost)."""

# ITK stores geometry in LPS, nibabel in RAS: the first two world axes flip sign.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class ItkGeometry:
    """The exact 4D origin, spacing and direction of an image read through SimpleITK."""

    origin: tuple[float, ...]
    spacing: tuple[float, ...]
    direction: tuple[float, ...]


@dataclass
class Scan:
    """A 3D or 4D image with its geometry.

    Attributes:
        data: Voxel array indexed ``(x, y, z)`` or ``(x, y, z, t)``.
        affine: 4x4 voxel-to-world matrix (RAS+, millimetres).
        time_step: Time between frames, in ``time_unit``.
        time_unit: ``"sec"``, ``"msec"``, ``"usec"`` or ``"unknown"``.
        header: The NIfTI header the scan was read with, if any (NIfTI-1 or NIfTI-2).
        itk: The ITK geometry the scan was read with, if any.
        scaling: For data that are a file's stored integers: the slope and intercept that
            turn them into values (``scl_slope``, ``scl_inter``), written with them. None: the
            data are the values (what :func:`read_scan` returns).
    """

    data: np.ndarray
    affine: np.ndarray
    time_step: float = 1.0
    time_unit: str = "sec"
    header: nib.Nifti1Header | None = field(default=None, repr=False)
    itk: ItkGeometry | None = field(default=None, repr=False)
    scaling: tuple[float, float] | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size along x, y, z in millimetres."""
        x, y, z = (float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))
        return x, y, z

    def replace(self, **changes: Any) -> Scan:
        """A copy with some fields changed (geometry provenance kept)."""
        return dataclasses.replace(self, **changes)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in sorted(SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def default_subject(path: str | Path) -> str:
    """Subject id from a file name: the name without its image suffix."""
    path = Path(path)
    suffix = _suffix(path)
    return path.name[: -len(suffix)] if suffix in SUFFIXES else path.stem


def scan_suffix(path: str | Path) -> str:
    """The suffix to write a result of ``path`` with (detached headers become single files)."""
    return {".mhd": ".mha", ".nhdr": ".nrrd"}.get(_suffix(Path(path)), _suffix(Path(path)))


def _load_nifti(path: Path) -> nib.Nifti1Image:
    """The NIfTI-1 or NIfTI-2 image in ``path`` (NIfTI-2 subclasses NIfTI-1), data unread."""
    img = nib.load(path)
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise TsscError("not a NIfTI image", path)
    return img


def _read_nifti(path: Path) -> Scan:
    img = _load_nifti(path)
    # An image loaded from a file holds a proxy of its data; the stubs only say "array-like".
    proxy = cast(ArrayProxy, img.dataobj)
    data = np.asanyarray(proxy)
    header = img.header.copy()
    # nibabel moves the file's scaling from the header it returns into the data proxy; the
    # header here describes the file as stored, scaling included.
    slope, inter = float(proxy.slope), float(proxy.inter)
    if (slope, inter) != (1.0, 0.0):
        header.set_slope_inter(slope, inter)
    zooms = header.get_zooms()
    _, time_unit = header.get_xyzt_units()
    # Some writers store a negative pixdim; the step between frames is its size.
    time_step = abs(float(zooms[3])) if len(zooms) > 3 else 1.0
    return Scan(data, img.affine.copy(), time_step, time_unit, header=header)


def _itk_affine(geometry: ItkGeometry) -> np.ndarray:
    dim = len(geometry.spacing)
    direction = np.asarray(geometry.direction, dtype=float).reshape(dim, dim)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(geometry.spacing[:3])
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(geometry.origin[:3], dtype=float)
    return affine


def _read_itk(path: Path) -> Scan:
    image = sitk.ReadImage(str(path))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise TsscError("multi-component (vector) images are not supported", path)
    if image.GetDimension() < 3:
        raise TsscError(f"is {image.GetDimension()}D, a 3D or 4D image is needed", path)
    data = sitk.GetArrayFromImage(image)
    data = np.ascontiguousarray(data.transpose(tuple(range(data.ndim))[::-1]))
    geometry = ItkGeometry(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    time_step = float(geometry.spacing[3]) if image.GetDimension() > 3 else 1.0
    return Scan(data, _itk_affine(geometry), time_step, "unknown", itk=geometry)


def _squeeze_trailing(data: np.ndarray) -> np.ndarray:
    while data.ndim > 4 and data.shape[-1] == 1:
        data = data[..., 0]
    return data


def _checked_path(path: Path) -> str:
    """The image suffix of ``path``, after refusing a missing file, a folder or another type."""
    if not path.exists():
        raise TsscError("no such file", path)
    if path.is_dir():
        raise TsscError("is a directory, not an image file", path)
    suffix = _suffix(path)
    if suffix not in SUFFIXES:
        raise TsscError(f"unsupported file type; use one of {', '.join(SUFFIXES)}", path)
    _check_case(path, suffix)
    return suffix


def _check_case(path: Path, suffix: str) -> None:
    """Refuse a mixed-case NIfTI suffix (``.Nii.Gz``): nibabel reads lower or upper case only."""
    written = path.name[-len(suffix) :]
    if suffix in NIFTI_SUFFIXES and written not in (suffix, suffix.upper()):
        raise TsscError(f"write the suffix {written} as {suffix} or {suffix.upper()}", path)


def _check_values(dtype: np.dtype, affine: np.ndarray, path: str | Path | None) -> None:
    """What a header shows to be unusable: values that are not real numbers, a degenerate
    voxel-to-world matrix."""
    if dtype.kind not in "iuf":
        raise TsscError(
            f"holds {dtype} values; an image of real numbers (integer or floating point) is needed",
            path,
        )
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise TsscError(
            "has a degenerate voxel-to-world matrix (a zero voxel size or parallel axes)", path
        )


_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    RuntimeError,
    zlib.error,
    gzip.BadGzipFile,
    nib.filebasedimages.ImageFileError,
)


def _unreadable(exc: Exception, path: Path) -> TsscError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return TsscError(f"not a readable image ({reason[:200]})", path)


def _check_ndim(shape: tuple[int, ...], ndim: int | None, path: str | Path | None) -> None:
    if ndim is not None and len(shape) != ndim:
        size = "x".join(str(s) for s in shape)
        want = "a 4D (x, y, z, t) series" if ndim == 4 else f"a {ndim}D image"
        raise TsscError(f"is {len(shape)}D ({size}), {want} is needed", path)


def scan_shape(path: str | Path, ndim: int | None = 4) -> tuple[int, ...]:
    """The shape :func:`read_scan` would give, from the file's header alone (cheap: for
    checking a cohort before any work).

    Raises:
        TsscError: As :func:`read_scan` for a missing, unreadable or wrongly shaped file.
    """
    path = Path(path)
    suffix = _checked_path(path)
    try:
        if suffix in NIFTI_SUFFIXES:
            img = _load_nifti(path)
            shape = tuple(int(n) for n in img.shape)
            dtype, affine = img.get_data_dtype(), img.affine
        else:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            shape = tuple(int(n) for n in reader.GetSize())
            if reader.GetNumberOfComponents() != 1:
                raise TsscError("multi-component (vector) images are not supported", path)
            dtype = np.dtype(np.float32)  # ITK's scalar pixel types are all real numbers
            geometry = ItkGeometry(reader.GetOrigin(), reader.GetSpacing(), reader.GetDirection())
            affine = _itk_affine(geometry)
    except _READ_ERRORS as exc:
        raise _unreadable(exc, path) from None
    _check_values(np.dtype(dtype), affine, path)
    while len(shape) > 4 and shape[-1] == 1:
        shape = shape[:-1]
    _check_ndim(shape, ndim, path)
    return shape


def read_scan(path: str | Path, ndim: int | None = 4) -> Scan:
    """Read a scan and check it.

    Args:
        path: A NIfTI, MetaImage or NRRD file.
        ndim: Required number of dimensions (4 for a 4D series, 3 for one volume), or None.

    Returns:
        The scan, data in its stored type (scaled to float when the file asks for scaling).

    Raises:
        TsscError: if the file is missing, unreadable, has the wrong dimensionality, or holds
            NaN or infinite values.
    """
    path = Path(path)
    suffix = _checked_path(path)
    try:
        scan = _read_nifti(path) if suffix in NIFTI_SUFFIXES else _read_itk(path)
    except TsscError:
        raise
    except _READ_ERRORS as exc:
        raise _unreadable(exc, path) from None
    scan.data = _squeeze_trailing(scan.data)
    return check_scan(scan, path, ndim)


def check_scan(scan: Scan, where: str | Path | None = None, ndim: int | None = 4) -> Scan:
    """Return ``scan`` if the methods can work on it (what :func:`read_scan` checks of a file,
    for a scan made in memory).

    Args:
        scan: The scan.
        where: What error messages name (the file, or a subject).
        ndim: Required number of dimensions, or None.

    Raises:
        TsscError: if its data is not a NumPy array of real numbers with ``ndim`` dimensions,
            holds NaN or infinite values or values beyond float32, or its voxel-to-world matrix
            is degenerate.
    """
    data = scan.data
    if not isinstance(data, np.ndarray):
        raise TsscError(f"scan data must be a NumPy array, got {type(data).__name__}", where)
    _check_ndim(data.shape, ndim, where)
    if data.size == 0:
        raise TsscError(f"is empty (shape {data.shape})", where)
    affine = np.asarray(scan.affine)
    if affine.shape != (4, 4) or not np.issubdtype(affine.dtype, np.number):
        raise TsscError("needs a 4x4 voxel-to-world matrix (affine)", where)
    _check_values(data.dtype, affine.astype(np.float64), where)
    if np.issubdtype(data.dtype, np.floating):
        # The count only when something is wrong: one boolean array, not two, for a good scan.
        if not np.isfinite(data).all():
            bad = int(data.size - np.count_nonzero(np.isfinite(data)))
            raise TsscError(f"contains {bad} NaN or infinite voxel(s)", where)
        big = np.finfo(np.float32).max
        if data.dtype.itemsize > 4 and (data.max() > big or data.min() < -big):
            raise TsscError("holds values beyond the float32 range the models work in", where)
    return scan


def _nifti_image(scan: Scan) -> nib.Nifti1Image:
    header = None if scan.header is None else scan.header.copy()
    kind = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    img = kind(scan.data, scan.affine, header=header)
    hdr = img.header
    hdr.set_data_dtype(scan.data.dtype)
    # The array is stored as given: no rescaling, so values round-trip exactly (stored
    # integers keep the file's own slope and intercept).
    hdr["scl_slope"], hdr["scl_inter"] = scan.scaling or (np.nan, np.nan)
    if scan.data.ndim == 4:
        hdr.set_zooms(tuple(abs(z) for z in (*hdr.get_zooms()[:3], scan.time_step)))
    if scan.header is None:
        space_unit = "mm"
        time_unit = scan.time_unit if scan.time_unit in ("sec", "msec", "usec") else "unknown"
        hdr.set_xyzt_units(space_unit, time_unit)
    return img


def _itk_image(scan: Scan) -> sitk.Image:
    data = scan.data
    dim = data.ndim
    image = sitk.GetImageFromArray(data.transpose(tuple(range(dim))[::-1]), isVector=False)
    source = scan.itk
    if source is not None and np.array_equal(_itk_affine(source), scan.affine):
        # Reuse the exact spatial numbers read from the file: re-deriving them from the affine
        # can change the last bit of the direction cosines.
        origin = np.asarray(source.origin[:3], dtype=float)
        spacing = np.asarray(source.spacing[:3], dtype=float)
        direction3 = np.asarray(source.direction, dtype=float).reshape(
            len(source.spacing), len(source.spacing)
        )[:3, :3]
    else:
        spacing = np.linalg.norm(scan.affine[:3, :3], axis=0)
        direction3 = _LPS_TO_RAS @ scan.affine[:3, :3] / spacing
        origin = _LPS_TO_RAS @ scan.affine[:3, 3]
    direction = np.eye(dim)
    direction[:3, :3] = direction3
    if dim == 4:
        time_origin = source.origin[3] if source is not None and len(source.origin) == 4 else 0.0
        origin = np.append(origin, time_origin)
        spacing = np.append(spacing, scan.time_step)
    image.SetOrigin(tuple(float(v) for v in origin))
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


def write_scan(
    scan: Scan, path: str | Path, overwrite: bool = False, group: OutputSet | None = None
) -> Path:
    """Write a scan atomically, in the format its suffix names.

    Args:
        scan: The scan to write.
        path: Output file; ``.nii``, ``.nii.gz``, ``.mha`` or ``.nrrd``.
        overwrite: Replace an existing file.
        group: Write as part of this output group (renamed with the group, not now).

    Raises:
        TsscError: if the output exists and ``overwrite`` is False, the suffix is unknown, or
            the scan is one :func:`read_scan` would refuse (:func:`check_scan`: e.g. NaN
            values), so that nothing unreadable is written.
    """
    path = Path(path)
    check_scan(scan, path, ndim=None)
    suffix = _suffix(path)
    _check_case(path, suffix)
    if suffix in (".mhd", ".nhdr"):
        raise TsscError("detached-header outputs are not supported; use .mha or .nrrd", path)
    if suffix not in OUTPUT_SUFFIXES:
        raise TsscError(f"unsupported output type; use one of {', '.join(OUTPUT_SUFFIXES)}", path)
    with outputs(overwrite) if group is None else nullcontext(group) as target:
        tmp = target.path(path)
        if suffix in NIFTI_SUFFIXES:
            nib.save(_nifti_image(scan), tmp)
        else:
            sitk.WriteImage(_itk_image(scan), str(tmp), useCompression=True)
    return path
