"""I/O benchmark: prepare + split + assemble + restore of one 4D scan vs plain nibabel I/O.

The project's goal: running the step scripts ``tssc-prepare``, ``tssc-split``,
``tssc-assemble`` and ``tssc-restore`` in sequence on one 256x256x32x12 scan takes at most 3x
the time of plainly loading and saving that scan with nibabel, and the peak memory of each step
stays under 4x the scan's float32 size.

The script writes one synthetic int16 4D NIfTI (smooth anatomy, a moving blob, noise; seeded)
with an anisotropic, slightly oblique affine into a temporary folder and times:

* ``baseline``: ``nibabel.load``, ``np.asanyarray(img.dataobj)``, ``nibabel.save`` (.nii.gz);
* ``prepare``, ``split``, ``assemble``, ``restore``: the library functions the step scripts
  call, with the same arguments a user running them one after the other would give
  (``--size``/``--depth`` as given, 8 slices per chunk). The chunks are assembled unfilled:
  filling is a method's cost, not I/O; an informational row times ``interpolate_file`` with
  the ``linear`` method over every chunk, outside the total.

Every measurement (and the making of the scan) runs in a fresh interpreter (this script
re-invoked with ``--worker``), so its peak memory is its own: the peak RSS after the step minus
the RSS right before it, after every import, so the import cost of numpy, nibabel and SimpleITK
is not counted. The peak is the process's own high-water mark ``VmHWM`` (reset to the current
RSS just before the step through ``/proc/self/clear_refs`` where the kernel allows it), not
``ru_maxrss``: Linux carries ``ru_maxrss`` over ``exec`` from the parent, so a child started
from a process holding 300 MB reports at least 300 MB whatever it does itself. ``ru_maxrss``
is still recorded in the workers' JSON. Each repeat runs every measurement once; the table
shows the median over repeats.

Usage (from the repository root)::

    .venv/bin/python benchmarks/io.py                    # the goal's 256x256x32x12 scan
    .venv/bin/python benchmarks/io.py --size 64 --depth 8 --frames 4 --repeats 1
    .venv/bin/python benchmarks/io.py --between .nii.gz  # compressed prepared/filled volumes

One step alone (to profile it), everything written inside ``WORK``: the scan as
``WORK/subject01.nii.gz``, each step's outputs under ``WORK/repeat0/``; the steps in this
order, each reading what the one before wrote, all with the same options::

    .venv/bin/python benchmarks/io.py --worker synth --workdir "$WORK"
    .venv/bin/python -m cProfile -s tottime benchmarks/io.py --worker prepare --workdir "$WORK"
    # ... then split, interpolate, assemble, restore

Intermediate volumes default to uncompressed ``.nii``, the format the README recommends between
steps: gzip of float32 data costs about a second per write and saves little.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench_common import (  # noqa: E402  (this folder is sys.path[0]; the line above adds tssc_py)
    Parser,
    int_at_least,
    positive_int,
    run_script,
    run_worker,
    status_kib,
)

from tssc_py.errors import TsscError  # noqa: E402
from tssc_py.prepare import PrepareConfig  # noqa: E402

SUBJECT = "subject01"
CHUNK_SIZE = 8
TIME_GOAL = 3.0
MEMORY_GOAL = 4.0
CHAIN = ("prepare", "split", "assemble", "restore")
# The chunks are filled (linear, reported for information) before they are assembled: an
# unfilled chunk holds the hidden truth, and assembling one is refused.
STEPS = ("baseline", *CHAIN[:2], "interpolate", *CHAIN[2:])
WORKERS = ("synth", *STEPS)
KB = 1024 / 1e6  # /proc and ru_maxrss "kB" are KiB; figures are printed in MB (1e6 bytes)


def synth_scan(size: int, depth: int, frames: int, seed: int = 0) -> nib.Nifti1Image:
    """A synthetic int16 cardiac-like 4D scan ``size x size x depth x frames``.

    A smooth body ellipsoid with a few internal structures, a blob that moves and beats over
    time, a smooth bias field and Gaussian noise; an anisotropic, slightly oblique affine.
    """
    rng = np.random.default_rng(seed)
    x = np.linspace(-1, 1, size, dtype=np.float32)[:, None, None]
    y = np.linspace(-1, 1, size, dtype=np.float32)[None, :, None]
    z = np.linspace(-1, 1, depth, dtype=np.float32)[None, None, :]

    def soft(r2: np.ndarray, sharpness: float = 25.0) -> np.ndarray:
        """A smooth indicator of ``r2 < 1``."""
        return 1.0 / (1.0 + np.exp(np.minimum(sharpness * (r2 - 1.0), 60.0)))

    body = soft((x / 0.85) ** 2 + (y / 0.65) ** 2 + (z / 1.4) ** 2)
    lungs = soft(((np.abs(x) - 0.42) / 0.25) ** 2 + (y / 0.4) ** 2 + (z / 1.1) ** 2)
    spine = soft((x / 0.08) ** 2 + ((y + 0.5) / 0.08) ** 2)
    bias = 1.0 + 0.15 * x + 0.1 * y - 0.05 * z
    static = (600.0 * body * (1.0 - 0.8 * lungs) + 500.0 * spine * body) * bias
    data = np.empty((size, size, depth, frames), dtype=np.int16)
    for t in range(frames):
        phase = 2 * np.pi * t / max(frames, 1)
        cx, cy = 0.05 * np.cos(phase), 0.1 + 0.04 * np.sin(phase)
        radius = 0.22 * (1.0 + 0.2 * np.cos(phase))
        blob = soft(((x - cx) ** 2 + (y - cy) ** 2) / radius**2 + (z / 0.9) ** 2, 12.0)
        frame = static + 900.0 * blob * bias
        frame += rng.normal(0.0, 25.0, frame.shape).astype(np.float32)
        data[..., t] = np.clip(np.rint(frame), 0, 32767).astype(np.int16)
    angle = np.deg2rad(12.0)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([1.35, 1.35, 4.0])
    affine[:3, 3] = [-170.0, -150.0, -60.0]
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_zooms((*img.header.get_zooms()[:3], 0.045))
    return img


def _reset_peak() -> bool:
    """Reset the peak-RSS high-water mark to the current RSS (Linux >= 4.0), if allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _paths(work: Path, between: str, repeat: int = 0) -> dict[str, Path]:
    """Files of one repeat, all inside ``work``: the scan the repeats share, and each repeat's
    outputs in ``work/repeatN``; ``between`` is the suffix of the prepared and filled volumes."""
    run = work / f"repeat{repeat}"
    return {
        "scan": work / f"{SUBJECT}.nii.gz",
        "base": run / "baseline" / "out.nii.gz",
        "prepared": run / "prep" / f"{SUBJECT}{between}",
        "record": run / "prep" / f"{SUBJECT}.json",
        "chunks": run / "chunks",
        "interp": run / "interp",
        "filled": run / f"filled{between}",
        "restored": run / "restored.nii.gz",
    }


