"""Language commands: check (fmt, show, stats and diff are added beside it). No torch here."""

from __future__ import annotations

import time
from pathlib import Path
from typing import List, Optional

import typer

from ..check import check_file
from . import app
from .common import parse_sizes, print_report, summary_line

SizeOpt = typer.Option


@app.command()
def check(
    files: List[Path] = typer.Argument(..., help=".space files to check"),
    ninp: Optional[int] = typer.Option(None, help="input (embedding) size used for size checks [default: 300]"),
    nhid: Optional[int] = typer.Option(None, help="hidden size used for size checks [default: 300]"),
    werror: bool = typer.Option(False, "--werror", help="treat warnings as errors"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print diagnostics only, no 'ok' lines"),
) -> None:
    """Check .space files: syntax, names, cycles, windows, sizes, choices.

    Prints every problem as path:line:col: error: message with the source line,
    and exits 1 if any file has an error (or a warning, with --werror).
    """
    sizes = parse_sizes(ninp, nhid, None)
    failed = False
    for path in files:
        start = time.perf_counter()
        _, report = check_file(path, sizes)
        elapsed = time.perf_counter() - start
        print_report(report)
        bad = not report.ok or (werror and report.diagnostics)
        failed = failed or bad
        if not quiet:
            status = "FAILED" if bad else "ok"
            extra = f" ({summary_line(report)})" if report.diagnostics else ""
            typer.echo(f"{path}: {status}{extra} [{elapsed * 1000:.1f} ms]", err=bad)
    raise typer.Exit(1 if failed else 0)
