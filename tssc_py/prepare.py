"""Preparation of a 4D scan for the models, and its exact inverse.

``prepare_scan`` chooses the frames, resamples every frame in-plane to ``size x size`` with
SimpleITK, pads or crops the slices to ``depth`` (centred) and scales intensities to [0, 1] with
robust percentiles. Everything it did is kept in a :class:`PrepareRecord` (saved as JSON next
to the prepared volume) so that ``restore_scan`` maps any result in model space back to the
original grid, geometry, intensity range and data type.

Two modes, named the same everywhere:

* ``evaluate``: of the N chosen frames the first and last are known and the N-2 between them
  are hidden, predicted and scored (the paper's protocol); with ``known_every`` K, every Kth
  frame is known and the K-1 between each pair are hidden (K-times super-resolution, scored).
* ``upsample``: every pair of consecutive chosen frames gets ``frames_between`` new frames,
  giving a longer series; nothing is scored.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import SimpleITK as sitk

from tssc_py import __version__, memory
from tssc_py.atomic import outputs
from tssc_py.errors import TsscError, about, check_integer, is_integer
from tssc_py.io import ItkGeometry, Scan, check_scan, default_subject, read_scan, write_scan
from tssc_py.names import check_subject_id

MODES = ("evaluate", "upsample")
RECORD_VERSION = 1

# Upper bounds far above any real use: a typo (a zero too many) is refused at once instead of
# sizing an allocation. Their product can still be too large: check_memory bounds it.
MAX_SIZE = 4096
"""Largest in-plane size: 16x the default and 4x the finest matrices scanners acquire (1024)."""
MAX_DEPTH = 1024
"""Most slices: 32x the default; 3D acquisitions have at most a few hundred."""
MAX_FRAMES_BETWEEN = 1000
"""Most new frames between two acquired ones: 100x the default of 10."""


@dataclass(frozen=True)
class PrepareConfig:
    """Preparation options; field names are the CLI option names.

    Attributes:
        mode: ``"evaluate"`` or ``"upsample"``.
        frames: Number of evenly spaced frames to take (``round(linspace(start, end, N))``).
            None means 12 over the whole series in evaluate mode, every frame between
            ``start_frame`` and ``end_frame`` when either is given, and every frame in upsample
            mode.
        start_frame: First frame to use (e.g. end-diastole); default 0.
        end_frame: Last frame to use (e.g. end-systole); default the last frame.
        size: In-plane size of the prepared frames (size x size).
        depth: Number of slices after centred zero padding or cropping.
        frames_between: New frames between each pair of known frames (upsample mode).
        known_every: Evaluate mode: every Kth chosen frame is known (the first, every Kth after
            it, the last among them: ``frames - 1`` a multiple of K), the K-1 between each pair
            hidden and scored. None: the first and last only.
        low_percentile: Percentile (in percent, 0 to 100) mapped to 0.
        high_percentile: Percentile (in percent, 0 to 100; not a fraction) mapped to 1.
    """

    mode: str = "evaluate"
    frames: int | None = None
    start_frame: int | None = None
    end_frame: int | None = None
    size: int = 256
    depth: int = 32
    frames_between: int = 10
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    known_every: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TsscError(f"unknown mode {self.mode!r}; use one of {', '.join(MODES)}")
        for name, limit in (
            ("size", MAX_SIZE),
            ("depth", MAX_DEPTH),
            ("frames_between", MAX_FRAMES_BETWEEN),
        ):
            check_integer(name, getattr(self, name), 1, limit)
        if not 0 <= self.low_percentile < self.high_percentile <= 100:
            raise TsscError("percentiles must satisfy 0 <= low < high <= 100")
        minimum = 3 if self.mode == "evaluate" else 2
        if self.frames is not None and self.frames < minimum:
            raise TsscError(
                f"{self.mode} mode needs at least {minimum} frames, {self.frames} asked"
            )
        if self.known_every is not None:
            if self.mode != "evaluate":
                raise TsscError("known_every is only used in evaluate mode")
            if self.known_every < 2:
                raise TsscError(
                    f"known_every must be at least 2 (1 leaves nothing to predict), "
                    f"got {self.known_every}"
                )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for records and run states; ``known_every`` only where given, so that
        the records of earlier versions, which did not have it, compare equal."""
        data = asdict(self)
        if self.known_every is None:
            del data["known_every"]
        return data


