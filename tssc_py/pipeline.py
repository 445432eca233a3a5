"""The whole chain for a cohort on one machine, calling the same functions as the step scripts.

scan -> prepared -> chunks -> filled chunks -> volume -> restored -> metrics -> report.

Output layout under ``out``::

    prepared/SUBJECT.nii.gz, prepared/SUBJECT.json    model-space volume and its record
    METHOD/SUBJECT.<scan suffix>                      result in the scan's own geometry
                                                      (tssc/: diffusion refined by stage 2)
    filled/METHOD/SUBJECT.nii.gz                      model-space result of the figure
                                                      subject (evaluate mode only)
    metrics/SUBJECT.METHOD.frames.csv, .metrics.csv   evaluate mode only
    report/                                           tables, figures, report.html
    run.json                                          the run's settings and finished subjects
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tssc_py import __version__
from tssc_py.atomic import atomic_path, check_folder, outputs
from tssc_py.errors import TsscError, about, differences
from tssc_py.io import read_scan, scan_shape, scan_suffix, write_scan
from tssc_py.methods import Method, fill_chunk, get_method, method_names
from tssc_py.methods.base import RUNTIME_OPTIONS, method_class, option_defaults
from tssc_py.metrics import check_scored_shape, check_ssim_shape, write_subject_metrics
from tssc_py.prepare import (
    PrepareConfig,
    frame_positions,
    prepare_scan,
    restore_scan,
    save_record,
    select_frames,
)
from tssc_py.report import (
    FILLED,
    PREPARED,
    RUN_STATE,
    check_label,
    folder_label,
    write_report,
)
from tssc_py.samplesheet import Subject, read_inputs
from tssc_py.signals import stop_if_terminated
from tssc_py.slices import assemble_chunks, split_volume
from tssc_py.stage2 import REFINED, REFINES
from tssc_py.stage2.refine import Refiner, load_refiner

"""The run's settings and the subjects it finished, in OUT: what ``--resume`` continues from."""


def _plain(value: object) -> Any:
    """``value`` as JSON gives it back (tuples as lists, paths as strings), for comparing."""
    return json.loads(json.dumps(value, default=str))


def _check_subjects(
    subjects: Sequence[Subject],
    config: PrepareConfig,
    ssim_mode: str,
    runners: Sequence[Method] = (),
) -> dict[str, dict[str, object]]:
    """Check every subject from its scan's header before any work: readable, 4D, the frame
    choice, the scored volume against the SSIM window, the known frames against what each of
    ``runners`` can fill.

    Returns:
        Subject -> its scan (absolute) and chosen source frames, as ``run.json`` records them.

    Raises:
        TsscError: Naming the first scan that would fail.
    """
    entries: dict[str, dict[str, object]] = {}
    for subject in subjects:
        shape = scan_shape(subject.scan)
        chosen = _subject_config(config, subject)
        with about(subject.scan):
            try:
                frames = select_frames(shape[3], chosen)
                n_frames, known, _ = frame_positions(len(frames), chosen)
                for runner in runners:
                    runner.check_known(known, n_frames)
            except TsscError as exc:  # rows may share a scan: name the row's subject too
                raise TsscError(f"subject {subject.subject!r}: {exc.message}", exc.path) from None
            if chosen.mode == "evaluate":
                # The scored volume: the scan's own slices that the depth fit keeps.
                check_ssim_shape((chosen.size, chosen.size, min(shape[2], chosen.depth)), ssim_mode)
        entries[subject.subject] = {"scan": str(subject.scan.resolve()), "frames": frames}
    return entries


def _holds_results(out: Path) -> bool:
    """Whether ``out`` holds files other than the ``run.json`` of a run that finished no
    subject (a run stopped by a bad first scan leaves only that, and empty folders)."""
    for path in out.rglob("*"):
        if path.is_dir():
            continue
        if path == out / RUN_STATE:
            try:
                if not json.loads(path.read_text())["done"]:
                    continue
            except (OSError, ValueError, KeyError, TypeError):
                pass
        return True
    return False


