"""Synthetic 4D MRI series with known ground truth, for demos and tests.

Two analytic scenes, drawn fresh for every frame:

* ``cardiac``: a chest slab (torso, fat, chest wall, lungs, liver, spine, aorta) around a
  beating heart: left ventricle with papillary muscles, right ventricle, left atrium. Over one
  cardiac cycle the LV cavity contracts towards end-systole and relaxes back (with a diastasis
  and an atrial kick), the myocardium thickens with its in-plane area kept, the base descends
  towards the apex, and the ventricle twists and shifts slightly.
* ``knee``: a sagittal knee (femur, tibia, fibula and patella with cortex and marrow, articular
  cartilage, menisci, patellar tendon, fat and muscle). The tibia rotates about the femoral
  condyle centre from full extension to about 80 degrees of flexion; the calf, patella, tendon
  and fat follow.

Each structure is an approximate signed distance in millimetres (negative inside), evaluated
through a backward motion map, so shapes deform smoothly and non-rigidly. A voxel's tissue
fraction is its signed distance over the distance's change across the voxel (the voxel's extent
along the surface normal, thick slices included), clipped to [0, 1]: partial-volume edges
without supersampling. The noise-free signal is then multiplied by a smooth bias field, given
Rician noise (the magnitude of the signal plus complex Gaussian noise) and stored as int16.

Arrays are built internally as ``(t, z, y, x)`` so that whole-volume operations run over
contiguous memory; scans expose the usual ``(x, y, z, t)`` view of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import overload

import numpy as np
import SimpleITK as sitk

from tssc_py import memory
from tssc_py.atomic import outputs
from tssc_py.errors import TsscError, check_integer, is_integer
from tssc_py.io import Scan, write_scan
from tssc_py.names import check_subject_id

KINDS: tuple[str, ...] = ("cardiac", "knee")

LIMITS: dict[str, tuple[int, int]] = {
    "subjects": (1, 10_000),
    "size": (16, 2048),
    "depth": (1, 1024),
    "frames": (2, 1000),
}
"""Smallest and largest of each size argument. The maxima lie far above any demo or test
cohort (and the matrices of real scans: up to 1024 in-plane, a few hundred slices or frames):
a typo is refused at once; their product is checked against memory before drawing."""

VARIATION_LIMITS: dict[str, float] = {
    "rotation": 180.0,
    "translation": 100.0,
    "breathing": 50.0,
    "contrast": 1.0,
    "texture": 0.5,
    "noise": 10.0,
}
"""Largest value of each :class:`Variation` field (degrees, mm, or a factor)."""

SCRATCH_VOLUMES = 32
"""Float32 volumes (one frame each) a scene's drawing holds at once besides the series (at
most 29 measured, for the knee)."""

F32 = np.float32
Array = np.ndarray


@dataclass
class Phantom:
    """A noise-free synthetic series and what turns it into a scan.

    Attributes:
        signal: Tissue signal before bias and noise, ``(x, y, z, t)`` float32, 0 to about 1.
            Voxels wholly inside one tissue hold exactly that tissue's value (without
            :class:`Variation`'s texture and contrast).
        affine: 4x4 voxel-to-world matrix (RAS+, millimetres).
        time_step: Seconds between frames.
        bias: Smooth multiplicative bias field, ``(x, y, z)``.
        scale: Stored intensity of signal 1.0 (before bias).
        sigma: Standard deviation of each component of the complex noise, in stored units.
        tissues: Tissue name to its signal value.
        angles: The in-plane rotation of each frame added by :class:`Variation`, in degrees
            (zeros without).
        shifts: The in-plane shift of each frame added by :class:`Variation`, ``(t, 2)`` in
            voxels along x and y (zeros without).
    """

    signal: Array
    affine: Array
    time_step: float
    bias: Array
    scale: float
    sigma: float
    tissues: dict[str, float] = field(default_factory=dict)
    angles: Array | None = None
    shifts: Array | None = None


@dataclass(frozen=True)
class Variation:
    """What a cohort adds to the scenes' own motion and look; every field off by default (the
    scenes as drawn, draw for draw). Each subject draws its own values within these bounds.

    Attributes:
        rotation: Largest in-plane rotation sweep over the series, in degrees: each subject
            turns by a sweep drawn from half this to this, either way, evenly over its frames
            about the centre of the field of view (a patient turning, a joint swinging).
        translation: Largest in-plane translation over the series, in mm, evenly over the
            frames in a random direction.
        breathing: Amplitude in mm of a breathing drift: one cycle over the series in a random
            in-plane direction, from a random phase.
        contrast: Spread of a contrast change: the signal raised to a power drawn from
            ``exp(-contrast)`` to ``exp(contrast)`` (brighter or darker mid-tones, another
            sequence's look).
        texture: Amplitude of a smooth tissue texture that moves with the anatomy: the signal
            times ``1 + texture * field``, the field of unit spread (about 2-voxel grain).
        noise: Multiplier of the drawn noise level.
    """

    rotation: float = 0.0
    translation: float = 0.0
    breathing: float = 0.0
    contrast: float = 0.0
    texture: float = 0.0
    noise: float = 1.0

    def __post_init__(self) -> None:
        for name, high in VARIATION_LIMITS.items():
            value = getattr(self, name)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not 0 <= value <= high:
                raise TsscError(f"{name} must be a number from 0 to {high:g}, got {value!r}")

    @property
    def moves(self) -> bool:
        """Whether frames are moved (rotation, translation or breathing)."""
        return bool(self.rotation or self.translation or self.breathing)


class _Draw:
    """Scalar random draws as plain floats (NumPy scalars would upcast float32 arrays)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, low: float, high: float) -> float:
        return float(self.rng.uniform(low, high))

    def offset(self, sigma: float) -> tuple[float, float, float]:
        """A 3D offset, each component normal with mean 0 and std ``sigma``."""
        x, y, z = (float(v) for v in self.rng.normal(0, sigma, 3))
        return x, y, z

    def sign(self) -> float:
        """-1 or +1 with equal odds."""
        return 1.0 if self.rng.random() < 0.5 else -1.0


