"""Scores of predicted frames against the truth, in prepared space.

Prepared space means intensities in [0, 1] and arrays indexed ``(x, y, z, t)``. Only predicted
frames are scored; the known (input) frames are copies of the truth and would inflate the means.

The metrics follow UVI-Net's evaluation and agree with scikit-image to rounding error:

* MAE: mean absolute difference.
* PSNR: ``10 log10(data_range^2 / MSE)`` with a data range of 1; infinite for a perfect frame,
  and for one that differs from the truth only by float32 rounding (an MSE of at most
  ``(float32 eps * data_range)^2``, above 138.5 dB), so that exact copies score alike whether a
  method copies a frame or blends two equal ones.
* SSIM: Gaussian window of 11 voxels, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, population
  covariances, averaged over the voxels whose window lies inside the volume. ``"3d"`` computes
  it on the whole volume with a 3D window (every side must be at least 11 voxels); ``"2d"`` is
  the mean over z-slices of the 2D SSIM of each slice.
* Cross-slice error (``cross_slice``): mean absolute difference between the predicted and the
  true through-plane gradients (:func:`cross_slice_error`); NaN for a single-slice volume.

MAE and the cross-slice error are better lower, PSNR and SSIM higher (:data:`LOWER_IS_BETTER`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tssc_py.atomic import OutputSet, outputs
from tssc_py.errors import TsscError, about
from tssc_py.io import read_scan
from tssc_py.names import check_subject_id
from tssc_py.prepare import PrepareRecord, check_model_space, known_frame_indices, load_record

if TYPE_CHECKING:
    import torch

SSIM_MODES = ("3d", "2d")
WIN_SIZE = 11
WIN_SIGMA = 1.5
METRICS = ("mae", "psnr", "ssim", "cross_slice")
LOWER_IS_BETTER = frozenset({"mae", "cross_slice"})
"""The metrics of :data:`METRICS` that are better lower; the others are better higher."""
FRAME_COLUMNS = ("subject", "method", "frame", *METRICS, "ssim_mode")
SUMMARY_COLUMNS = ("subject", "method", "frames", *METRICS, "ssim_mode")
"""The tables of :func:`write_subject_metrics`; ``ssim_mode`` says how SSIM was computed, so
that scores of the two modes are not averaged together."""
FLOAT32_EPS = float(np.finfo(np.float32).eps)
# Known frames are copies of the truth; a larger difference means another subject's series.
KNOWN_FRAME_TOLERANCE = 1e-3


def _pair(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise TsscError(
            f"prediction and truth have different shapes: {pred.shape} vs {truth.shape}"
        )
    return pred, truth


def _check_range(truth: np.ndarray, data_range: float) -> None:
    """Refuse a truth outside ``[0, data_range]``: PSNR and SSIM would still give plausible
    looking numbers for raw scanner intensities (an SSIM of 0.99 on 0..1000 data)."""
    if truth.size and (truth.min() < 0 or truth.max() > data_range):
        raise TsscError(
            f"the truth has values in [{truth.min():g}, {truth.max():g}], outside the data "
            f"range [0, {data_range:g}]: the metrics work in prepared space (prepare_scan maps "
            "a scan's intensities to [0, 1])"
        )


def mae(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean absolute error."""
    pred, truth = _pair(pred, truth)
    return float(np.mean(np.abs(pred - truth)))


