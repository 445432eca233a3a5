"""What every benchmark script shares: checked options, one-line errors, worker processes, memory.

Imported by the scripts of this folder (run as scripts, so this folder is on ``sys.path``).
Expected failures are :class:`~tssc_py.errors.TsscError`, reported as one ``Error: ...`` line
with exit status 1, as the ``bin/`` scripts do (``tssc_py/cli.py``); anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from tssc_py.errors import TsscError


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where there is none to show (None, a
    flag's False): those options say in their own help what they do when left out."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one ``Error:`` line and exit status 1 (through
    :func:`run_script`), not argparse's usage block and status 2."""

    def __init__(self, doc: str | None) -> None:
        super().__init__(
            description=(doc or "").splitlines()[0], formatter_class=_DefaultsFormatter
        )

    def error(self, message: str) -> NoReturn:
        raise TsscError(message)


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """The ``--device auto|cpu|cuda`` option every GPU-aware benchmark takes."""
    parser.add_argument(
        "--device",
        default="auto",
        choices=("auto", "cpu", "cuda"),
        help="Where to run (auto: CUDA when available).",
    )


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    value = _float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value:g}")
    return value


def non_negative_float(text: str) -> float:
    """An argparse type: a finite number of at least 0."""
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value:g}")
    return value


def run_script(main: Callable[[list[str] | None], object], argv: list[str] | None = None) -> int:
    """Run a script's ``main``; a :class:`TsscError` becomes one ``Error:`` line and status 1."""
    try:
        main(argv)
    except TsscError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return 0


def run_worker(command: Sequence[str], what: str) -> str:
    """Run a worker process (a script re-invoked on one case) and return its standard output.

    Raises:
        TsscError: The worker's own one-line ``Error:`` (an expected failure), led by ``what``.
        subprocess.CalledProcessError: Any other failure, after copying the worker's standard
            error here: a bug, whose traceback must stay visible.
    """
    done = subprocess.run(list(command), capture_output=True, text=True)
    if done.returncode == 0:
        return done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if lines and lines[-1].startswith("Error: "):
        raise TsscError(f"{what}: {lines[-1].removeprefix('Error: ')}")
    sys.stderr.write(done.stderr)
    raise subprocess.CalledProcessError(done.returncode, done.args, done.stdout, done.stderr)


def status_kib(field: str) -> int:
    """A memory field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``), in KiB (shown "kB")."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (``VmHWM``), interpreter and imports included.

    Not ``ru_maxrss``: Linux carries that over ``exec`` from the parent, so a worker started by
    a process holding 3 GB would report at least 3 GB whatever it did itself.
    """
    return status_kib("VmHWM") / 1024
