"""Diagnostics and the exceptions each stage raises.

Every stage collects :class:`Diagnostic` records instead of stopping at the
first problem; the CLI decides how to print them.  A diagnostic knows its file,
line and column so it renders as ``path:line:col: error: message`` followed by
the source line and a caret under the offending text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Optional

Severity = Literal["error", "warning", "note"]


@dataclass(frozen=True)
class Diagnostic:
    severity: Severity
    message: str
    line: int = 0  # 1-based; 0 when the problem has no position (e.g. an empty file)
    column: int = 0  # 1-based
    end_column: int = 0
    code: str = ""  # stable identifier, e.g. "undefined-name" (used by tests and --json)

    def render(self, path: str, source: Optional[str] = None) -> str:
        where = f"{path}:{self.line}:{self.column}" if self.line else f"{path}"
        text = f"{where}: {self.severity}: {self.message}"
        if source is not None and self.line:
            excerpt = source_excerpt(source, self.line, self.column, self.end_column)
            if excerpt:
                text += f"\n  {excerpt[0]}\n  {excerpt[1]}"
        return text


# Characters that end a line for Python or a terminal but not for the parser: shown
# as spaces in an excerpt so that one source line stays one printed line.
_LINE_BREAK_LOOKALIKES = {ord(c): " " for c in "\t\v\f\r\x1c\x1d\x1e\x85\u2028\u2029"}


def source_excerpt(source: str, line: int, column: int, end_column: int = 0) -> Optional[tuple[str, str]]:
    """The source line ``line`` (lines as the parser counts them: split at "\\n" only)
    and a caret line under ``column``..``end_column``; long lines are cut to a window
    of :data:`essdsl.lang.limits.MAX_EXCERPT` characters around the column."""
    from essdsl.lang.limits import MAX_EXCERPT
    from essdsl.lang.parse import source_lines

    lines = source_lines(source)
    if not 0 < line <= len(lines):
        return None
    src_line = lines[line - 1].translate(_LINE_BREAK_LOOKALIKES)
    column = max(1, column)
    width = max(1, (end_column - column) if end_column > column else 1)
    start = 0
    if len(src_line) > MAX_EXCERPT:
        start = max(0, min(column - 1 - MAX_EXCERPT // 4, len(src_line) - MAX_EXCERPT))
        shown = src_line[start : start + MAX_EXCERPT]
        prefix = "..." if start > 0 else ""
        suffix = "..." if start + MAX_EXCERPT < len(src_line) else ""
        src_line, start = prefix + shown + suffix, start - len(prefix)
        width = max(1, min(width, len(src_line) - (column - 1 - start)))
    caret = " " * max(0, column - 1 - start) + "^" + "~" * (width - 1)
    return src_line, caret


def render_diagnostics(diagnostics: Iterable[Diagnostic], path: str, source: Optional[str]) -> str:
    """Every diagnostic sorted, at most :data:`essdsl.lang.limits.MAX_DIAGNOSTICS` of them
    rendered; the rest are counted in one closing line (a file with 30,000 repeats
    of one mistake must not print 30,000 excerpts)."""
    from essdsl.lang.limits import MAX_DIAGNOSTICS

    ordered = sorted(diagnostics, key=sort_key)
    shown = [d.render(path, source) for d in ordered[:MAX_DIAGNOSTICS]]
    hidden = ordered[MAX_DIAGNOSTICS:]
    if hidden:
        errors = sum(d.severity == "error" for d in hidden)
        shown.append(
            f"{path}: note: {len(hidden)} more diagnostic{'s' if len(hidden) != 1 else ''} not shown "
            f"({errors} error{'s' if errors != 1 else ''}); fix the ones above first"
        )
    return "\n".join(shown)


def error(message: str, span=None, code: str = "") -> Diagnostic:
    return _make("error", message, span, code)


def warning(message: str, span=None, code: str = "") -> Diagnostic:
    return _make("warning", message, span, code)


def _make(severity: Severity, message: str, span, code: str) -> Diagnostic:
    if span is None or not getattr(span, "line", 0):
        return Diagnostic(severity, message, code=code)
    end = span.end_column if span.end_line == span.line else 0
    return Diagnostic(severity, message, span.line, span.column, end, code)


def has_errors(diagnostics: Iterable[Diagnostic]) -> bool:
    return any(d.severity == "error" for d in diagnostics)


def sort_key(d: Diagnostic):
    return (d.line or 10**9, d.column, d.severity != "error", d.message)


class EssdslError(Exception):
    """The root of every error essdsl raises on purpose: bad input, a run that cannot
    go on, a file that is not what it should be.  The message describes the problem
    (not a command-line flag); the CLI catches this class once and prints it."""


class SpaceError(EssdslError):
    """Raised when a .space file has errors; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic], path: str = "<space>", source: Optional[str] = None):
        self.diagnostics = sorted(diagnostics, key=sort_key)
        self.path = path
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return render_diagnostics(self.diagnostics, self.path, self.source)


class ParseError(SpaceError):
    """The text is not a .space file (syntax, encoding)."""


class CheckError(SpaceError):
    """The text parses but means nothing valid (names, cycles, dimensions…)."""


@dataclass
class Report:
    """What checking one file produced."""

    path: str
    source: Optional[str]
    diagnostics: list[Diagnostic] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not has_errors(self.diagnostics)

    def render(self) -> str:
        return render_diagnostics(self.diagnostics, self.path, self.source)