@dataclass
class PrepareRecord:
    """What preparation did to one scan, enough to undo it.

    Frame bookkeeping uses positions in the *filled* series (the one methods produce):
    ``prepared_frames`` are the positions of the prepared volume's frames, ``known_frames``
    the positions given to methods as input; the rest are predicted.
    """

    subject: str
    source: str
    mode: str
    config: dict
    source_frames: list[int]
    n_frames: int
    known_frames: list[int]
    prepared_frames: list[int]
    original_shape: list[int]
    original_dtype: str
    original_affine: list[list[float]]
    original_time_step: float
    time_unit: str
    restored_time_step: float
    prepared_affine: list[list[float]]
    prepared_time_step: float
    z_offset: int
    intensity_low: float
    intensity_high: float
    nifti_header: str | None = None
    itk_geometry: dict | None = None
    version: int = RECORD_VERSION
    tssc_version: str = field(default=__version__)

    def __post_init__(self) -> None:
        # The id names every file made from the record (chunks, scores, caches).
        check_subject_id(self.subject, what="the record's subject id")
        # The frames and the scan's shape size what restoring allocates (checked against
        # memory there): the frames must be what preparing a scan of that shape with the
        # record's options gives.
        config = PrepareConfig(**self.config)
        if len(self.original_shape) != 4 or not all(is_integer(n) for n in self.original_shape):
            raise TsscError(f"the record's original_shape {self.original_shape} is not 4 counts")
        chosen = select_frames(self.original_shape[3], config)
        positions = frame_positions(len(chosen), config)
        made = (self.source_frames, self.n_frames, self.known_frames, self.prepared_frames)
        if made != (chosen, *positions):
            raise TsscError(
                "the record's frames are not what its options give a scan of its shape "
                "(an edited record?)"
            )

    @property
    def scan_slices(self) -> slice:
        """The model-space slices that hold the scan's own slices (the others are padding)."""
        _, first, count = _depth_window(
            self.original_shape[2], int(self.config["depth"]), self.z_offset
        )
        return slice(first, first + count)

    @property
    def predicted_frames(self) -> list[int]:
        """Positions in the filled series that a method must predict."""
        known = set(self.known_frames)
        return [t for t in range(self.n_frames) if t not in known]


def record_path(image: str | Path) -> Path:
    """The JSON record that sits next to a prepared image (``x.nii.gz`` -> ``x.json``)."""
    image = Path(image)
    return image.with_name(default_subject(image) + ".json")


def save_record(record: PrepareRecord, path: Path) -> None:
    """Write a record as JSON to ``path`` (the caller provides atomicity)."""
    path.write_text(json.dumps(asdict(record), indent=1) + "\n")


def load_record(path: str | Path) -> PrepareRecord:
    """Read a preparation record.

    Raises:
        TsscError: if the file is missing, not JSON, or not a tssc record.
    """
    path = Path(path)
    if not path.is_file():
        raise TsscError("no such file", path)
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TsscError(f"not a JSON preparation record ({exc})", path) from None
    if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
        raise TsscError("not a tssc preparation record (missing or unknown version)", path)
    config = data.get("config")
    unknown = sorted(set(data) - {f.name for f in fields(PrepareRecord)})
    if isinstance(config, dict):
        unknown += sorted(
            f"config.{k}" for k in set(config) - {f.name for f in fields(PrepareConfig)}
        )
    if unknown:
        # A later tssc adds options (known_every did): say so rather than fail on the names.
        raise TsscError(
            f"holds {', '.join(unknown)}, unknown to this version of tssc: a record written "
            "by a newer tssc? Read it with that version",
            path,
        )
    try:
        with about(path):
            record = PrepareRecord(**data)
    except TypeError as exc:
        raise TsscError(f"malformed preparation record ({exc})", path) from None
    return record