def _step(name: str, work: Path, args: argparse.Namespace) -> Callable[[], object]:
    """The call to time for step ``name``; imports happen here, before the measurement."""
    from tssc_py.methods import interpolate_file
    from tssc_py.prepare import PrepareConfig, prepare_file, restore_file
    from tssc_py.slices import assemble_files, split_file

    p = _paths(work, args.between, args.repeat)

    def baseline() -> None:
        img = nib.load(p["scan"])
        data = np.asanyarray(img.dataobj)
        p["base"].parent.mkdir(parents=True, exist_ok=True)
        nib.save(nib.Nifti1Image(data, img.affine, img.header), p["base"])

    def chunk_files(folder: str = "chunks") -> list[Path]:
        return sorted(p[folder].glob(f"{SUBJECT}.chunk*.npz"))

    config = PrepareConfig(size=args.size, depth=args.depth, frames=args.frames)
    calls: dict[str, Callable[[], object]] = {
        "baseline": baseline,
        "prepare": lambda: prepare_file(p["scan"], p["prepared"], config),
        "split": lambda: split_file(p["prepared"], p["record"], p["chunks"], CHUNK_SIZE),
        "assemble": lambda: assemble_files(chunk_files("interp"), p["record"], p["filled"]),
        "restore": lambda: restore_file(p["filled"], p["record"], p["restored"]),
        "interpolate": lambda: [
            interpolate_file(c, "linear", p["interp"] / c.name) for c in chunk_files()
        ],
    }
    return calls[name]