# --- geometry -------------------------------------------------------------------------------


def _axes(n: int, depth: int, sxy: float, sz: float) -> tuple[Array, ...]:
    """Voxel centres in mm about the centre of the field of view, as (z, y, x) broadcasts."""
    line = (np.arange(n, dtype=F32) - F32((n - 1) / 2)) * F32(sxy)
    slices = (np.arange(depth, dtype=F32) - F32((depth - 1) / 2)) * F32(sz)
    return line[None, None, :], line[None, :, None], slices[:, None, None]


def _ellipsoid(*terms: tuple[Array | float, float]) -> Array:
    """Approximate signed distance to an ellipsoid; fewer terms give an elliptic cylinder.

    Each term is (offset from the centre along one axis, semi-axis). The bound
    ``k0 (k0 - 1) / k1`` is exact on the axes and has a near-unit gradient at the surface, so
    shells offset from it keep about their thickness.
    """
    k0: Array | float = 0.0
    k1: Array | float = 0.0
    for offset, radius in terms:
        q = (offset * (1.0 / radius)) ** 2
        k0 = k0 + q
        k1 = k1 + q * (1.0 / (radius * radius))
    k0 = np.sqrt(k0)
    k1 = np.sqrt(k1)
    smallest = min(radius for _, radius in terms)
    # The tiny terms make the centre itself come out as -smallest instead of 0 / 0. In-place
    # steps: fresh whole-volume arrays cost more than the arithmetic.
    k1 += 1e-7
    d = k0 + 1e-7 * smallest
    k0 -= 1.0
    d *= k0
    d /= k1
    return d


def _round_box(
    px: Array, py: Array, pz: Array, half: tuple[float, float, float], rounding: float
) -> Array:
    """Signed distance to a box with rounded edges (half extents include the rounding)."""
    qx = np.abs(px) - (half[0] - rounding)
    qy = np.abs(py) - (half[1] - rounding)
    qz = np.abs(pz) - (half[2] - rounding)
    outside = np.sqrt(
        np.maximum(qx, 0.0) ** 2 + np.maximum(qy, 0.0) ** 2 + np.maximum(qz, 0.0) ** 2
    )
    inside = np.minimum(np.maximum(np.maximum(qx, qy), qz), 0.0)
    return outside + inside - rounding


def _smin(a: Array, b: Array, k: float) -> Array:
    """Union of two shapes with a fillet of size ``k`` mm where they meet."""
    h = np.subtract(a, b)
    np.abs(h, out=h)
    np.subtract(k, h, out=h)
    np.maximum(h, 0.0, out=h)
    h *= h
    h *= 0.25 / k
    union = np.minimum(a, b)
    union -= h
    return union


@overload
def _rotate(x: float, y: float, cx: float, cy: float, angle: float) -> tuple[float, float]: ...


@overload
def _rotate(x: Array, y: Array, cx: float, cy: float, angle: float) -> tuple[Array, Array]: ...


def _rotate(
    x: Array | float, y: Array | float, cx: float, cy: float, angle: float
) -> tuple[Array | float, Array | float]:
    """Rotate points (x, y) by ``angle`` radians about (cx, cy)."""
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = x - cx, y - cy
    return cx + c * dx - s * dy, cy + s * dx + c * dy


def _width(d: Array) -> Array:
    """How much ``d`` changes across one voxel, summed over the axes.

    For a distance this is the voxel's extent along the surface normal, so thick slices blur
    surfaces oblique to them. Central differences run over the flat array (the wrapped values
    at the borders are replaced by one-sided differences), which keeps every axis contiguous.
    """
    d = np.ascontiguousarray(d, dtype=F32)
    flat = d.reshape(-1)
    w = np.zeros(d.shape, F32)
    g = np.empty_like(flat)
    gv = g.reshape(d.shape)
    stride = 1
    for axis in reversed(range(d.ndim)):
        n = d.shape[axis]
        if n > 1:
            np.subtract(flat[2 * stride :], flat[: -2 * stride], out=g[stride:-stride])
            first, second, last, before = ([slice(None)] * d.ndim for _ in range(4))
            first[axis], second[axis] = slice(0, 1), slice(1, 2)
            last[axis], before[axis] = slice(n - 1, n), slice(n - 2, n - 1)
            gv[tuple(first)] = 2.0 * (d[tuple(second)] - d[tuple(first)])
            gv[tuple(last)] = 2.0 * (d[tuple(last)] - d[tuple(before)])
            w += np.abs(gv, out=gv)
        stride *= n
    w *= 0.5
    return np.maximum(w, 1e-3, out=w)


def _slab(z: Array, low: float, high: float) -> slice:
    """The slices a structure spanning ``low`` to ``high`` mm in z can reach, with a margin.

    Never empty, so that arrays over it stay well formed.
    """
    centres = z[:, 0, 0]
    margin = 1.5 * (float(centres[1] - centres[0]) if len(centres) > 1 else 0.0)
    start = int(np.searchsorted(centres, low - margin))
    stop = int(np.searchsorted(centres, high + margin))
    start = min(start, len(centres) - 1)
    return slice(start, max(stop, start + 1))


def _fraction(d: Array, w: Array | None = None, offset: float = 0.0) -> Array:
    """Fraction of each voxel inside ``d + offset < 0`` (a linear ramp one voxel wide)."""
    if w is None:
        w = _width(d)
    f = d + offset if offset else d.copy()
    f /= w
    np.subtract(0.5, f, out=f)
    return np.clip(f, 0.0, 1.0, out=f)


def _paint(canvas: Array, fraction: Array, value: float) -> None:
    """Lay a tissue over the canvas, in proportion to how much of each voxel it fills."""
    change = np.subtract(value, canvas, dtype=F32)
    change *= fraction
    canvas += change


def _voxel_sizes(
    draw: _Draw,
    n: int,
    depth: int,
    fov: tuple[float, float],
    cover: tuple[float, float],
    thick: float,
) -> tuple[float, float]:
    """In-plane spacing and slice thickness for a field of view drawn from ``fov`` x ``cover`` mm.

    Slices are kept at least 1.5 times the in-plane spacing, so z stays the thick-slice axis,
    and at most ``thick`` mm so that very few slices do not become absurdly thick.
    """
    sxy = draw(*fov) / n
    sz = draw(*cover) / depth
    return sxy, float(np.clip(sz, 1.5 * sxy, max(thick, 1.5 * sxy)))


def _affine(
    draw: _Draw,
    rng: np.random.Generator,
    base: Array,
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
    centre: tuple[float, float, float],
) -> Array:
    """Voxel-to-world matrix: base orientation, a small oblique tilt, FOV centre at ``centre``."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(draw(2.0, 12.0))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    tilt = np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)
    affine = np.eye(4)
    affine[:3, :3] = tilt @ base @ np.diag(spacing)
    affine[:3, 3] = np.asarray(centre) - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    return affine


def _bias(rng: np.random.Generator, x: Array, y: Array, z: Array) -> Array:
    """A smooth multiplicative field: exp of a random quadratic over the field of view."""
    coords = [a / max(float(np.abs(a).max()), 1e-6) for a in (x, y, z)]
    log = np.zeros((z.shape[0], y.shape[1], x.shape[2]), F32)
    for i, a in enumerate(coords):
        log += float(rng.normal(0, 0.12)) * a
        for b in coords[i:]:
            log += float(rng.normal(0, 0.06)) * (a * b)
    # Rescaled rather than clipped, so the field stays smooth within about 0.7 to 1.4.
    log *= 0.35 / max(float(np.abs(log).max()), 0.35)
    return np.exp(log, out=log)


# --- cardiac --------------------------------------------------------------------------------


def _cycle(draw: _Draw, frames: int) -> Array:
    """Contraction (0 end-diastole, 1 end-systole) at each frame of one cardiac cycle.

    Systole, rapid filling, a slow diastasis and an atrial kick: every frame moves a little.
    """
    end_systole = draw(0.30, 0.38)
    filled = end_systole + draw(0.15, 0.22)
    kick = draw(0.80, 0.87)
    after_filling = draw(0.15, 0.25)
    before_kick = after_filling * draw(0.5, 0.8)
    phase = np.arange(frames) / frames

    def ease(p: Array, start: float, end: float, a: float, b: float) -> Array:
        t = np.clip((p - start) / (end - start), 0, 1)
        return a + (b - a) * 0.5 * (1 - np.cos(math.pi * t))

    return np.select(
        [phase < end_systole, phase < filled, phase < kick],
        [
            ease(phase, 0, end_systole, 0, 1),
            ease(phase, end_systole, filled, 1, after_filling),
            ease(phase, filled, kick, after_filling, before_kick),
        ],
        ease(phase, kick, 1, before_kick, 0),
    )


@dataclass
class _Heart:
    """Left ventricle shape and motion; the heart's own frame has W = 0 at the base plane."""

    cx: float
    cy: float
    base: float
    endo: float  # LV cavity radius at the base, end-diastole
    wall: float
    length: float  # base to cavity apex
    apex_wall: float
    rv_angle: float
    rv_offset: float
    rv_radii: tuple[float, float, float]
    rv_centre: float
    rv_wall: float
    pap: tuple[tuple[float, float], tuple[float, float]]
    la: tuple[float, float, float]
    la_radii: tuple[float, float, float]
    shorten: float  # endocardial radius shortening at end-systole
    descent: float  # long-axis shortening at end-systole
    twist: float  # radians, apex against base
    rv_shorten: float
    shift: tuple[float, float, float]
    reach: float  # how far the radial motion reaches beyond the epicardium


def _heart_params(draw: _Draw, body: tuple[float, float, float, float], zcov: float) -> _Heart:
    """Draw a heart inside a torso ``(centre x, centre y, semi-axis x, semi-axis y)``."""
    tx, ty, a_body, b_body = body
    endo, wall = draw(21, 27), draw(7, 10)
    outer = endo + wall
    length = draw(55, 70)
    rv_angle = math.atan2(-draw(0.3, 0.8), 1.0)
    pap_r = 0.62 * endo
    opposite = rv_angle + math.pi
    pap0, pap1 = (
        (
            pap_r * math.cos(opposite + s * draw(0.6, 0.9)),
            pap_r * math.sin(opposite + s * draw(0.6, 0.9)),
        )
        for s in (-1.0, 1.0)
    )
    return _Heart(
        cx=tx - draw(0.12, 0.22) * a_body,
        cy=ty - draw(0.28, 0.4) * b_body,
        base=float(np.clip(draw(0.15, 0.35) * zcov, 8.0, 40.0)),
        endo=endo,
        wall=wall,
        length=length,
        apex_wall=0.8 * wall,
        rv_angle=rv_angle,
        rv_offset=draw(0.75, 0.9) * outer,
        rv_radii=(draw(0.8, 0.95) * outer, draw(1.15, 1.3) * outer, draw(0.8, 0.9) * length),
        rv_centre=-0.1 * length,
        rv_wall=draw(2.5, 4.0),
        pap=(pap0, pap1),
        la=(draw(-0.1, 0.1) * endo, draw(0.5, 0.7) * endo, draw(0.4, 0.5) * length),
        la_radii=(1.1 * endo, 0.85 * endo, 0.45 * length),
        shorten=draw(0.22, 0.32),
        descent=draw(0.08, 0.14),
        twist=math.radians(draw(4, 8)),
        rv_shorten=draw(0.12, 0.2),
        shift=draw.offset(1.5),
        reach=draw(8, 14),
    )