def select_frames(n_available: int, config: PrepareConfig) -> list[int]:
    """Indices of the source frames to use, in time order.

    Raises:
        TsscError: if the series has fewer frames than the choice needs.
    """
    if n_available < 2:
        raise TsscError(f"has {n_available} frame: a series of at least 2 frames is needed")
    start = 0 if config.start_frame is None else config.start_frame
    end = n_available - 1 if config.end_frame is None else config.end_frame
    if not 0 <= start < n_available or not 0 <= end < n_available:
        raise TsscError(
            f"start/end frame ({start}, {end}) outside the series' {n_available} frames"
        )
    if end <= start:
        raise TsscError(f"end frame {end} must come after start frame {start}")
    frames = config.frames
    if frames is None:
        whole = config.mode == "upsample" or config.start_frame is not None
        whole = whole or config.end_frame is not None
        frames = end - start + 1 if whole else 12
    minimum = 3 if config.mode == "evaluate" else 2
    if frames < minimum:
        raise TsscError(f"{config.mode} mode needs at least {minimum} frames, {frames} asked")
    if frames > end - start + 1:
        raise TsscError(
            f"fewer frames than needed: {frames} frames asked, the series has "
            f"{end - start + 1} between frames {start} and {end}"
        )
    every = config.known_every
    if every is not None and (frames - 1) % every:
        fits = list(range(every + 1, end - start + 2, every))
        even = [n for n in fits if (end - start) % (n - 1) == 0]
        if not fits:
            raise TsscError(
                f"--known-every {every} needs at least {every + 1} frames, the series has "
                f"{end - start + 1} between frames {start} and {end}"
            )
        raise TsscError(
            f"--known-every {every} needs a number of frames one more than a multiple of "
            f"{every}, got {frames}: --frames {' or '.join(map(str, (even or fits)[-4:]))}"
            + (
                f" (between frames {start} and {end})"
                if even
                else f" (spaced unevenly between frames {start} and {end}: a frame range of a "
                f"multiple of {every} frames, --start-frame/--end-frame, spaces them evenly)"
            )
        )
    chosen = [int(v) for v in np.round(np.linspace(start, end, frames))]
    gaps = sorted(set(np.diff(chosen).tolist()))
    if config.mode == "upsample" and len(gaps) > 1:
        # The new frames would be spaced evenly between unevenly spaced acquired ones: the
        # series' single time step would put frames at the wrong times.
        fits = [n for n in range(2, end - start + 2) if (end - start) % (n - 1) == 0]
        raise TsscError(
            f"upsample mode needs evenly spaced frames: {frames} frames between frames {start} "
            f"and {end} are {', '.join(map(str, chosen))} (gaps of {gaps[0]} and {gaps[-1]} "
            f"frames); --frames {' or '.join(map(str, fits))} spaces them evenly"
        )
    return chosen


def _index_map(in_size: tuple[int, int], out_size: tuple[int, int], z_offset: int) -> np.ndarray:
    """Matrix taking prepared voxel indices to source voxel indices (pixel centres aligned)."""
    mapping = np.eye(4)
    for axis in range(2):
        scale = in_size[axis] / out_size[axis]
        mapping[axis, axis] = scale
        mapping[axis, 3] = (scale - 1) / 2
    mapping[2, 3] = -z_offset
    return mapping


def resample_inplane(data: np.ndarray, size: tuple[int, int], antialias: bool) -> np.ndarray:
    """Resample the first two axes of a float32 ``(x, y, ...)`` array linearly with SimpleITK.

    The field of view is kept (pixel edges stay aligned). Other axes are untouched: all frames
    and slices go through one 3D resampling, since z positions map onto themselves exactly.

    Args:
        data: Array of shape ``(x, y, ...)``.
        size: Output in-plane size ``(x, y)``.
        antialias: Smooth with a Gaussian before shrinking an axis, to avoid aliasing.
    """
    in_size = data.shape[:2]
    if tuple(in_size) == tuple(size):
        return data.astype(np.float32, copy=False)
    # Fortran order throughout: it is how NIfTI stores voxels, so no reordering copies.
    stack = data.reshape(in_size[0], in_size[1], -1, order="F")
    image = sitk.GetImageFromArray(stack.transpose(2, 1, 0).astype(np.float32), isVector=False)
    scales = [in_size[a] / size[a] for a in range(2)]
    if antialias and max(scales) > 1:
        sigmas = [0.5 * np.sqrt(s * s - 1) if s > 1 else 0.0 for s in scales] + [0.0]
        image = sitk.DiscreteGaussian(image, [s * s for s in sigmas], 32, 0.01, False)
    mapping = _index_map(in_size, size, 0)
    out = sitk.Resample(
        image,
        [int(size[0]), int(size[1]), stack.shape[2]],
        sitk.Transform(),
        sitk.sitkLinear,
        (mapping[0, 3], mapping[1, 3], 0.0),
        (scales[0], scales[1], 1.0),
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        0.0,
        sitk.sitkFloat32,
    )
    array = sitk.GetArrayFromImage(out).transpose(2, 1, 0)
    return array.reshape((*size, *data.shape[2:]), order="F")