def worker(name: str, work: Path, args: argparse.Namespace) -> dict[str, float | bool]:
    """Run one step in this (fresh) process and measure its time and peak memory."""
    if name == "synth":
        work.mkdir(parents=True, exist_ok=True)
        scan = _paths(work, args.between)["scan"]
        nib.save(synth_scan(args.size, args.depth, args.frames, seed=0), scan)
        return {}
    call = _step(name, work, args)
    gc.collect()
    before = status_kib("VmRSS")
    import_peak = status_kib("VmHWM")
    reset = _reset_peak()
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    hwm = status_kib("VmHWM")
    return {
        "seconds": seconds,
        "rss_before_mb": before * KB,
        "peak_extra_mb": max(0, hwm - before) * KB,
        "process_peak_mb": max(hwm, import_peak) * KB,
        "ru_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * KB,
        "peak_reset": reset,
    }


def _run_worker(
    name: str, work: Path, args: argparse.Namespace, repeat: int = 0
) -> dict[str, float | bool]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        name,
        "--workdir",
        str(work),
        "--size",
        str(args.size),
        "--depth",
        str(args.depth),
        "--frames",
        str(args.frames),
        "--between",
        args.between,
        "--repeat",
        str(repeat),
    ]
    output = run_worker(command, f"step {name}")
    return json.loads(output.strip().splitlines()[-1])


def _machine() -> str:
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return f"{os.cpu_count()} cores, {model}, {pages / 2**30:.1f} GiB RAM, {platform.platform()}"