def _heart_sdfs(h: _Heart, x: Array, y: Array, z: Array, contraction: float) -> dict[str, Array]:
    """Signed distances of the heart's parts at one contraction, via a backward motion map."""
    c = contraction
    u = x - (h.cx + c * h.shift[0])
    v = y - (h.cy + c * h.shift[1])
    w = z - (h.base + c * h.shift[2])
    apex = h.length + h.apex_wall
    # Long axis: the base descends towards the fixed apex.
    big_w = np.where(w > -apex, -apex + (w + apex) / (1.0 - h.descent * c), w)
    # Radial: uniform scaling of the cavity, area-preserving in the wall, fading beyond it.
    s = 1.0 - h.shorten * c
    below = big_w < 0
    fade = np.exp(-((big_w / 10.0) ** 2))
    r0sq = h.endo**2 * np.where(below, np.clip(1 - (big_w / h.length) ** 2, 0, 1), fade)
    outer = h.endo + h.wall
    re0sq = outer**2 * np.where(below, np.clip(1 - (big_w / apex) ** 2, 0, 1), fade)
    delta = (1.0 - s * s) * r0sq
    cavity_sq = s * s * r0sq
    epi_now = np.sqrt(np.maximum(cavity_sq + re0sq - r0sq, 0.0))
    r2 = u * u + v * v
    excess = np.maximum(np.sqrt(r2) - epi_now, 0.0) * (1.0 / h.reach)
    k2 = np.where(
        r2 < cavity_sq, 1.0 / (s * s), 1.0 + delta * np.exp(-excess * excess) / (r2 + 1e-6)
    )
    big_r2 = k2 * r2
    k = np.sqrt(k2)
    psi = h.twist * c * np.clip(1.0 - 2.0 * (big_w + apex) / apex, -1, 1)
    cos, sin = np.cos(psi), np.sin(psi)
    big_u = (u * cos + v * sin) * k
    big_v = (v * cos - u * sin) * k

    def radial(radius: float, half_length: float) -> Array:
        k0 = np.sqrt(big_r2 * (1 / radius**2) + (big_w * (1 / half_length)) ** 2)
        k1 = np.sqrt(big_r2 * (1 / radius**4) + (big_w * (1 / half_length**2)) ** 2)
        return (k0 - 1.0) * (k0 + 1e-7 * radius) / (k1 + 1e-7)

    endo = np.maximum(radial(h.endo, h.length), big_w)
    epi = np.maximum(radial(outer, apex), big_w)
    cr, sr = math.cos(h.rv_angle), math.sin(h.rv_angle)
    srv = 1.0 - h.rv_shorten * c
    rv_shape = np.maximum(
        _ellipsoid(
            (big_u * cr + big_v * sr - h.rv_offset, h.rv_radii[0] * srv),
            (big_v * cr - big_u * sr, h.rv_radii[1] * srv),
            (big_w - h.rv_centre, h.rv_radii[2]),
        ),
        big_w - 4.0,
    )
    rp, lp = 0.18 * h.endo, 0.28 * h.length
    paps = [
        _ellipsoid((big_u - pu, rp), (big_v - pv, rp), (big_w + 0.55 * h.length, lp))
        for pu, pv in h.pap
    ]
    la = np.maximum(
        _ellipsoid(
            (big_u - h.la[0], h.la_radii[0]),
            (big_v - h.la[1], h.la_radii[1]),
            (big_w - h.la[2], h.la_radii[2]),
        ),
        -big_w,
    )
    return {
        "heart": np.minimum(np.minimum(epi, rv_shape - h.rv_wall), la - 2.5),
        "lv": np.maximum(endo, -np.minimum(*paps)),
        "rv": np.maximum(rv_shape, -epi),
        "la": la,
    }


