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
            lines = source.splitlines()
            if 0 < self.line <= len(lines):
                src_line = lines[self.line - 1].expandtabs(1)
                width = max(1, (self.end_column - self.column) if self.end_column > self.column else 1)
                caret = " " * max(0, self.column - 1) + "^" + "~" * (width - 1)
                text += f"\n  {src_line}\n  {caret}"
        return text


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


class SpaceError(Exception):
    """Raised when a .space file has errors; carries every diagnostic found."""

    def __init__(self, diagnostics: list[Diagnostic], path: str = "<space>", source: Optional[str] = None):
        self.diagnostics = sorted(diagnostics, key=sort_key)
        self.path = path
        self.source = source
        super().__init__(self.render())

    def render(self) -> str:
        return "\n".join(d.render(self.path, self.source) for d in self.diagnostics)


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
        return "\n".join(d.render(self.path, self.source) for d in sorted(self.diagnostics, key=sort_key))