def _depth_window(nz: int, depth: int, z_offset: int) -> tuple[int, int, int]:
    """Slices ``z`` of ``nz`` go to ``z + z_offset`` of ``depth``: (first source slice, first
    destination slice, how many fit)."""
    src0, dst0 = max(0, -z_offset), max(0, z_offset)
    return src0, dst0, min(nz - src0, depth - dst0)


def _fit_depth(data: np.ndarray, depth: int, z_offset: int) -> np.ndarray:
    """Place source slices at ``z + z_offset`` in a volume of ``depth`` slices (zero filled)."""
    if z_offset == 0 and depth == data.shape[2]:
        return data
    shape = (data.shape[0], data.shape[1], depth, *data.shape[3:])
    out = np.zeros(shape, dtype=data.dtype, order="F")
    src0, dst0, count = _depth_window(data.shape[2], depth, z_offset)
    out[:, :, dst0 : dst0 + count] = data[:, :, src0 : src0 + count]
    return out


def percentiles(series: np.ndarray, qs: Sequence[float], integer_valued: bool) -> tuple[float, ...]:
    """Percentiles ``qs`` of ``series``, exactly as ``np.percentile`` (linear) computes them.

    Series of integer values (from an integer scan) spanning at most 2**16 levels are counted
    frame by frame with a histogram: an order of magnitude faster than the sort inside
    ``np.percentile``, and no flattened copy of the series.
    """
    low, high = float(series.min()), float(series.max())
    if not integer_valued or high - low >= 1 << 16:
        return tuple(float(v) for v in np.percentile(series, qs))
    offset = int(low)
    counts = np.zeros(int(high) - offset + 1, dtype=np.int64)
    for t in range(series.shape[-1]):
        shifted = series[..., t].ravel(order="K").astype(np.intp)
        shifted -= offset
        counts += np.bincount(shifted, minlength=len(counts))
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])

    def value(rank: int) -> float:
        return float(np.searchsorted(cumulative, rank, side="right") + offset)

    result = []
    for q in qs:
        position = q / 100 * (n - 1)
        below = int(np.floor(position))
        lower, upper = value(below), value(min(below + 1, n - 1))
        result.append(lower + (position - below) * (upper - lower))
    return tuple(result)


def known_frame_indices(known: Iterable[object], n_frames: int) -> list[int]:
    """Known frames given as indices, as a sorted list of unique ints.

    Raises:
        TsscError: For a boolean mask (a mask of six frames would read as frames 0 and 1),
            a value that is not an integer, or a frame outside ``0 .. n_frames - 1``.
    """
    values = list(known)
    if any(isinstance(t, bool | np.bool_) for t in values):
        raise TsscError(
            "known frames are frame indices, got a boolean mask (np.flatnonzero(mask) gives them)"
        )
    integral = [t for t in values if is_integer(t)]
    if len(integral) < len(values):
        odd = next(t for t in values if not is_integer(t))
        raise TsscError(f"known frames are integer frame indices, got {odd!r}")
    indices = sorted({int(t) for t in integral})
    outside = [t for t in indices if not 0 <= t < n_frames]
    if outside:
        raise TsscError(f"known frame(s) {outside} outside the series' {n_frames} frames")
    return indices


