"""The command class of the ``bin/`` scripts, and the options every step shares.

Each ``bin/tssc-*`` script only declares its options and calls one library function; expected
failures (:class:`~tssc_py.errors.TsscError`) become one ``Error: FILE: problem`` line and
exit status 1, never a traceback. This module imports neither torch nor the models, so that a
command as small as ``tssc-versions`` starts in a fraction of a second.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tssc_py.errors import TsscError
from tssc_py.signals import Terminated, raise_on_sigterm, sigterm_received

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Command(click.Command):
    """A click command that reports :class:`TsscError`, and what the machine refuses (an
    ``OSError``: a full disk, a name too long; running out of memory), as a one-line error,
    and SIGTERM (a batch system's time limit) or Ctrl-C as one line and exit status 143 or 130
    after removing what was half-written."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", CONTEXT)
        super().__init__(*args, **kwargs)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # A bad option value is bad input like any other: one line and status 1, not click's
        # usage text and status 2 (--help still prints the whole help).
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise click.ClickException(exc.format_message()) from None

    def invoke(self, ctx: click.Context) -> Any:
        raise_on_sigterm()
        try:
            result = super().invoke(ctx)
        except TsscError as exc:
            raise click.ClickException(str(exc)) from None
        except OSError as exc:  # the machine's, not the input's: a full disk, a long path...
            where = f"{exc.filename}: " if exc.filename is not None else ""
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None
        except MemoryError:
            raise click.ClickException("out of memory") from None
        except Terminated as exc:
            click.echo(f"Error: {exc}", err=True)
            raise click.exceptions.Exit(128 + exc.signum) from None
        except KeyboardInterrupt:  # click would print "Aborted!" and exit with status 1
            click.echo("\nError: interrupted by Ctrl-C", err=True)
            raise click.exceptions.Exit(128 + signal.SIGINT) from None
        if sigterm_received():  # its exception was swallowed: the work went on, but stop now
            click.echo(f"Error: {Terminated()}", err=True)
            raise click.exceptions.Exit(128 + signal.SIGTERM)
        return result


def command(func: F) -> click.Command:
    """Make ``func`` a tssc command; its docstring is the ``--help`` text."""
    return click.command(cls=Command)(func)


def typed_options() -> frozenset[str]:
    """The parameters of the running command given on its command line (or through the
    environment), as opposed to left at their defaults."""
    ctx = click.get_current_context()
    left = (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP)
    return frozenset(name for name in ctx.params if ctx.get_parameter_source(name) not in left)


PATH = click.Path(path_type=Path, dir_okay=True)

overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace outputs that already exist (refused otherwise)."
)


def compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Apply several click decorators as one (first listed is shown first in --help)."""

    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply
