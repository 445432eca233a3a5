"""The whole chain for a cohort on one machine, calling the same functions as the step scripts.

scan -> prepared -> chunks -> filled chunks -> volume -> restored -> metrics -> report.

Output layout under ``out``::

    prepared/SUBJECT.nii.gz, prepared/SUBJECT.json    model-space volume and its record
    METHOD/SUBJECT.<scan suffix>                      result in the scan's own geometry
                                                      (tssc/: diffusion refined by stage 2,
                                                      METHOD_sc/ another method refined)
    filled/METHOD/SUBJECT.nii.gz                      model-space result of the figure
                                                      subject (evaluate mode only)
    metrics/SUBJECT.METHOD.frames.csv, .metrics.csv   evaluate mode only
    report/                                           tables, figures, report.html
    run.json                                          the run's settings, its finished
                                                      subjects and the files each has
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tssc_py import __version__
from tssc_py.atomic import atomic_path, check_folder, outputs, remove_leftovers
from tssc_py.errors import TsscError, about, differences
from tssc_py.io import read_scan, scan_digest, scan_files, scan_shape, scan_suffix, write_scan
from tssc_py.methods import Method, fill_chunk, get_method, method_names
from tssc_py.methods.base import RUNTIME_OPTIONS, method_class, option_defaults
from tssc_py.metrics import check_scored_shape, check_ssim_shape, write_subject_metrics
from tssc_py.names import inside
from tssc_py.prepare import (
    PrepareConfig,
    check_memory,
    frame_positions,
    prepare_scan,
    restore_scan,
    save_record,
    select_frames,
)
from tssc_py.report import check_label, folder_label, report_files, write_report
from tssc_py.runs import FILLED, METRICS, PREPARED, REFINES, REPORT, RUN_STATE, refined_name
from tssc_py.samplesheet import Subject, read_inputs
from tssc_py.signals import stop_if_terminated
from tssc_py.slices import assemble_chunks, split_volume
from tssc_py.stage2.refine import Refiner, load_refiner


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
    choice, the memory its series need, the scored volume against the SSIM window, the known
    frames against what each of ``runners`` can fill.

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
                check_memory(chosen, shape)
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


def run_folders() -> list[str]:
    """The folders of a run folder that a run writes (and ``--overwrite`` may empty)."""
    names = method_names()
    return [PREPARED, *names, *map(refined_name, names), METRICS, FILLED, REPORT]


def _check_inputs_outside(out: Path, subjects: Sequence[Subject]) -> None:
    """Refuse scans that lie where the run writes: an output (or ``--overwrite``) could
    replace one.

    Raises:
        TsscError: Naming the first such scan.
    """
    folders = [(out / name).resolve() for name in run_folders()]
    for subject in subjects:
        for file in scan_files(subject.scan):
            where = next((f for f in folders if file.resolve().is_relative_to(f)), None)
            if where is not None:
                raise TsscError(
                    f"subject {subject.subject!r}: the scan lies in {where}, where the run "
                    "writes its outputs: move it out of the output folder",
                    file,
                )


def _read_state(path: Path) -> dict[str, Any]:
    """The run state in ``path``, its recorded files checked to lie inside the run folder.

    Raises:
        TsscError: If it is not a run state of this tssc version, or names a file outside the
            folder.
    """
    try:
        state = json.loads(path.read_text())
        keys = ("done", "subjects", "scan_sha256", "settings")
        done, recorded, digests, _ = (state[key] for key in keys)
    except (ValueError, KeyError, TypeError) as exc:
        raise TsscError(
            f"not a run state of this tssc version ({type(exc).__name__}: {exc}); move it, "
            "or run into another folder",
            path,
        ) from None
    if not all(isinstance(v, dict) for v in (done, recorded, digests)) or not all(
        isinstance(files, list) and all(isinstance(f, str) for f in files)
        for files in done.values()
    ):
        raise TsscError("a run state of another tssc version (start again with --overwrite)", path)
    folders = run_folders()
    for files in done.values():
        for name in files:
            inside(path.parent, name, path)
            if name.split("/")[0] not in folders:
                raise TsscError(f"names {name!r}, which is not in a folder a run writes", path)
    return state


def _files_under(folder: Path) -> list[Path]:
    """Everything but folders under ``folder`` (links not followed), sorted."""
    return sorted(
        Path(root, name)
        for root, dirs, files in os.walk(folder)
        for name in [*files, *(d for d in dirs if Path(root, d).is_symlink())]
    )


def _remove_earlier_run(out: Path) -> None:
    """Remove what an earlier run wrote in ``out``: the files its ``run.json`` lists and those
    its report page lists, then the folders that held them where that leaves them empty.

    Raises:
        TsscError: Before removing anything, if a folder a run writes holds files that no
            record of ``out`` lists (the user's own: they are never removed).
    """
    state_path = out / RUN_STATE
    recorded = set(report_files(out / REPORT))
    if state_path.exists():
        state = _read_state(state_path)
        recorded |= {out / name for files in state["done"].values() for name in files}
    foreign = [
        path for name in run_folders() for path in _files_under(out / name) if path not in recorded
    ]
    if foreign:
        listed = ", ".join(str(p.relative_to(out)) for p in foreign[:3])
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise TsscError(
            f"holds files no earlier run wrote: {listed}{more}. --overwrite removes only what "
            "an earlier run wrote: move them, or run into another folder",
            out,
        )
    for path in recorded:
        path.unlink(missing_ok=True)
    # The folders that held them, deepest first, where that leaves them empty.
    held = {f for path in recorded for f in path.parents if f != out and f.is_relative_to(out)}
    for folder in sorted(held, key=lambda f: len(f.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty
            folder.rmdir()


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
) -> tuple[dict[str, Any], dict[str, str]]:
    """The state of an earlier run in ``path.parent`` with these ``settings``, and the
    subjects it finished that must run again, each with the reason.

    A subject counts as finished when ``run.json`` lists it, its scan's content is what it was
    run from (a scan replaced in place runs again), every file it wrote is still there (a
    deleted result is made again), and, for ``keep_filled`` (the figure subject of an
    evaluate run), its model-space series were kept. The input may gain subjects and change
    their order.


    Raises:
        TsscError: If there is no ``run.json``, or it records other settings, or a finished
            subject is missing from the input or now has another scan or frame choice.
    """
    if not path.is_file():
        raise TsscError("nothing to resume: no run.json (start the run without --resume)", path)
    state = _read_state(path)
    before, done, recorded = state["settings"], state["done"], state["subjects"]
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
    again = {}
    for subject, files in done.items():
        if state["scan_sha256"].get(subject) != scan_digest(str(entries[subject]["scan"])):
            again[subject] = "its scan changed since it was run"
        elif not all((out / name).is_file() for name in files):
            again[subject] = "some of its outputs are missing"
        elif subject == keep_filled and not any(name.startswith(f"{FILLED}/") for name in files):
            again[subject] = "its model-space series (the figures') were not kept"
    return state, again


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
    refine_method: str = REFINES,
) -> list[Path]:
    """Run every method (ready instances) on one subject; outputs appear all or none.

    With a ``refiner``, the ``refine_method`` output is also refined by stage 2 and written as
    a method of its own (:func:`~tssc_py.runs.refined_name`: ``tssc`` over ``diffusion``).
    With ``keep_filled`` (evaluate mode), the model-space results are kept as
    ``filled/METHOD/SUBJECT.nii.gz`` for the report's example figures.
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
            if refiner is not None and runner.name == refine_method:
                with about(subject.scan):
                    refined = refiner(filled, record.known_frames)
                results.append((refined_name(runner.name), refined))
            for name, volume in results:
                with about(subject.scan):
                    restored = restore_scan(volume, record)
                target = out / name / f"{subject.subject}{scan_suffix(subject.scan)}"
                written.append(write_scan(restored, target, group=group))
                if record.mode == "evaluate":
                    written += write_subject_metrics(
                        volume, prepared.data, record, name, out / METRICS, ssim_mode, group
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
    refine_method: str = REFINES,
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
            refine the ``refine_method`` output, reported as a method of its own next to it
            (``tssc`` next to ``diffusion``, stage 1 alone: the paper's ablation). None: no
            stage 2.
        refine_method: The method whose output stage 2 refines (one of ``methods``).
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
        if refine_method not in methods:
            raise TsscError(
                f"stage 2 refines the {refine_method!r} method's output: add it to methods"
            )
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
            "weights_sha256": {
                runner.name: runner.weights_sha256 for runner in runners if runner.weights_sha256
            },
            "refine": None if refiner is None else {"method": refine_method, **refiner.settings()},
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
    _check_inputs_outside(out, subjects)
    keep_filled = figure_subject if config.mode == "evaluate" else None
    state_path = out / RUN_STATE
    state: dict[str, Any] = {
        "tssc_version": __version__,
        "settings": settings,
        "subjects": entries,
        "done": {},
        "scan_sha256": {},
    }
    # What a killed earlier run left half-written (its run.json, its outputs).
    remove_leftovers(out)
    for name in run_folders():
        for root, _, _ in os.walk(out / name):
            remove_leftovers(Path(root))
    again: dict[str, str] = {}
    if resume:
        before, again = _resumed(state_path, settings, entries, keep_filled)
        # What the subjects that run again wrote (a deleted result's other files, an older
        # scan's results) goes: it may differ from what they write now.
        for subject_id in again:
            for name in before["done"].pop(subject_id):
                (out / name).unlink(missing_ok=True)
        state["done"] = before["done"]
        state["scan_sha256"] = {k: before["scan_sha256"][k] for k in state["done"]}
    elif check_folder(out).exists() and _holds_results(out):
        if not overwrite:
            raise TsscError(
                "output folder is not empty (use --resume to continue the run in it, "
                "--overwrite to replace its outputs)",
                out,
            )
        # A run's outputs describe one run: a rerun with fewer methods or subjects must not
        # leave what an earlier run made there.
        _remove_earlier_run(out)
    done: dict[str, list[str]] = state["done"]
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
        for subject_id, reason in again.items():
            progress.write(f"{subject_id}: {reason}; running it again", file=sys.stderr)
        for subject in subjects:
            if subject.subject in done:
                continue
            stop_if_terminated()
            digest = scan_digest(subject.scan)
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
                refine_method=refine_method,
            )
            written += made
            done[subject.subject] = [p.relative_to(out).as_posix() for p in made]
            state["scan_sha256"][subject.subject] = digest
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
            out / REPORT,
            datasets=[(dataset, out)],
            figure_subject=figure_subject,
            overwrite=overwrite or resume,
        )
    return [*written, state_path]