def _write_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_text(json.dumps(state, indent=1) + "\n")


def _with_later_options(before: Any, settings: dict[str, Any]) -> Any:
    """The recorded settings as this version records them: with the defaults of options a
    method gained since (a run of an earlier tssc recorded no value for them, and it ran with
    the default: e.g. ``demons``' ``iterations``, ``sigma``, ``levels``, recorded since
    2026-11-26), without the runtime options earlier versions recorded (``batch_size``)."""
    methods = before.get("methods") if isinstance(before, dict) else None
    if not isinstance(methods, dict):
        return before
    filled = {}
    for name, recorded in methods.items():
        now = settings["methods"].get(name)
        if isinstance(recorded, dict) and isinstance(now, dict) and name in method_names():
            defaults = _plain(option_defaults(method_class(name)))
            missing = {k: defaults[k] for k in now if k not in recorded and k in defaults}
            recorded = {**missing, **recorded}
            recorded = {k: v for k, v in recorded.items() if k not in RUNTIME_OPTIONS}
        filled[name] = recorded
    return {**before, "methods": filled}


def _resumed(
    path: Path,
    settings: dict[str, Any],
    entries: dict[str, dict[str, object]],
    keep_filled: str | None,
) -> dict[str, list[str]]:
    """The subjects an earlier run in ``path.parent`` finished with these ``settings``, each
    with the files it wrote (relative to the run folder).

    A subject counts as finished when ``run.json`` lists it and every file it wrote is still
    there (a deleted result is made again), and, for ``keep_filled`` (the figure subject of an
    evaluate run), when its model-space series were kept. The input may gain subjects and
    change their order.

    Raises:
        TsscError: If there is no ``run.json``, or it records other settings, or a finished
            subject is missing from the input or now has another scan or frame choice.
    """
    if not path.is_file():
        raise TsscError("nothing to resume: no run.json (start the run without --resume)", path)
    try:
        state = json.loads(path.read_text())
        before, done, recorded = state["settings"], state["done"], state["subjects"]
    except (ValueError, KeyError, TypeError) as exc:
        raise TsscError(f"unreadable run state ({exc})", path) from None
    if not isinstance(done, dict) or not isinstance(recorded, dict):
        raise TsscError("a run state of another tssc version (start again with --overwrite)", path)
    changed = differences(_with_later_options(before, settings), settings)
    if changed:
        raise TsscError(
            f"the run was made with other settings ({changed}); "
            "resume with the same options, or start again with --overwrite",
            path,
        )
    for subject in done:
        if subject not in entries:
            raise TsscError(
                f"finished subject {subject!r} is not in the input any more "
                "(start again with --overwrite)",
                path,
            )
        then, now = recorded.get(subject, {}), entries[subject]
        if then != now:
            raise TsscError(
                f"subject {subject!r} was run from {then.get('scan')} frames "
                f"{then.get('frames')}, the input now gives {now['scan']} frames "
                f"{now['frames']} (start again with --overwrite)",
                path,
            )
    out = path.parent
    return {
        subject: files
        for subject, files in done.items()
        if all((out / name).is_file() for name in files)
        and (subject != keep_filled or any(name.startswith(f"{FILLED}/") for name in files))
    }


def _subject_config(config: PrepareConfig, subject: Subject) -> PrepareConfig:
    """The cohort options, with the samplesheet's frame range where it gives one."""
    start, end = subject.start_frame, subject.end_frame
    return replace(
        config,
        start_frame=config.start_frame if start is None else start,
        end_frame=config.end_frame if end is None else end,
    )