def frame_positions(n_chosen: int, config: PrepareConfig) -> tuple[int, list[int], list[int]]:
    """(n_frames, known_frames, prepared_frames) of the filled series of ``n_chosen`` chosen
    frames."""
    if config.mode == "evaluate":
        known = list(range(0, n_chosen, config.known_every or n_chosen - 1))
        return n_chosen, known, list(range(n_chosen))
    step = config.frames_between + 1
    known = [i * step for i in range(n_chosen)]
    return (n_chosen - 1) * step + 1, known, known


def check_memory(config: PrepareConfig, shape: Sequence[int]) -> None:
    """Refuse, before any work, a preparation of a scan of ``shape`` (x, y, z, t) whose filled
    series cannot fit in this machine's memory.

    The estimate is the least a run holds at once: the filled series in model space
    (``size x size x depth x n_frames``, ``n_frames`` growing with ``frames_between`` in
    upsample mode) and as many frames on the scan's grid (restored), float32 each.

    Raises:
        TsscError: For a frame choice the scan does not allow (see :func:`select_frames`), or an
            estimate beyond physical memory, naming it and the options that drive it.
    """
    chosen = select_frames(int(shape[3]), config)
    n_frames = frame_positions(len(chosen), config)[0]
    nx, ny, nz = (int(v) for v in shape[:3])
    size, depth = config.size, config.depth
    needed = 4 * n_frames * (size * size * depth + nx * ny * nz)
    drivers = f"--size {size}, --depth {depth}"
    if config.mode == "upsample":
        drivers += f", {len(chosen)} chosen frames and --frames-between {config.frames_between}"
    memory.check_fits(
        needed,
        f"the filled series ({n_frames} frames of {size}x{size}x{depth} for {drivers}; as many "
        f"on the scan's {nx}x{ny}x{nz} grid)",
    )


def _affine_list(matrix: np.ndarray) -> list[list[float]]:
    return [[float(v) for v in row] for row in matrix]


def prepare_scan(
    scan: Scan, config: PrepareConfig, subject: str, source: str = ""
) -> tuple[Scan, PrepareRecord]:
    """Prepare a 4D scan for the methods.

    Args:
        scan: The source 4D scan.
        config: Preparation options.
        subject: Subject id, recorded and used to name outputs.
        source: Where the scan came from (recorded for provenance).

    Returns:
        The prepared float32 scan (``size x size x depth x frames``, values in [0, 1], with an
        affine that overlays the source) and the record that undoes it.

    Raises:
        TsscError: For an unsafe subject id, a scan the methods cannot work on (see
            :func:`~tssc_py.io.check_scan`: e.g. NaN voxels), or frames or intensities that
            ``config`` cannot prepare.
    """
    check_subject_id(subject)
    check_scan(scan, source or f"subject {subject}")
    check_memory(config, scan.data.shape)
    chosen = select_frames(scan.data.shape[3], config)
    series = np.empty((*scan.data.shape[:3], len(chosen)), dtype=np.float32, order="F")
    for i, t in enumerate(chosen):
        series[..., i] = scan.data[..., t]
    integer = np.issubdtype(scan.data.dtype, np.integer) and scan.data.dtype.itemsize <= 2
    low, high = percentiles(series, (config.low_percentile, config.high_percentile), integer)
    if high <= low:
        if series.min() == series.max():
            raise TsscError(f"has constant intensity ({low}) over the chosen frames")
        raise TsscError(
            f"its {config.low_percentile:g} and {config.high_percentile:g} percentiles over the "
            f"chosen frames are both {low} (almost all voxels equal): scale it by its full "
            "range with --low-percentile 0 --high-percentile 100"
        )
    size = (config.size, config.size)
    nx, ny, nz = scan.data.shape[:3]
    z_offset = (config.depth - nz) // 2 if nz <= config.depth else -((nz - config.depth) // 2)
    prepared = resample_inplane(series, size, antialias=True)
    prepared = _fit_depth(prepared, config.depth, z_offset)
    # In place: the prepared array is the largest buffer here, avoid temporaries of its size.
    prepared -= np.float32(low)
    prepared *= np.float32(1.0 / (high - low))
    np.clip(prepared, 0.0, 1.0, out=prepared)

    steps = np.diff(chosen)
    mean_step = float(np.mean(steps)) * scan.time_step
    n_frames, known, positions = frame_positions(len(chosen), config)
    restored_step = (
        mean_step if config.mode == "evaluate" else mean_step / (config.frames_between + 1)
    )
    prepared_affine = scan.affine @ _index_map((nx, ny), size, z_offset)
    record = PrepareRecord(
        subject=subject,
        source=source,
        mode=config.mode,
        config=config.to_dict(),
        source_frames=chosen,
        n_frames=n_frames,
        known_frames=known,
        prepared_frames=positions,
        original_shape=[int(v) for v in scan.data.shape],
        original_dtype=str(scan.data.dtype),
        original_affine=_affine_list(scan.affine),
        original_time_step=float(scan.time_step),
        time_unit=scan.time_unit,
        restored_time_step=restored_step,
        prepared_affine=_affine_list(prepared_affine),
        prepared_time_step=mean_step,
        z_offset=z_offset,
        intensity_low=low,
        intensity_high=high,
        nifti_header=None
        if scan.header is None
        else base64.b64encode(scan.header.binaryblock).decode("ascii"),
        itk_geometry=None if scan.itk is None else asdict(scan.itk),
    )
    out = Scan(prepared, prepared_affine, mean_step, scan.time_unit)
    return out, record


