"""The ``essdsl`` command line.

Each group of commands lives in its own module and registers itself on ``app``:
``lang`` (check, fmt, show, stats, diff — no torch import), ``model``
(compile, bench) and ``run`` (search, derive, train, eval, compare, plot).
Modules that need torch import it inside the command, so ``essdsl check``
starts fast.
"""

from __future__ import annotations

import sys

import typer

app = typer.Typer(
    name="essdsl",
    help="Neural architecture search spaces as text: check, format, diff, compile and search .space files.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)



def _version(value: bool) -> None:
    if value:
        from essdsl import __version__

        typer.echo(f"essdsl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit"),
) -> None:
    """essdsl: write a neural architecture search space as text, then check, compile and search it."""


from essdsl.cli import lang  # noqa: E402,F401  (registers commands)
from essdsl.cli import editor  # noqa: E402,F401  (essdsl lsp; pygls is imported only when it runs)

try:  # command groups added by later modules
    from essdsl.cli import model  # noqa: F401
except ImportError as exc:  # pragma: no cover - only while a module is absent
    if "essdsl.cli.model" not in str(exc) and "cannot import name 'model'" not in str(exc):
        raise
try:
    from essdsl.cli import run  # noqa: F401
except ImportError as exc:  # pragma: no cover
    if "essdsl.cli.run" not in str(exc) and "cannot import name 'run'" not in str(exc):
        raise
from essdsl.cli import study  # noqa: E402,F401  (registers sample, study run/report)
from essdsl.cli import tasks  # noqa: E402,F401  (essdsl tasks: the registry, no torch)


def error_message(exc) -> str:
    """How the command line prints an :class:`~essdsl.errors.EssdslError`: diagnostics as
    ``file:line:col: error: …``, a setting by its flag, anything else as ``essdsl: error: …``."""
    from essdsl.errors import SpaceError
    from essdsl.nas.runconfig import SettingError
    from essdsl.options import option_name

    if isinstance(exc, SpaceError):
        return exc.render()
    if getattr(exc, "located", False):  # the message starts with the file it is about
        return str(exc)
    if isinstance(exc, SettingError):
        return f"essdsl: error: {exc.render(option_name(exc.setting))}"
    return f"essdsl: error: {exc}"


def main() -> None:
    from essdsl.errors import EssdslError

    try:
        app()
    except EssdslError as exc:  # every stage's error, an unwritable output file included
        print(error_message(exc), file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