def _cardiac(rng: np.random.Generator, n: int, depth: int, frames: int) -> Phantom:
    """A chest slab with a beating heart, frames over one cardiac cycle."""
    draw = _Draw(rng)
    sxy, sz = _voxel_sizes(draw, n, depth, (340, 400), (100, 130), 12.0)
    fov, zcov = n * sxy, depth * sz
    x, y, z = _axes(n, depth, sxy, sz)
    jitter = {
        "blood": 1.0,
        "myocardium": draw(0.22, 0.32),
        "fat": draw(0.75, 0.9),
        "muscle": draw(0.22, 0.32),
        "soft": draw(0.32, 0.4),
        "lung": draw(0.02, 0.06),
        "liver": draw(0.28, 0.4),
        "marrow": draw(0.4, 0.55),
        "csf": draw(0.8, 0.95),
        "mediastinum": draw(0.55, 0.7),
    }
    a_body = draw(0.39, 0.45) * fov
    b_body = a_body * draw(0.62, 0.74)
    tx, ty = draw(-0.03, 0.03) * fov, draw(-0.03, 0.03) * fov
    fat_t, wall_t = draw(8, 18), draw(8, 14)
    heart = _heart_params(draw, (tx, ty, a_body, b_body), zcov)
    apex_z = heart.base - heart.length - heart.apex_wall
    liver_top = apex_z + draw(-10, 25)
    liver_c = (tx + 0.25 * a_body, ty + 0.05 * b_body, liver_top - 110)
    spine = (tx + draw(-4, 4), ty + b_body - draw(60, 75))
    vert_r = draw(15, 19)
    canal = (spine[0], spine[1] + vert_r + draw(8, 11), draw(6, 8))
    aorta = (spine[0] - draw(22, 30), spine[1] - 0.4 * vert_r, draw(10, 13))
    margin = draw(5, 10)

    # The heart lives in a box around it; everything else is still and drawn once.
    reach = 2.3 * (heart.endo + heart.wall) + 15.0
    lo_x = int(np.clip(np.searchsorted(x[0, 0], heart.cx - reach), 0, n))
    hi_x = int(np.clip(np.searchsorted(x[0, 0], heart.cx + reach), lo_x, n))
    lo_y = int(np.clip(np.searchsorted(y[0, :, 0], heart.cy - reach), 0, n))
    hi_y = int(np.clip(np.searchsorted(y[0, :, 0], heart.cy + reach), lo_y, n))
    bx, by = x[..., lo_x:hi_x], y[:, lo_y:hi_y]
    box = (slice(None), slice(lo_y, hi_y), slice(lo_x, hi_x))
    has_heart = hi_x > lo_x and hi_y > lo_y

    body = _ellipsoid((x - tx, a_body), (y - ty, b_body))
    w_body = _width(body)
    inner = body + (fat_t + wall_t)
    canvas = np.zeros((depth, n, n), F32)
    _paint(canvas, _fraction(body, w_body), jitter["fat"])
    _paint(canvas, _fraction(body, w_body, fat_t), jitter["muscle"])
    _paint(canvas, _fraction(body, w_body, fat_t + wall_t), jitter["soft"])
    liver = np.maximum(
        _ellipsoid(
            (x - liver_c[0], 0.7 * a_body), (y - liver_c[1], 0.8 * b_body), (z - liver_c[2], 110.0)
        ),
        inner,
    )
    _paint(canvas, _fraction(liver), jitter["liver"])
    # Pericardial fat and mediastinum around the heart at its largest (end-diastole).
    envelope = np.full((depth, n, n), 1e3, F32)
    if has_heart:
        envelope[box] = _heart_sdfs(heart, bx, by, z, 0.0)["heart"] - margin
    lungs = np.minimum(
        _ellipsoid(
            (x - (tx + 0.5 * a_body), 0.55 * a_body),
            (y - ty, 0.78 * b_body),
            (z - (heart.base + 40), 150.0),
        ),
        _ellipsoid(
            (x - (tx - 0.5 * a_body), 0.55 * a_body),
            (y - ty, 0.78 * b_body),
            (z - (heart.base + 40), 150.0),
        ),
    )
    lungs = np.maximum(lungs, inner + 3.0)
    lungs = np.maximum(lungs, 0.13 * a_body - np.abs(x - spine[0]))
    lungs = np.maximum(lungs, np.maximum(4.0 - liver, -envelope))
    _paint(canvas, _fraction(lungs), jitter["lung"])
    if has_heart:
        _paint(canvas[box], _fraction(envelope[box]), jitter["mediastinum"])
    for cx, cy, r, tissue in (
        (*spine, vert_r, "marrow"),
        (*canal, "csf"),
        (*aorta, "blood"),
    ):
        _paint(canvas, _fraction(_ellipsoid((x - cx, r), (y - cy, r))), jitter[tissue])

    signal = np.empty((frames, depth, n, n), F32)
    for t, contraction in enumerate(_cycle(draw, frames)):
        signal[t] = canvas
        if not has_heart:
            continue
        region = signal[t][box]
        parts = _heart_sdfs(heart, bx, by, z, float(contraction))
        _paint(region, _fraction(parts["heart"]), jitter["myocardium"])
        for part in ("lv", "rv", "la"):
            _paint(region, _fraction(parts[part]), jitter["blood"])

    base = np.diag([-1.0, -1.0, 1.0])  # ITK's identity direction (LPS) written as RAS
    centre = (draw(-20, 20), draw(-20, 20), draw(-20, 20))
    affine = _affine(draw, rng, base, (sxy, sxy, sz), (n, n, depth), centre)
    return _finish(rng, draw, signal, affine, draw(0.03, 0.05), (x, y, z), jitter)


# --- knee -----------------------------------------------------------------------------------


def _knee(rng: np.random.Generator, n: int, depth: int, frames: int) -> Phantom:
    """A sagittal knee flexing from extension to about 80 degrees over the frames."""
    draw = _Draw(rng)
    sxy, sz = _voxel_sizes(draw, n, depth, (140, 180), (80, 110), 8.0)
    x, y, z = _axes(n, depth, sxy, sz)
    jitter = {
        "fat": draw(0.85, 1.0),
        "marrow": draw(0.72, 0.88),
        "muscle": draw(0.28, 0.4),
        "cartilage": draw(0.45, 0.6),
        "cortex": draw(0.02, 0.06),
        "tendon": draw(0.03, 0.07),
        "meniscus": draw(0.03, 0.07),
    }
    jx, jy, zc = draw(-8, 8), draw(-5, 12), draw(-5, 5)
    rc, spread, rz = draw(19, 24), draw(19, 23), draw(14, 17)
    cart, cortex = draw(1.8, 2.8), draw(1.2, 2.0)
    lateral = draw.sign()
    top = jy - rc - 2 * cart - 0.4  # tibial plateau (bone) at extension
    half_width = spread + rz
    thigh_r = (draw(52, 60), draw(52, 62))
    calf_r = (draw(44, 52), draw(44, 54))
    thigh_dx, calf_dx = draw(-6, 0), draw(-4, 2)
    subcut = draw(5, 11)
    pat_r = (draw(8, 10), draw(17, 21), draw(17, 21))
    pat0 = (jx + 1.45 * rc + 2 * cart + 0.5 + pat_r[0], jy + 0.7 * rc)
    tendon_r = draw(2.5, 3.5)
    menisc_h = draw(5, 7)
    flexion = math.radians(draw(70, 90))

    # The femur and thigh do not move.
    zm = z - zc
    condyles = np.minimum(
        _ellipsoid((x - jx, rc), (y - jy, rc), (zm - spread, rz)),
        _ellipsoid((x - jx, rc), (y - jy, rc), (zm + spread, rz)),
    )
    trochlea = _ellipsoid(
        (x - (jx + 0.6 * rc), 0.85 * rc), (y - (jy + 0.35 * rc), 0.95 * rc), (zm, spread + 4)
    )
    metaphysis = _ellipsoid(
        (x - (jx + 0.3 * rc), rc), (y - (jy + 1.1 * rc), 1.3 * rc), (zm, 0.95 * half_width)
    )
    shaft = np.maximum(_ellipsoid((x - (jx + 0.35 * rc), 0.6 * rc), (zm, 0.68 * rc)), jy + rc - y)
    femur = _smin(_smin(condyles, trochlea, 6.0), _smin(metaphysis, shaft, 10.0), 8.0)
    w_femur = _width(femur)
    # Cartilage covers the condyles and the trochlea, not the metaphysis.
    articular = np.maximum(
        np.sqrt((x - jx) ** 2 + (y - jy) ** 2) - 1.6 * rc,
        np.minimum(y - (jy + 0.2 * rc), (jx + 0.5 * rc) - x),
    )
    femur_cart = np.maximum(femur - cart, articular)
    thigh = _ellipsoid(
        (x - (jx + thigh_dx), thigh_r[0]),
        (np.minimum(y - jy, 0.0), 0.8 * thigh_r[0]),
        (zm, thigh_r[1]),
    )
    compartments = np.minimum(np.abs(zm - spread), np.abs(zm + spread)) - rz
    # Fibula, patella and tendon are narrow across the knee: draw them only in their slices.
    fib_z = lateral * (spread + 0.9 * rz)
    fib = _slab(z, zc + fib_z - 9.0, zc + fib_z + 9.0)
    mid = _slab(z, zc - max(pat_r[2], 14.0), zc + max(pat_r[2], 14.0))

    signal = np.empty((frames, depth, n, n), F32)
    for t in range(frames):
        angle = flexion * t / (frames - 1)
        # Tibia frame: the scene rotated back about the condyle centre.
        xt, yt = _rotate(x, y, jx, jy, angle)
        calf = _ellipsoid(
            (xt - (jx + calf_dx), calf_r[0]),
            (np.maximum(yt - jy, 0.0), 0.8 * calf_r[0]),
            (zm, calf_r[1]),
        )
        limb = _smin(thigh, calf, 12.0)
        xh, yh = _rotate(x, y, jx, jy, angle / 2)
        fat_pad = _ellipsoid(
            (xh - (jx + 0.15 * rc), 1.75 * rc),
            (yh - (jy - 0.45 * rc), 1.5 * rc),
            (zm, half_width + 8),
        )
        px = xt - (jx - 0.05 * rc)
        plateau = _round_box(px, yt - (top - 8.0), zm, (1.25 * rc, 8.0, half_width + 2), 5.0)
        flare = _ellipsoid((xt - jx, 1.05 * rc), (yt - (top - 20), 18.0), (zm, half_width - 4))
        tibial_shaft = np.maximum(
            _ellipsoid((xt - (jx + 0.05 * rc), 0.55 * rc), (zm, 0.6 * rc)), yt - (top - 20)
        )
        tuberosity = _ellipsoid(
            (xt - (jx + 0.85 * rc), 0.35 * rc), (yt - (top - 28), 12.0), (zm, 14.0)
        )
        tibia = _smin(_smin(plateau, flare, 10.0), _smin(tibial_shaft, tuberosity, 5.0), 10.0)
        zf = zm[fib] - fib_z
        fibula = _smin(
            _ellipsoid((xt - (jx - 0.55 * rc), 9.0), (yt - (top - 22), 11.0), (zf, 9.0)),
            np.maximum(_ellipsoid((xt - (jx - 0.6 * rc), 6.0), (zf, 6.0)), yt - (top - 22)),
            4.0,
        )
        tibia_cart = np.maximum(tibia - cart, (top - 3.0) - yt)
        # Menisci: wedges on the rim of each plateau, thick outside, thin towards the centre.
        rim = (np.abs(px) - 0.55 * rc) * (1.0 / (0.6 * rc))
        wedge = np.maximum(
            np.maximum(top - yt, yt - (top + menisc_h * np.clip(rim, 0.0, 1.0))),
            np.maximum(-rim, rim - 1.0) * (0.6 * rc),
        )
        menisci = np.maximum(np.maximum(wedge, compartments), cart - femur)
        # Patella: slides down the trochlea and settles closer to the joint centre.
        tilt = 0.7 * angle
        pull = 1.0 - 0.25 * angle / flexion
        pcx, pcy = _rotate(jx + (pat0[0] - jx) * pull, jy + (pat0[1] - jy) * pull, jx, jy, -tilt)
        ppx, ppy = _rotate(x, y, pcx, pcy, tilt)
        patella = _ellipsoid((ppx - pcx, pat_r[0]), (ppy - pcy, pat_r[1]), (zm[mid], pat_r[2]))
        patella_cart = np.maximum(patella - cart, ppx - pcx)
        pole = _rotate(pcx, pcy - 0.85 * pat_r[1], pcx, pcy, -tilt)
        insertion = _rotate(jx + 1.1 * rc, top - 30.0, jx, jy, -angle)
        tendon = np.maximum(_segment(x, y, pole, insertion) - tendon_r, np.abs(zm[mid]) - 14.0)

        canvas = signal[t]
        canvas[...] = 0.0
        w_limb = _width(limb)
        _paint(canvas, _fraction(limb, w_limb), jitter["fat"])
        _paint(canvas, _fraction(limb, w_limb, subcut), jitter["muscle"])
        _paint(canvas, _fraction(np.maximum(fat_pad, limb + subcut)), jitter["fat"])
        _paint(canvas, _fraction(femur_cart), jitter["cartilage"])
        _paint(canvas, _fraction(tibia_cart), jitter["cartilage"])
        for bone, where in ((femur, slice(None)), (tibia, slice(None)), (fibula, fib)):
            w_bone = w_femur if bone is femur else _width(bone)
            _paint(canvas[where], _fraction(bone, w_bone), jitter["cortex"])
            _paint(canvas[where], _fraction(bone, w_bone, cortex), jitter["marrow"])
        _paint(canvas, _fraction(menisci), jitter["meniscus"])
        _paint(canvas[mid], _fraction(patella_cart), jitter["cartilage"])
        w_pat = _width(patella)
        _paint(canvas[mid], _fraction(patella, w_pat), jitter["cortex"])
        _paint(canvas[mid], _fraction(patella, w_pat, cortex), jitter["marrow"])
        _paint(canvas[mid], _fraction(tendon), jitter["tendon"])

    # Sagittal slices: x runs anterior, y superior, z across the knee (right to left).
    base = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    centre = (-lateral * draw(80, 110), draw(-20, 20), draw(-30, 30))
    affine = _affine(draw, rng, base, (sxy, sxy, sz), (n, n, depth), centre)
    return _finish(rng, draw, signal, affine, draw(1.0, 3.0), (x, y, z), jitter)


