"""Helpers shared by the CLI modules: printing diagnostics and failing cleanly."""

from __future__ import annotations

import sys
from typing import NoReturn, Optional

import typer

from essdsl.errors import Diagnostic, Report, SpaceError, sort_key


def print_report(report: Report, stream=None) -> None:
    """Print diagnostics as ``path:line:col: severity: message`` + source line + caret."""
    stream = stream or sys.stderr
    if report.diagnostics:
        print(report.render(), file=stream)  # capped: see errors.render_diagnostics


def summary_line(report: Report) -> str:
    errors = sum(d.severity == "error" for d in report.diagnostics)
    warnings = sum(d.severity == "warning" for d in report.diagnostics)
    parts = []
    if errors:
        parts.append(f"{errors} error{'s' if errors != 1 else ''}")
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''}")
    return ", ".join(parts)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``essdsl: error: message`` to stderr and exit (no traceback)."""
    print(f"essdsl: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def fail_space(exc: SpaceError) -> NoReturn:
    print(exc.render(), file=sys.stderr)
    raise typer.Exit(1)


def parse_sizes(ninp: Optional[int], nhid: Optional[int], vocab: Optional[int]) -> dict:
    from essdsl.options import check_options

    check_options({"ninp": ninp, "nhid": nhid, "vocab": vocab})
    return {key: value for key, value in (("ninp", ninp), ("nhid", nhid), ("vocab", vocab)) if value is not None}


__all__ = ["print_report", "summary_line", "fail", "fail_space", "parse_sizes", "Diagnostic"]