def run_subject(
    subject: Subject,
    out: Path,
    runners: Sequence[Method],
    config: PrepareConfig,
    chunk_size: int = 8,
    ssim_mode: str = "3d",
    overwrite: bool = False,
    progress: tqdm | None = None,
    refiner: Refiner | None = None,
    keep_filled: bool = False,
) -> list[Path]:
    """Run every method (ready instances) on one subject; outputs appear all or none.

    With a ``refiner``, the ``diffusion`` output is also refined by stage 2 and written as
    the method ``tssc``. With ``keep_filled`` (evaluate mode), the model-space results are
    kept as ``filled/METHOD/SUBJECT.nii.gz`` for the report's example figures.
    """
    scan = read_scan(subject.scan)
    with about(subject.scan):
        prepared, record = prepare_scan(
            scan, _subject_config(config, subject), subject.subject, str(subject.scan)
        )
        chunks = split_volume(prepared.data, record, chunk_size)
        if record.mode == "evaluate":
            check_scored_shape(record, ssim_mode)  # before the methods run, not after
    written = []
    with outputs(overwrite) as group:
        written.append(
            write_scan(prepared, out / PREPARED / f"{subject.subject}.nii.gz", group=group)
        )
        written.append(out / PREPARED / f"{subject.subject}.json")
        save_record(record, group.path(written[-1]))
        for runner in runners:
            if progress is not None:
                progress.set_postfix_str(f"{subject.subject} {runner.name}")
            with about(subject.scan):
                filled = assemble_chunks([fill_chunk(chunk, runner) for chunk in chunks])
            results = [(runner.name, filled)]
            if refiner is not None and runner.name == REFINES:
                with about(subject.scan):
                    results.append((REFINED, refiner(filled, record.known_frames)))
            for name, volume in results:
                with about(subject.scan):
                    restored = restore_scan(volume, record)
                target = out / name / f"{subject.subject}{scan_suffix(subject.scan)}"
                written.append(write_scan(restored, target, group=group))
                if record.mode == "evaluate":
                    written += write_subject_metrics(
                        volume, prepared.data, record, name, out / "metrics", ssim_mode, group
                    )
                if keep_filled and record.mode == "evaluate":
                    target = out / FILLED / name / f"{subject.subject}.nii.gz"
                    written.append(write_scan(prepared.replace(data=volume), target, group=group))
            if progress is not None:
                progress.update()
    return written