def _segment(x: Array, y: Array, a: tuple[float, float], b: tuple[float, float]) -> Array:
    """In-plane distance to the segment from a to b."""
    bx, by = b[0] - a[0], b[1] - a[1]
    px, py = x - a[0], y - a[1]
    h = np.clip((px * bx + py * by) * (1.0 / (bx * bx + by * by + 1e-9)), 0.0, 1.0)
    return np.sqrt((px - h * bx) ** 2 + (py - h * by) ** 2)


# --- assembly -------------------------------------------------------------------------------


def _finish(
    rng: np.random.Generator,
    draw: _Draw,
    signal: Array,
    affine: Array,
    time_step: float,
    axes: tuple[Array, Array, Array],
    tissues: dict[str, float],
) -> Phantom:
    """Add intensity scale, noise level and bias field; expose (x, y, z, t) views."""
    scale = draw(1000, 3000)
    sigma = scale * draw(0.025, 0.06)
    bias = _bias(rng, *axes)
    return Phantom(
        signal=signal.transpose(3, 2, 1, 0),
        affine=affine,
        time_step=time_step,
        bias=bias.transpose(2, 1, 0),
        scale=scale,
        sigma=sigma,
        tissues=dict(tissues),
    )


def _smooth(volume: Array, sigma: float) -> Array:
    """``(z, y, x)`` smoothed in-plane with a Gaussian of ``sigma`` voxels (SimpleITK)."""
    image = sitk.GetImageFromArray(volume)
    return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, [sigma, sigma, 1e-3]))


