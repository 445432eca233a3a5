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
import hashlib
import math
import os
import re
import sys
import tempfile
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from nibabel.arrayproxy import ArrayProxy
from nibabel.spatialimages import HeaderDataError

from tssc_py import memory
from tssc_py.atomic import OutputSet, outputs
from tssc_py.errors import TsscError

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mha", ".mhd", ".nrrd", ".nhdr")
SUFFIXES = NIFTI_SUFFIXES + ITK_SUFFIXES
OUTPUT_SUFFIXES = (*NIFTI_SUFFIXES, ".mha", ".nrrd")
"""What results can be written as: single files (a detached header's data file would be lost)."""

# ITK stores geometry in LPS, nibabel in RAS: the first two world axes flip sign.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

GZIP_MAX_RATIO = 1032
"""The most bytes one byte of deflate data (gzip, zlib) can decompress to: the format's limit."""

_CHUNK = 1 << 20  # bytes read or decompressed at a time where a whole file need not be held


def max_scan_bytes() -> int:
    """The most voxel data, in bytes, a file's header may claim: half this machine's memory.

    Readers allocate what a header claims before the data can show it false, and the methods
    hold several float32 copies of a scan, so a larger scan could not be worked on here anyway;
    refusing the claim first keeps a damaged or hostile header from exhausting the memory.
    """
    total = memory.physical_memory()
    return sys.maxsize if total is None else total // 2


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


@dataclass(frozen=True)
class _Stored:
    """Where a file's voxel data lie.

    Attributes:
        file: The file holding them (for a detached header, its data file).
        start: The byte they, or the compressed stream holding them, start at.
        length: The bytes they take; in a stream, decompressed and with what comes before them.
        encoding: ``"raw"``, or ``"deflate"`` for a gzip or zlib stream.
    """

    file: Path
    start: int
    length: int
    encoding: str


def _data_bytes(shape: tuple[int, ...], itemsize: int, path: Path) -> int:
    """The bytes of voxel data a header claims."""
    if any(n < 0 for n in shape):
        raise TsscError(f"header gives a negative size ({'x'.join(map(str, shape))})", path)
    return math.prod(shape) * itemsize


def _check_claim(path: Path, nbytes: int, stored: _Stored | None) -> None:
    """Refuse a header claiming ``nbytes`` of voxel data that no scan here may have, or that
    its file (``stored``; None where not known) cannot hold, before anything is allocated."""
    limit = max_scan_bytes()
    if nbytes > limit:
        raise TsscError(
            f"header claims {nbytes:,} bytes of voxel data, more than a scan may have here "
            f"({limit:,}: half this machine's memory)",
            path,
        )
    if stored is None:
        return
    if not stored.file.is_file():
        raise TsscError(f"data file {str(stored.file)!r} not found", path)
    held = stored.file.stat().st_size - stored.start
    if stored.encoding == "raw" and stored.length > held:
        where = "file" if stored.file == path else f"data file {stored.file.name}"
        raise TsscError(
            f"header claims {stored.length:,} bytes of voxel data from byte {stored.start:,}, "
            f"more than the {where} holds ({max(held, 0):,}; truncated?)",
            path,
        )
    if stored.encoding == "deflate" and stored.length > GZIP_MAX_RATIO * held:
        raise TsscError(
            f"header claims {stored.length:,} bytes of decompressed data, more than "
            f"{max(held, 0):,} compressed bytes can hold",
            path,
        )


def _load_nifti(path: Path) -> nib.Nifti1Image:
    """The NIfTI-1 or NIfTI-2 image in ``path`` (NIfTI-2 subclasses NIfTI-1), data unread,
    after refusing a header that claims more voxel data than the file can hold."""
    img = nib.load(path)
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise TsscError("not a NIfTI image", path)
    # The image's own header no longer holds the file's data offset; the data proxy does.
    offset = int(cast(ArrayProxy, img.dataobj).offset)
    nbytes = _data_bytes(img.header.get_data_shape(), img.get_data_dtype().itemsize, path)
    if _suffix(path) == ".nii.gz":
        stored = _Stored(path, 0, offset + nbytes, "deflate")
    else:
        stored = _Stored(path, offset, nbytes, "raw")
    _check_claim(path, nbytes, stored)
    return img


def _nifti_time(header: nib.Nifti1Header, path: Path) -> tuple[float, str]:
    """The time step and its unit."""
    try:
        _, time_unit = header.get_xyzt_units()
    except KeyError:
        code = int(header["xyzt_units"])
        raise TsscError(f"has an unknown units code (xyzt_units {code})", path) from None
    zooms = header.get_zooms()
    # Some writers store a negative pixdim; the step between frames is its size.
    return (abs(float(zooms[3])) if len(zooms) > 3 else 1.0), time_unit