def run_cohort(
    inputs: str | Path,
    out: Path,
    methods: Sequence[str] | str = ("linear", "nearest"),
    config: PrepareConfig | None = None,
    chunk_size: int = 8,
    ssim_mode: str = "3d",
    overwrite: bool = False,
    show_progress: bool = True,
    method_options: Mapping[str, object] | None = None,
    refine_options: Mapping[str, Any] | None = None,
    dataset: str | None = None,
    figure_subject: str | None = None,
    resume: bool = False,
) -> list[Path]:
    """Prepare, interpolate, restore and score every subject, then write the report.

    Args:
        inputs: A scan file, a glob of scan files, or a samplesheet CSV.
        out: Output folder (see the module docstring for its layout).
        methods: Registered method names (or one text of comma-separated names, as
            ``tssc-run --methods`` takes them).
        config: Preparation options (a samplesheet's frame range overrides them per subject).
        chunk_size: Slices per chunk.
        ssim_mode: ``"3d"`` or ``"2d"``.
        overwrite: Replace existing outputs (an earlier run's ``metrics/``, ``filled/`` and
            ``report/`` are removed first); otherwise a non-empty ``out`` is refused.
        show_progress: Draw a progress bar on stderr.
        method_options: Options for the methods (see :func:`~tssc_py.methods.get_method`).
        refine_options: Stage 2 (:func:`~tssc_py.stage2.refine.load_refiner`'s arguments:
            ``checkpoint``, ``tile``, ``overlap``, ``backend``; the device is the methods'):
            refine the ``diffusion`` output, reported as the method ``tssc`` next to
            ``diffusion`` (stage 1 alone, the paper's ablation). None: no stage 2.
        dataset: The cohort's label in the report (default: the name of the folder holding
            ``inputs``).
        figure_subject: The subject of the report's example figures (default: the first).
        resume: Continue the run in ``out`` (its ``run.json``): subjects it finished are kept,
            the others run (replacing what an interrupted subject left), then the report is
            made again. Refused if the settings differ from the recorded ones.

    Returns:
        Every file written.
    """
    if resume and overwrite:
        raise TsscError("resume and overwrite exclude each other")
    config = config or PrepareConfig()
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise TsscError("no method given")
    method_options = dict(method_options or {})
    refiner = None
    if refine_options is not None:
        if REFINES not in methods:
            raise TsscError(f"stage 2 refines the {REFINES!r} method's output: add it to methods")
        device = str(method_options.get("device") or "auto")
        refiner = load_refiner(device=device, **refine_options)
    # Built once: a trained model loads here, not once per subject.
    runners = [get_method(name, **method_options) for name in methods]
    subjects = read_inputs(inputs)
    # Checked now, not after hours of work.
    dataset = check_label(dataset or folder_label([Path(inputs)]))
    if figure_subject is not None and figure_subject not in {s.subject for s in subjects}:
        raise TsscError(f"figure subject {figure_subject!r} is not in the input", inputs)
    out = Path(out)
    # Everything that decides the outputs, defaults included, as run.json records it; the
    # figure subject as given (by default the first row, which a grown sheet may change).
    # The frame choice is compared per subject, resolved (a range written out as the default
    # is the default).
    chosen = ("frames", "start_frame", "end_frame")
    settings = _plain(
        {
            "methods": {runner.name: runner.settings() for runner in runners},
            "refine": None if refiner is None else refiner.settings(),
            "prepare": {k: v for k, v in config.to_dict().items() if k not in chosen},
            "chunk_size": chunk_size,
            "ssim": ssim_mode,
            "dataset": dataset,
            "figure_subject": figure_subject,
        }
    )
    if figure_subject is None:
        figure_subject = subjects[0].subject
    entries = _check_subjects(subjects, config, ssim_mode, runners)
    keep_filled = figure_subject if config.mode == "evaluate" else None
    state_path = out / RUN_STATE
    done: dict[str, list[str]] = {}
    if resume:
        done = _resumed(state_path, settings, entries, keep_filled)
    elif check_folder(out).exists() and _holds_results(out) and not overwrite:
        raise TsscError(
            "output folder is not empty (use --resume to continue the run in it, "
            "--overwrite to replace its outputs)",
            out,
        )
    if overwrite:
        # A run's outputs describe one run: a rerun with fewer methods or subjects must not
        # leave what an earlier run made there.
        for name in ("metrics", FILLED, "report", PREPARED, *method_names(), REFINED):
            shutil.rmtree(out / name, ignore_errors=True)
    state = {
        "tssc_version": __version__,
        "settings": settings,
        "subjects": entries,
        "done": done,
    }
    _write_state(state_path, state)
    written: list[Path] = []
    with tqdm(
        total=len(subjects) * len(methods),
        initial=len(done) * len(methods),
        desc="tssc-run",
        unit="run",
        disable=not show_progress,
    ) as progress:
        if refiner is not None:
            progress.write(f"stage 2 state-space backend: {refiner.backend}", file=sys.stderr)
        if resume:
            progress.write(
                f"resuming: {len(done)} of {len(subjects)} subjects already done", file=sys.stderr
            )
        for subject in subjects:
            if subject.subject in done:
                continue
            stop_if_terminated()
            made = run_subject(
                subject,
                out,
                runners,
                config,
                chunk_size,
                ssim_mode,
                overwrite or resume,
                progress,
                refiner,
                keep_filled=subject.subject == keep_filled,
            )
            written += made
            done[subject.subject] = [p.relative_to(out).as_posix() for p in made]
            _write_state(state_path, state)
    if resume and keep_filled is not None:
        # The figure subject may have changed (a reordered sheet): one subject's series stay.
        for subject_id, files in done.items():
            kept = [f for f in files if subject_id == keep_filled or not f.startswith(f"{FILLED}/")]
            for name in set(files) - set(kept):
                (out / name).unlink(missing_ok=True)
            files[:] = kept
        _write_state(state_path, state)
    if config.mode == "evaluate":
        written += write_report(
            out / "report",
            datasets=[(dataset, out)],
            figure_subject=figure_subject,
            overwrite=overwrite or resume,
        )
    return [*written, state_path]