def psnr(pred: np.ndarray, truth: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB; ``inf`` when the inputs agree to float32 rounding.

    Raises:
        TsscError: If the shapes differ or the truth leaves ``[0, data_range]``.
    """
    pred, truth = _pair(pred, truth)
    _check_range(truth, data_range)
    mse = float(np.mean((pred - truth) ** 2))
    if mse <= (FLOAT32_EPS * data_range) ** 2:
        return math.inf
    return float(10.0 * np.log10(data_range**2 / mse))


def cross_slice_error(pred: np.ndarray, truth: np.ndarray) -> float:
    """Cross-slice consistency error of an ``(x, y, z)`` volume.

    The mean absolute difference between the predicted and the true through-plane gradients
    (differences between neighbouring slices): zero when every slice-to-slice change is
    right, whatever each slice's own error. This is what stage 2 exists to reduce.
    """
    pred, truth = _pair(pred, truth)
    if pred.ndim != 3 or pred.shape[2] < 2:
        raise TsscError(f"needs an (x, y, z) volume with at least 2 slices, got {pred.shape}")
    return float(np.mean(np.abs(np.diff(pred, axis=2) - np.diff(truth, axis=2))))


def check_ssim_shape(shape: Sequence[int], mode: str = "3d") -> None:
    """Check that a volume of ``shape`` (x, y, z) is large enough for the SSIM window.

    Raises:
        TsscError: if ``mode`` is unknown or a side is smaller than the window (11 voxels).
    """
    if mode not in SSIM_MODES:
        raise TsscError(f"unknown SSIM mode {mode!r}; use one of {', '.join(SSIM_MODES)}")
    if len(shape) != 3:
        raise TsscError(f"SSIM needs a 3D (x, y, z) volume, got shape {tuple(shape)}")
    size = "x".join(str(s) for s in shape)
    if mode == "3d" and min(shape) < WIN_SIZE:
        raise TsscError(
            f"volume is {size}: 3D SSIM needs at least {WIN_SIZE} voxels along every axis; "
            "use the 2D option (--ssim 2d, slice-wise SSIM) for thin volumes"
        )
    if mode == "2d" and min(shape[:2]) < WIN_SIZE:
        raise TsscError(
            f"volume is {size}: 2D SSIM needs slices of at least {WIN_SIZE}x{WIN_SIZE} voxels"
        )


def ssim(pred: np.ndarray, truth: np.ndarray, mode: str = "3d") -> float:
    """Structural similarity of one ``(x, y, z)`` volume (data range 1).

    Args:
        pred: Predicted volume.
        truth: True volume, same shape.
        mode: ``"3d"`` for a 3D Gaussian window, ``"2d"`` for the mean of slice-wise 2D SSIM.

    Raises:
        TsscError: if the shapes differ, the truth leaves [0, 1] or the volume is too small for
            the window.
    """
    pred, truth = _pair(pred, truth)
    _check_range(truth, 1.0)
    check_ssim_shape(pred.shape, mode)
    # torch is imported here, not at module level, so that the steps that only need the
    # table layout (tssc-report) start without loading it.
    import torch
    from pytorch_msssim import ssim as torch_ssim

    if mode == "3d":
        x = torch.from_numpy(pred)[None, None]
        y = torch.from_numpy(truth)[None, None]
    else:
        # z-slices as channels: the filter is grouped per channel, so each slice gets its own
        # 2D SSIM and size_average means them (all slices have the same number of voxels).
        x = torch.from_numpy(np.ascontiguousarray(pred.transpose(2, 0, 1)))[None]
        y = torch.from_numpy(np.ascontiguousarray(truth.transpose(2, 0, 1)))[None]
    with torch.no_grad():
        win = _window(x.ndim, x.shape[1])
        value = torch_ssim(x, y, data_range=1.0, size_average=True, win=win)
    return float(value)


def sequence_scores(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """PSNR over all frames of ``(sequences, frames, x, y)`` and the mean 2D SSIM of every
    (sequence, frame) image."""

    def as_volume(v: np.ndarray) -> np.ndarray:
        return v.reshape(-1, *v.shape[2:]).transpose(1, 2, 0)  # each image one 2D slice

    return psnr(pred, truth), ssim(as_volume(pred), as_volume(truth), "2d")


def versus_linear(pred: np.ndarray, blend: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Validation scores of predicted frames next to those of the linear blend.

    Args:
        pred: Predicted frames ``(sequences, frames, x, y)``.
        blend: The linear blend of the same frames.
        truth: The true frames.

    Returns:
        ``val_psnr``, ``val_ssim``, ``val_linear_psnr``, ``val_linear_ssim``
        (:func:`sequence_scores`).
    """
    val_psnr, val_ssim = sequence_scores(pred, truth)
    linear_psnr, linear_ssim = sequence_scores(blend, truth)
    return {
        "val_psnr": val_psnr,
        "val_ssim": val_ssim,
        "val_linear_psnr": linear_psnr,
        "val_linear_ssim": linear_ssim,
    }


def _window(ndim: int, channels: int) -> torch.Tensor:
    """The 1D Gaussian window in the layout pytorch_msssim expects, in float64.

    pytorch_msssim builds its default window in float32; a float64 one makes the result agree
    with scikit-image to rounding error instead of about 1e-6.
    """
    import torch

    coords = torch.arange(WIN_SIZE, dtype=torch.float64) - WIN_SIZE // 2
    g = torch.exp(-(coords**2) / (2 * WIN_SIGMA**2))
    g /= g.sum()
    return g.reshape((1,) * (ndim - 1) + (WIN_SIZE,)).repeat(channels, *([1] * (ndim - 1)))


def check_known_frames(known_frames: Sequence[int], n_frames: int) -> list[int]:
    """The known frames as a sorted list of unique ints.

    Raises:
        TsscError: As :func:`~tssc_py.prepare.known_frame_indices`, or if nothing is left to
            score.
    """
    known = known_frame_indices(known_frames, n_frames)
    if len(known) >= n_frames:
        raise TsscError(f"no frame to score: all {n_frames} frames are known (input) frames")
    return known


def check_scored_shape(record: PrepareRecord, ssim_mode: str) -> None:
    """Check, before any work, that the volume scored for ``record`` (the scan's own slices of
    a model-space frame) fits the SSIM window.

    Raises:
        TsscError: As :func:`check_ssim_shape`.
    """
    scored = record.scan_slices
    size = int(record.config["size"])
    check_ssim_shape((size, size, scored.stop - scored.start), ssim_mode)


def score_series(
    prediction: np.ndarray,
    truth: np.ndarray,
    known_frames: Sequence[int],
    ssim_mode: str = "3d",
) -> pd.DataFrame:
    """Score every predicted frame of a 4D series.

    Args:
        prediction: Predicted series ``(x, y, z, t)`` in prepared space.
        truth: True series, same shape.
        known_frames: Frame indices that were input to the method; they are not scored.
        ssim_mode: ``"3d"`` or ``"2d"`` (see :func:`ssim`).

    Returns:
        Columns ``frame, mae, psnr, ssim, cross_slice``, one row per predicted frame, in frame
        order; ``cross_slice`` is NaN when the volume has a single slice.

    Raises:
        TsscError: on a shape mismatch, known frames out of range, nothing to score, or a volume
            too small for the SSIM window.
    """
    if prediction.shape != truth.shape:
        raise TsscError(
            f"prediction and truth have different shapes: {prediction.shape} vs {truth.shape}"
        )
    if prediction.ndim != 4:
        raise TsscError(f"a 4D (x, y, z, t) series is needed, got shape {prediction.shape}")
    check_ssim_shape(prediction.shape[:3], ssim_mode)
    known = set(check_known_frames(known_frames, prediction.shape[3]))
    rows = []
    for t in range(prediction.shape[3]):
        if t in known:
            continue
        pred, true = prediction[..., t], truth[..., t]
        # A single slice has no neighbour to be consistent with: undefined, not zero.
        cross = cross_slice_error(pred, true) if pred.shape[2] > 1 else math.nan
        rows.append((t, mae(pred, true), psnr(pred, true), ssim(pred, true, ssim_mode), cross))
    table = pd.DataFrame(rows, columns=["frame", *METRICS])
    return table.astype({"frame": "int64", **dict.fromkeys(METRICS, "float64")})


def check_known_copied(
    prediction: np.ndarray, truth: np.ndarray, known_frames: Sequence[int]
) -> None:
    """Refuse a prediction whose known frames are not the truth's (to storage rounding).

    Every method returns its input frames unchanged, so a difference means the prediction was
    filled from another series, e.g. another subject's of the same geometry.

    Raises:
        TsscError: Naming the first frame that differs and by how much.
    """
    for t in known_frames:
        difference = float(np.max(np.abs(prediction[..., t] - truth[..., t])))
        if not difference <= KNOWN_FRAME_TOLERANCE:
            raise TsscError(
                f"known frame {t} differs from the truth's by up to {difference:.3g}: "
                "filled from another series (another subject's?); a method returns its known "
                "frames unchanged"
            )


def evaluate_files(
    prediction: Path,
    truth: Path,
    record: Path,
    method: str,
    out: Path,
    ssim_mode: str = "3d",
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Score a predicted (filled) series against the prepared truth and write two CSVs.

    Args:
        prediction: The filled series a method produced, in prepared space.
        truth: The prepared series of the same subject (evaluate mode).
        record: The preparation record (JSON) naming the subject and the known frames.
        method: Method name, written into the tables and the file names.
        out: Output directory.
        ssim_mode: ``"3d"`` or ``"2d"``.
        overwrite: Replace existing outputs.

    Returns:
        ``out/{subject}.{method}.frames.csv`` (``subject, method, frame, mae, psnr, ssim,
        cross_slice, ssim_mode``) and ``out/{subject}.{method}.metrics.csv`` (one row:
        ``subject, method, frames, mae, psnr, ssim, cross_slice, ssim_mode``, the number of
        scored frames and the means over them).

    Raises:
        TsscError: for an upsample-mode record, mismatched shapes, known frames that do not fit
            the series, or a refused overwrite.
    """
    prediction, truth, record, out = Path(prediction), Path(truth), Path(record), Path(out)
    check_subject_id(method, what="method name")
    rec = load_record(record)
    if rec.mode == "upsample":
        raise TsscError("upsample mode has no ground truth to score", record)
    pred_scan = read_scan(prediction)
    true_scan = read_scan(truth)
    pred, true = pred_scan.data, true_scan.data
    if pred.shape != true.shape:
        raise TsscError(
            f"prediction and truth have different shapes: {pred.shape} vs {true.shape} "
            f"(truth: {truth})",
            prediction,
        )
    try:
        check_known_frames(rec.known_frames, rec.n_frames)
    except TsscError as exc:
        raise TsscError(str(exc), record) from None
    with about(truth):
        check_model_space(true.shape, rec, affine=true_scan.affine)
    with about(prediction):
        check_model_space(pred.shape, rec, affine=pred_scan.affine)
        check_scored_shape(rec, ssim_mode)
        check_known_copied(pred, true, rec.known_frames)
    with outputs(overwrite) as group:
        return write_subject_metrics(pred, true, rec, method, out, ssim_mode, group)


def write_subject_metrics(
    prediction: np.ndarray,
    truth: np.ndarray,
    record: PrepareRecord,
    method: str,
    out: Path,
    ssim_mode: str,
    group: OutputSet,
) -> tuple[Path, Path]:
    """Score one subject's filled series and write its two tables as part of ``group``.

    Returns:
        ``out/{subject}.{method}.frames.csv`` and ``out/{subject}.{method}.metrics.csv``.
    """
    frames_path = out / f"{record.subject}.{method}.frames.csv"
    metrics_path = out / f"{record.subject}.{method}.metrics.csv"
    # Reserve (and refuse existing) outputs before the slow scoring, not after it.
    frames_tmp = group.path(frames_path)
    metrics_tmp = group.path(metrics_path)
    # Only the scan's own slices: depth padding is empty in every method's output and in the
    # truth, and would score as perfectly predicted.
    scored = record.scan_slices
    table = score_series(
        prediction[:, :, scored], truth[:, :, scored], record.known_frames, ssim_mode
    )
    table.insert(0, "method", method)
    table.insert(0, "subject", record.subject)
    table["ssim_mode"] = ssim_mode
    means = table[list(METRICS)].mean()
    summary = pd.DataFrame(
        [[record.subject, method, len(table), *(float(means[m]) for m in METRICS), ssim_mode]],
        columns=list(SUMMARY_COLUMNS),
    )
    table.to_csv(frames_tmp, index=False)
    summary.to_csv(metrics_tmp, index=False)
    return frames_path, metrics_path