def _read_nifti(path: Path) -> Scan:
    img = _load_nifti(path)
    if _suffix(path) == ".nii.gz":
        with gzip.open(path, "rb") as stream:
            holder = nib.FileHolder(str(path), stream)
            img = type(img).from_file_map({"image": holder})
            data = np.asanyarray(img.dataobj)
            # nibabel stops where the voxel data end, before the gzip trailer: reading on to
            # the end checks every member's CRC and length (it costs the trailer only).
            while stream.read(_CHUNK):
                pass
    else:
        data = np.asanyarray(img.dataobj)
    # An image loaded from a file holds a proxy of its data; the stubs only say "array-like".
    proxy = cast(ArrayProxy, img.dataobj)
    header = img.header.copy()
    # nibabel moves the file's scaling from the header it returns into the data proxy; the
    # header here describes the file as stored, scaling included.
    slope, inter = float(proxy.slope), float(proxy.inter)
    if (slope, inter) != (1.0, 0.0):
        header.set_slope_inter(slope, inter)
    time_step, time_unit = _nifti_time(header, path)
    return Scan(data, img.affine.copy(), time_step, time_unit, header=header)


def _itk_affine(geometry: ItkGeometry) -> np.ndarray:
    dim = len(geometry.spacing)
    direction = np.asarray(geometry.direction, dtype=float).reshape(dim, dim)[:3, :3]
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(geometry.spacing[:3])
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(geometry.origin[:3], dtype=float)
    return affine


def _itk_geometry(source: sitk.Image | sitk.ImageFileReader) -> ItkGeometry:
    """The geometry of an image, or of the one a reader has read the header of."""
    return ItkGeometry(source.GetOrigin(), source.GetSpacing(), source.GetDirection())


def _itk_time_step(geometry: ItkGeometry) -> float:
    """The 4th spacing (1 for a 3D image)."""
    return float(geometry.spacing[3]) if len(geometry.spacing) > 3 else 1.0


def _itk_dtype(reader: sitk.ImageFileReader) -> np.dtype:
    """The NumPy type of the pixels ``reader`` has read the header of."""
    return sitk.GetArrayViewFromImage(sitk.Image([1, 1], reader.GetPixelID())).dtype


def _text_header(path: Path, separator: str, last: str | None) -> tuple[dict[str, str], int]:
    """The ``key SEPARATOR value`` lines of a MetaImage or NRRD header (keys without spaces) and
    the byte after the header: after the line of key ``last``, or (None) the first empty line."""
    fields: dict[str, str] = {}
    with path.open("rb") as file:
        for line in iter(lambda: file.readline(_CHUNK), b""):
            text = line.decode("latin-1").strip()
            if not text and last is None:
                break
            key, _, value = text.partition(separator)
            key = key.replace(" ", "")
            fields[key] = value.strip()
            if key == last:
                break
        return fields, file.tell()


_ITK_MAX_DIMS = 5  # SimpleITK's images have at most 5 dimensions


def _itk_fields(path: Path) -> tuple[dict[str, str], int]:
    """The fields of a MetaImage or NRRD header (keys without spaces) and the byte after it,
    after refusing what makes ITK's readers corrupt their memory (a crash, not an error): more
    dimensions than MetaIO has room for, or a list or pattern of data files (MetaIO formats
    their names with the pattern as given)."""
    if _suffix(path) in (".mha", ".mhd"):
        fields, end = _text_header(path, "=", "ElementDataFile")
        dims = re.match(r"\d+", fields.get("NDims", ""))
        if dims is not None and int(dims[0]) > _ITK_MAX_DIMS:
            raise TsscError(f"has NDims = {dims[0]}; at most {_ITK_MAX_DIMS} can be read", path)
    else:
        fields, end = _text_header(path, ":", None)
    name = _data_file(path, fields)
    if name.upper().startswith("LIST") or "%" in name:
        raise TsscError("names a list or pattern of data files; one data file is needed", path)
    return fields, end


def _data_file(path: Path, fields: dict[str, str]) -> str:
    """The data file a MetaImage or NRRD header's ``fields`` name (``LOCAL``: the file itself)."""
    key = "ElementDataFile" if _suffix(path) in (".mha", ".mhd") else "datafile"
    return fields.get(key, "LOCAL")


def _itk_stored(path: Path, fields: dict[str, str], end: int, nbytes: int) -> _Stored | None:
    """Where the ``nbytes`` of voxel data of a MetaImage or NRRD file lie, from its header's
    fields and the byte after it; None where this cannot check them (NRRD line skips, text or
    bzip2 encodings)."""
    name = _data_file(path, fields)
    if _suffix(path) in (".mha", ".mhd"):
        compressed = fields.get("CompressedData", "")[:1] in ("T", "t", "1")
        encoding = "deflate" if compressed else "raw"
        local = name.upper() == "LOCAL"
        skip = 0 if compressed or local else int(fields.get("HeaderSize", "0"))
    else:
        encoding = {"raw": "raw", "gz": "deflate", "gzip": "deflate"}.get(
            fields.get("encoding", ""), ""
        )
        if not encoding or int(fields.get("lineskip", "0")):
            return None
        local = name.upper() == "LOCAL"
        skip = int(fields.get("byteskip", "0"))
    file = path if local else path.parent / name
    start = end if local else 0
    if encoding == "deflate":
        # A NRRD byte skip counts decompressed bytes.
        return _Stored(file, start, max(skip, 0) + nbytes, encoding)
    # A byte skip (or MetaImage HeaderSize) of -1: the data are the file's last bytes.
    return _Stored(file, 0 if skip == -1 else start + skip, nbytes, encoding)


def _itk_header(path: Path) -> tuple[sitk.ImageFileReader, _Stored | None]:
    """A reader that has read the header of ``path``, and where the voxel data lie, after
    refusing a vector image or a header claiming more voxel data than its file can hold."""
    fields, end = _itk_fields(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if reader.GetNumberOfComponents() != 1:
        raise TsscError("multi-component (vector) images are not supported", path)
    size = tuple(int(n) for n in reader.GetSize())
    nbytes = _data_bytes(size, _itk_dtype(reader).itemsize, path)
    stored = _itk_stored(path, fields, end, nbytes)
    _check_claim(path, nbytes, stored)
    return reader, stored


def _check_deflate(stored: _Stored, path: Path) -> None:
    """Decompress gzip or zlib voxel data to their end, a chunk at a time: that checks their
    checksums and length, which ITK does not (MetaIO prints a failure and goes on, teem stops
    where the voxel data end). It costs a second decompression of compressed ITK files."""
    held = 0
    with stored.file.open("rb") as file:
        file.seek(stored.start)
        data = file.read(_CHUNK)
        while data:  # a zlib stream, or one gzip member after another
            inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # either, as MetaIO and teem read
            while not inflater.eof:
                data = data or file.read(_CHUNK)
                out = inflater.decompress(data, _CHUNK)
                if not data and not out:
                    raise EOFError("compressed data end early")
                held += len(out)
                data = inflater.unconsumed_tail
            data = inflater.unused_data or file.read(_CHUNK)
    if held < stored.length:
        raise TsscError(
            f"compressed data hold {held:,} bytes, fewer than the {stored.length:,} its header "
            "claims",
            path,
        )


def _read_itk(path: Path) -> Scan:
    reader, stored = _itk_header(path)
    if stored is not None and stored.encoding == "deflate":
        _check_deflate(stored, path)
    image = reader.Execute()
    if image.GetDimension() < 3:
        raise TsscError(f"is {image.GetDimension()}D, a 3D or 4D image is needed", path)
    data = sitk.GetArrayFromImage(image)
    data = np.ascontiguousarray(data.transpose(tuple(range(data.ndim))[::-1]))
    geometry = _itk_geometry(image)
    return Scan(data, _itk_affine(geometry), _itk_time_step(geometry), "unknown", itk=geometry)


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


def _check_values(
    dtype: np.dtype, affine: np.ndarray, time_step: float, path: str | Path | None
) -> None:
    """What a header shows to be unusable: values that are not real numbers, a voxel-to-world
    matrix that is not finite or is degenerate, a time step that is not finite."""
    if dtype.kind not in "iuf":
        raise TsscError(
            f"holds {dtype} values; an image of real numbers (integer or floating point) is needed",
            path,
        )
    if not np.isfinite(affine).all():
        raise TsscError(
            "has NaN or infinite values in its voxel-to-world matrix (sform, qform or the "
            "origin, spacing and direction)",
            path,
        )
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise TsscError(
            "has a degenerate voxel-to-world matrix (a zero voxel size or parallel axes)", path
        )
    if not math.isfinite(time_step):
        raise TsscError(
            f"has a time step between frames of {time_step} (NIfTI pixdim[4], the 4th spacing "
            "of MetaImage and NRRD); a finite number is needed",
            path,
        )


_READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    OverflowError,
    RuntimeError,
    zlib.error,
    gzip.BadGzipFile,
    nib.filebasedimages.ImageFileError,
    HeaderDataError,
)