def check_model_space(
    shape: tuple[int, ...],
    record: PrepareRecord,
    filled: bool = True,
    affine: np.ndarray | None = None,
) -> None:
    """Refuse a volume that is not the record's filled (or, with ``filled`` False, prepared)
    series: another size, depth or number of frames, or (given its ``affine``) another
    subject's placement in the scanner.

    Raises:
        TsscError: Naming the shapes, the subject and the mode.
    """
    # 1e-3 mm: NIfTI stores the matrix in float32.
    if affine is not None and not np.allclose(affine, record.prepared_affine, atol=1e-3):
        raise TsscError(
            f"does not lie where the record's prepared volume does (subject {record.subject}): "
            "a series of another subject?"
        )
    config = PrepareConfig(**record.config)
    frames = record.n_frames if filled else len(record.prepared_frames)
    expected = (config.size, config.size, config.depth, frames)
    if tuple(shape) != expected:
        raise TsscError(
            f"has shape {tuple(shape)}, the record expects {expected} "
            f"(subject {record.subject}, {record.mode} mode)"
        )


def restore_scan(volume: np.ndarray, record: PrepareRecord) -> Scan:
    """Map a filled series in model space back to the source grid, intensities and dtype.

    Args:
        volume: ``(size, size, depth, n_frames)`` array in prepared space.
        record: The record of the preparation.

    Returns:
        A scan on the source grid with the source affine (and NIfTI header or ITK geometry),
        ``n_frames`` frames ``restored_time_step`` apart, in the source data type (integers are
        rounded and clipped to the type's range). Values outside [0, 1] are clipped first: the
        restored intensities stay within the preparation's percentile range.

    Raises:
        TsscError: if the volume does not have the prepared shape or holds NaN or infinite
            values (which no output type can carry: an integer type would get arbitrary ones),
            or the restored series would not fit in memory.
    """
    check_model_space(volume.shape, record)
    check_memory(PrepareConfig(**record.config), record.original_shape)
    bad = int(np.count_nonzero(~np.isfinite(volume)))
    if bad:
        raise TsscError(f"contains {bad} NaN or infinite value(s) (subject {record.subject})")
    nx, ny, nz = record.original_shape[:3]
    header = None
    if record.nifti_header is not None:
        block = base64.b64decode(record.nifti_header)
        kind = (
            nib.Nifti2Header
            if len(block) == nib.Nifti2Header.template_dtype.itemsize
            else nib.Nifti1Header
        )
        header = kind(block)
    dtype, scaling = _restored_type(record, header)
    integer = np.issubdtype(dtype, np.integer)
    data = np.empty((nx, ny, nz, record.n_frames), dtype=dtype, order="F")
    scale = record.intensity_high - record.intensity_low
    info = np.iinfo(dtype) if integer else None
    # Frame by frame: the float64 arithmetic then needs one frame of scratch, not a series.
    for t in range(record.n_frames):
        # Undo the depth padding first: it shrinks the data the resampling has to touch.
        frame = _fit_depth(volume[..., t].astype(np.float32, copy=False), nz, -record.z_offset)
        # Model space is [0, 1], the preparation's intensity range; a learned method may step
        # outside it (e.g. negative intensities in a magnitude image), the truth never does.
        frame = np.clip(frame, 0.0, 1.0)
        values = resample_inplane(frame, (nx, ny), antialias=False).astype(np.float64)
        values *= scale
        values += record.intensity_low
        if scaling is not None:
            values -= scaling[1]
            values /= scaling[0]
        if info is not None:
            np.rint(values, out=values)
            np.clip(values, info.min, info.max, out=values)
        data[..., t] = values
    itk = (
        None
        if record.itk_geometry is None
        else ItkGeometry(**{k: tuple(v) for k, v in record.itk_geometry.items()})
    )
    # The restored series starts at the first chosen frame: its time origin moves with it.
    start = record.source_frames[0] * record.original_time_step
    if header is not None:
        header["toffset"] = float(header["toffset"]) + start
    if itk is not None and len(itk.origin) == 4:
        itk = replace(itk, origin=(*itk.origin[:3], itk.origin[3] + start))
    return Scan(
        data,
        np.asarray(record.original_affine, dtype=float),
        record.restored_time_step,
        record.time_unit,
        header=header,
        itk=itk,
        scaling=scaling,
    )