def _move(volume: Array, angle: float, shift: tuple[float, float]) -> Array:
    """``(z, y, x)`` turned in-plane by ``angle`` degrees about the centre of the field of view
    and shifted by ``shift`` voxels along x and y (linear resampling, air outside)."""
    image = sitk.GetImageFromArray(volume)
    ny, nx = volume.shape[1:]
    # Resample maps each output point back to its source: the inverse of the motion.
    motion = sitk.Euler3DTransform(((nx - 1) / 2, (ny - 1) / 2, 0.0), 0.0, 0.0, math.radians(angle))
    motion.SetTranslation((shift[0], shift[1], 0.0))
    out = sitk.Resample(image, image, motion.GetInverse(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out)


def _vary(clean: Phantom, variation: Variation, rng: np.random.Generator) -> Phantom:
    """``clean`` with ``variation``'s texture, contrast, motion and noise, drawn from ``rng``."""
    draw = _Draw(rng)
    signal = clean.signal.transpose(3, 2, 1, 0)  # contiguous (t, z, y, x)
    frames = len(signal)
    if variation.texture:
        grain = _smooth(rng.standard_normal(signal.shape[1:], dtype=F32), 1.0)
        grain *= F32(variation.texture / max(float(grain.std()), 1e-6))
        grain += F32(1.0)
        signal = signal * np.clip(grain, 0.0, None)
    if variation.contrast:
        signal = np.power(
            np.clip(signal, 0.0, None), F32(math.exp(draw(-1, 1) * variation.contrast))
        )
    phase = np.linspace(-0.5, 0.5, frames) if frames > 1 else np.zeros(1)
    angles = np.zeros(frames)
    shifts = np.zeros((frames, 2))
    if variation.moves:
        mm = float(np.linalg.norm(clean.affine[:3, 0]))  # in-plane voxel size
        sweep = draw(0.5, 1.0) * variation.rotation * draw.sign()
        angles = sweep * phase
        way = draw(0, 2 * math.pi)
        shifts += np.outer(phase, [math.cos(way), math.sin(way)]) * draw(0.5, 1.0)
        shifts *= variation.translation / mm
        way, start = draw(0, 2 * math.pi), draw(0, 2 * math.pi)
        breath = np.sin(2 * math.pi * (phase + 0.5) + start) * variation.breathing / mm
        shifts += np.outer(breath, [math.cos(way), math.sin(way)])
        signal = np.stack(
            [
                _move(frame, float(a), (float(dx), float(dy)))
                for frame, a, (dx, dy) in zip(signal, angles, shifts, strict=True)
            ]
        )
    return replace(
        clean,
        signal=np.ascontiguousarray(signal, dtype=F32).transpose(3, 2, 1, 0),
        sigma=clean.sigma * variation.noise,
        angles=angles,
        shifts=shifts,
    )


def _check(kind: str, size: int, depth: int, frames: int, subjects: int = 1, seed: int = 0) -> None:
    """Refuse arguments out of range, or a scan too large for this machine's memory, with one
    clear message."""
    if kind not in KINDS:
        raise TsscError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    values = {"subjects": subjects, "size": size, "depth": depth, "frames": frames}
    for name, value in values.items():
        check_integer(name, value, *LIMITS[name])
    if not is_integer(seed) or seed < 0:
        raise TsscError(f"seed must be a whole number >= 0, got {seed!r}")
    # Subjects are drawn and written one at a time: memory does not grow with their number.
    voxels = int(size) * int(size) * int(depth)
    memory.check_fits(
        voxels * (6 * int(frames) + 4 * SCRATCH_VOLUMES),
        f"a scan of {size}x{size}x{depth} voxels and {frames} frames (--size, --depth, --frames; "
        "one subject at a time)",
    )


def phantom(
    kind: str,
    rng: np.random.Generator,
    size: int = 64,
    depth: int = 16,
    frames: int = 12,
    variation: Variation | None = None,
) -> Phantom:
    """Draw one subject's noise-free series (the ground truth behind ``synth_scan``).

    ``synth_scan`` with a generator in the same state gives this series with bias and noise.
    Arguments are those of ``synth_scan``.

    Raises:
        TsscError: for an unknown kind or sizes out of range.
    """
    _check(kind, size, depth, frames)
    make = _cardiac if kind == "cardiac" else _knee
    clean = make(rng, int(size), int(depth), int(frames))
    if variation is None or variation == Variation():
        return clean  # no draws: the scene as ever, draw for draw
    return _vary(clean, variation, rng)


def synth_scan(
    kind: str,
    rng: np.random.Generator,
    size: int = 64,
    depth: int = 16,
    frames: int = 12,
    variation: Variation | None = None,
) -> Scan:
    """Draw one synthetic subject.

    Args:
        kind: ``"cardiac"`` or ``"knee"``.
        rng: Random generator; the same state gives the same scan.
        size: In-plane matrix (x and y).
        depth: Number of (thick) slices, along z.
        frames: Number of time points.
        variation: Motion and looks added to the scene's own (None: none).

    Returns:
        An int16 ``(size, size, depth, frames)`` scan with a realistic oblique affine,
        ``time_step`` in seconds.

    Raises:
        TsscError: for an unknown kind or sizes out of range.
    """
    clean = phantom(kind, rng, size, depth, frames, variation)
    signal = clean.signal.transpose(3, 2, 1, 0)  # back to contiguous (t, z, y, x)
    gain = clean.bias.transpose(2, 1, 0) * F32(clean.scale)
    sigma = F32(clean.sigma)
    stored = np.empty(signal.shape, np.int16)
    for t, frame in enumerate(signal):
        real = frame * gain
        real += sigma * rng.standard_normal(frame.shape, dtype=F32)
        imag = rng.standard_normal(frame.shape, dtype=F32)
        imag *= sigma
        np.hypot(real, imag, out=real)
        np.rint(real, out=real)
        np.minimum(real, np.iinfo(np.int16).max, out=real)
        stored[t] = real
    return Scan(
        data=stored.transpose(3, 2, 1, 0),
        affine=clean.affine,
        time_step=clean.time_step,
        time_unit="sec",
    )


def write_cohort(
    out: Path,
    kind: str,
    subjects: int = 4,
    size: int = 64,
    depth: int = 16,
    frames: int = 12,
    seed: int = 0,
    overwrite: bool = False,
    variation: Variation | None = None,
    prefix: str | None = None,
) -> list[Path]:
    """Write a synthetic cohort and its samplesheet.

    Writes ``out/{prefix}_{i:03d}.nii.gz`` for each subject ``i`` (drawn with
    ``np.random.default_rng([seed, i])``) and ``out/samplesheet.csv`` (``subject,scan``, scan
    names relative to the sheet). All files appear together or not at all.

    Args:
        out: Output folder, created if missing.
        kind: ``"cardiac"`` or ``"knee"``.
        subjects: Number of scans.
        size: In-plane matrix.
        depth: Number of slices.
        frames: Number of time points.
        seed: Cohort seed.
        overwrite: Replace existing outputs instead of refusing.
        variation: Motion and looks added to every subject's scene (each draws its own).
        prefix: What subject ids start with (default: ``kind``), e.g. to tell cohorts of one
            kind but another variation apart when they are trained on together.

    Returns:
        The image paths.

    Raises:
        TsscError: for bad arguments, an output folder that is a file, or outputs that exist
            while ``overwrite`` is False.
    """
    _check(kind, size, depth, frames, subjects, seed)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TsscError("is not a folder", out)
    stem = check_subject_id(prefix or kind, what="prefix")
    names = [f"{stem}_{i:03d}" for i in range(subjects)]
    paths = [out / f"{name}.nii.gz" for name in names]
    with outputs(overwrite) as group:
        sheet = group.path(out / "samplesheet.csv")
        temps = [group.path(path) for path in paths]
        for i, temp in enumerate(temps):
            rng = np.random.default_rng([seed, i])
            scan = synth_scan(kind, rng, size, depth, frames, variation)
            write_scan(scan, temp, overwrite=True)
        rows = [f"{name},{path.name}" for name, path in zip(names, paths, strict=True)]
        sheet.write_text("\n".join(["subject,scan", *rows]) + "\n")
    return paths