_STDERR = threading.Lock()  # standard error is one per process


@contextmanager
def _stderr_into(printed: list[str]) -> Iterator[None]:
    """Send what is written to standard error in this block, by C and C++ libraries too, into
    ``printed`` (its start, on leaving the block) instead."""
    with _STDERR, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            printed.append(capture.read(1 << 16).decode(errors="replace"))


# The prefix of an ITK exception's lines: "ITK ERROR: MetaImageIO(0x55fb265e1540): ".
_ITK_ERROR = re.compile(r"^(ITK ERROR|itk::ERROR): \w+\(0x[0-9a-fA-F]+\): ")


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Read ``path`` in this block: what a damaged file makes the readers raise becomes one
    error naming it, and what they print is kept off the terminal (nibabel logs the header
    fixes it makes, ITK warns, MetaIO writes its errors to the C++ error stream)."""
    printed: list[str] = []
    try:
        with _stderr_into(printed):
            yield
    except TsscError:
        raise
    except _READ_ERRORS as exc:
        raise _unreadable(exc, "".join(printed), path) from None


def _unreadable(exc: Exception, printed: str, path: Path) -> TsscError:
    """The error for a file a reader failed on, with the line that says most of why: what
    SimpleITK printed (MetaIO explains there and then raises a generic error), else teem's
    last line of the error or the first other line (below SimpleITK's own)."""
    text = printed if isinstance(exc, RuntimeError) and printed.strip() else str(exc)
    lines = [
        _ITK_ERROR.sub("", line.strip())
        for line in text.splitlines()
        if line.strip() and not line.startswith("Exception thrown in SimpleITK")
    ]
    teem = [line for line in lines if line.startswith("[nrrd]")]
    reason = teem[-1] if teem else lines[0] if lines else type(exc).__name__
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
        TsscError: As :func:`read_scan` for a missing, unreadable or wrongly shaped file, or
            one whose header claims more voxel data than its file or this machine can hold.
    """
    path = Path(path)
    suffix = _checked_path(path)
    with _reading(path):
        if suffix in NIFTI_SUFFIXES:
            img = _load_nifti(path)
            shape = tuple(int(n) for n in img.shape)
            dtype, affine = img.get_data_dtype(), img.affine
            time_step, _ = _nifti_time(img.header, path)
        else:
            reader, _ = _itk_header(path)
            shape = tuple(int(n) for n in reader.GetSize())
            dtype = _itk_dtype(reader)
            geometry = _itk_geometry(reader)
            affine, time_step = _itk_affine(geometry), _itk_time_step(geometry)
    _check_values(np.dtype(dtype), affine, time_step, path)
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
        TsscError: if the file is missing, unreadable or damaged (a compressed stream's
            checksum included), its header claims more voxel data than the file or this machine
            can hold, it has the wrong dimensionality, or holds NaN or infinite values (voxels,
            voxel-to-world matrix or time step).
    """
    path = Path(path)
    suffix = _checked_path(path)
    with _reading(path):
        scan = _read_nifti(path) if suffix in NIFTI_SUFFIXES else _read_itk(path)
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
            holds NaN or infinite values or values beyond float32, its voxel-to-world matrix
            is not finite or is degenerate, or its time step is not finite.
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
    _check_values(data.dtype, affine.astype(np.float64), scan.time_step, where)
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


def scan_files(path: str | Path) -> list[Path]:
    """The files a scan is read from: the file itself and, for a detached header (``.mhd``,
    ``.nhdr``), the data file it names.

    Raises:
        TsscError: If a detached header cannot be read, or names a list or pattern of files.
    """
    path = Path(path)
    if _suffix(path) not in (".mhd", ".nhdr"):
        return [path]
    with _reading(path):
        name = _data_file(path, _itk_fields(path)[0])
    return [path] if name.upper() == "LOCAL" else [path, path.parent / name]


def scan_digest(path: str | Path) -> str:
    """SHA-256 of the files a scan is read from (:func:`scan_files`): what tells a scan
    replaced in place from the one a result was made of.

    Raises:
        TsscError: If a file cannot be read.
    """
    files = scan_files(path)
    if len(files) == 1:
        return file_sha256(path)
    return hashlib.sha256("".join(map(file_sha256, files)).encode()).hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in blocks.

    Raises:
        TsscError: If the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as handle:
            # In blocks (hashlib.file_digest needs Python 3.11).
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise TsscError(f"cannot read: {exc.strerror or exc}", path) from None
    return digest.hexdigest()