def main(argv: list[str] | None = None) -> None:
    """Parse options, run the benchmark (or one worker step) and print the table."""
    parser = Parser(__doc__)
    # The bin/ scripts' smallest --size (tssc-prepare).
    parser.add_argument("--size", type=int_at_least(8), default=256, help="in-plane size (x = y)")
    parser.add_argument("--depth", type=positive_int, default=32, help="slices (z)")
    parser.add_argument(
        "--frames", type=positive_int, default=12, help="frames (t; evaluate mode needs 3)"
    )
    parser.add_argument("--repeats", type=positive_int, default=3, help="repeats (median)")
    parser.add_argument(
        "--between",
        choices=(".nii.gz", ".nii"),
        default=".nii",
        help="suffix of the prepared and filled volumes between the steps",
    )
    parser.add_argument(
        "--worker",
        choices=WORKERS,
        help="run one step alone in --workdir and print its JSON (to profile it; see the "
        "module's docstring)",
    )
    parser.add_argument("--workdir", type=Path, help="the folder of --worker")
    parser.add_argument("--repeat", type=int_at_least(0), default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    # The preparation's own checks (frames for evaluate mode...), before any work.
    PrepareConfig(size=args.size, depth=args.depth, frames=args.frames)

    if args.worker:
        if args.workdir is None:
            raise TsscError("--worker needs --workdir")
        print(json.dumps(worker(args.worker, args.workdir, args)))
        return

    shape = (args.size, args.size, args.depth, args.frames)
    float32_mb = float(np.prod(shape)) * 4 / 1e6
    print(
        f"scan: {'x'.join(map(str, shape))} int16 .nii.gz, float32 size {float32_mb:.1f} MB; "
        f"prepared and filled volumes written as {args.between}"
    )
    print(f"machine: {_machine()}")
    print(f"python {platform.python_version()}, numpy {np.__version__}, nibabel {nib.__version__}")
    results: dict[str, list[dict[str, float | bool]]] = {s: [] for s in STEPS}
    with tempfile.TemporaryDirectory(prefix="tssc-bench-") as tmp:
        work = Path(tmp)
        first = _paths(work, args.between)
        _run_worker("synth", work, args)
        print(f"scan file: {first['scan'].stat().st_size / 1e6:.1f} MB on disk")
        for repeat in range(args.repeats):
            for step in STEPS:
                results[step].append(_run_worker(step, work, args, repeat))
        restored = nib.load(first["restored"])
        if restored.shape != shape or restored.get_data_dtype() != np.int16:
            raise TsscError(f"restored scan is {restored.shape} {restored.get_data_dtype()}")
        sizes = {
            name: first[name].stat().st_size / 1e6
            for name in ("base", "prepared", "filled", "restored")
        }
        sizes["chunks"] = sum(f.stat().st_size for f in first["chunks"].glob("*.npz")) / 1e6

    def median(step: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in results[step])

    base = median("baseline", "seconds")
    total = statistics.median(
        sum(float(results[s][i]["seconds"]) for s in CHAIN) for i in range(args.repeats)
    )
    print()
    print(f"median of {args.repeats} repeat(s); memory = peak RSS in the step's own process")
    print("(VmHWM) minus its RSS after imports; 'x scan' = that / the scan's float32 size")
    print()
    print("| step | seconds | x baseline | peak extra MB | x scan f32 | process peak MB |")
    print("|---|---:|---:|---:|---:|---:|")

    def row(label: str, step: str | None, seconds: float) -> None:
        if step is None:
            mem = "|  |  |  |"
        else:
            extra = median(step, "peak_extra_mb")
            mem = (
                f"| {extra:.0f} | {extra / float32_mb:.2f} | "
                f"{median(step, 'process_peak_mb'):.0f} |"
            )
        print(f"| {label} | {seconds:.2f} | {seconds / base:.2f} {mem}")

    row("baseline: nibabel load + save", "baseline", base)
    for step in CHAIN:
        row(step, step, median(step, "seconds"))
    row("**total (prepare+split+assemble+restore)**", None, total)
    row("(info) interpolate linear, all chunks", "interpolate", median("interpolate", "seconds"))
    print()
    worst = max(median(s, "peak_extra_mb") for s in CHAIN)
    whole = max(float(r["process_peak_mb"]) for s in CHAIN for r in results[s])
    time_ok = total <= TIME_GOAL * base
    mem_ok = worst < MEMORY_GOAL * float32_mb
    print(
        f"time goal (total <= {TIME_GOAL:g}x baseline): {total / base:.2f}x -> "
        f"{'MET' if time_ok else 'NOT MET'}"
    )
    print(
        f"memory goal (every step's peak extra < {MEMORY_GOAL:g}x scan f32 = "
        f"{MEMORY_GOAL * float32_mb:.0f} MB): worst {worst:.0f} MB = "
        f"{worst / float32_mb:.2f}x -> {'MET' if mem_ok else 'NOT MET'}"
    )
    imports = max(float(r["rss_before_mb"]) for s in CHAIN for r in results[s])
    print(
        f"whole-process peak RSS of a chain step: {whole:.0f} MB "
        f"(RSS after imports up to {imports:.0f} MB)"
    )
    print("files (MB): " + ", ".join(f"{k} {v:.1f}" for k, v in sizes.items()))
    resets = all(bool(r["peak_reset"]) for rs in results.values() for r in rs)
    print(f"peak RSS reset before each step via /proc/self/clear_refs: {resets}")


if __name__ == "__main__":
    sys.exit(run_script(main))