def _restored_type(
    record: PrepareRecord, header: nib.Nifti1Header | None
) -> tuple[np.dtype, tuple[float, float] | None]:
    """The data type to restore to, and the slope and intercept to store it with.

    A NIfTI file of integers with a slope or intercept (``scl_slope``, ``scl_inter``: most
    scanner exports) was read as floats; it comes back as its stored integers with the same
    slope and intercept, so unchanged voxels are the same stored values. Other floating-point
    files keep their own float type (at least float32); integer files their integer type.
    """
    dtype = np.dtype(record.original_dtype)
    if header is not None:
        slope, inter = header.get_slope_inter()
        stored = np.dtype(header.get_data_dtype().newbyteorder("="))
        if slope is not None and stored.kind in "iu":
            return stored, (float(slope), float(inter or 0.0))
        if slope is not None:
            dtype = stored
    if not np.issubdtype(dtype, np.integer) and (
        not np.issubdtype(dtype, np.floating) or dtype.itemsize < 4
    ):
        dtype = np.dtype(np.float32)
    return dtype, None


def prepare_file(
    scan: str | Path,
    out: str | Path,
    config: PrepareConfig,
    subject: str | None = None,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Read ``scan``, prepare it, write the prepared volume to ``out`` and its JSON record.

    Returns:
        The prepared image path and the record path (``out`` with ``.json``).
    """
    scan, out = Path(scan), Path(out)
    subject = check_subject_id(subject or default_subject(scan), scan)
    source = read_scan(scan)
    with about(scan):
        prepared, record = prepare_scan(source, config, subject, str(scan))
    json_path = record_path(out)
    with outputs(overwrite) as group:
        write_scan(prepared, out, group=group)
        save_record(record, group.path(json_path))
    return out, json_path


def check_filled_values(data: np.ndarray, record: PrepareRecord) -> None:
    """Refuse a series whose known frames are not model-space values (floating point in
    [0, 1], as preparation leaves them and every method keeps them): a raw scan of the same
    grid would pass every shape and geometry check and restore to saturated intensities.

    Raises:
        TsscError: Naming the range found.
    """
    known = data[..., record.known_frames]
    low, high = float(known.min()), float(known.max())
    if not np.issubdtype(data.dtype, np.floating) or low < 0 or high > 1:
        raise TsscError(
            f"its known frames hold {data.dtype} values from {low:g} to {high:g}, not the "
            f"prepared [0, 1] (subject {record.subject}): not a filled model-space series "
            "(a raw scan?)"
        )


def restore_file(filled: Path, record: Path, out: Path, overwrite: bool = False) -> Path:
    """Restore a filled prepared-space series to the source geometry and write it to ``out``."""
    rec = load_record(record)
    scan = read_scan(filled)
    with about(filled):
        check_model_space(scan.data.shape, rec, affine=scan.affine)
        check_filled_values(scan.data, rec)
        restored = restore_scan(scan.data, rec)
    return write_scan(restored, out, overwrite)
