"""The language's size limits, in one place (docs/semantics.md, "Limits").

Each limit is a rule of the language: a file that breaks one gets a diagnostic
at the place that breaks it, and a file within all of them checks, compiles and
runs.  The limits sit well below where any stage (the parser's transformer, the
resolver, the formatter, Python's compiler, TorchScript) would fail, so the
property test in tests/test_limits.py can build spaces right at each limit.

Sizes are the one limit a real model may want to exceed: ``ESSDSL_MAX_SIZE``
raises it (memory is then the user's call).
"""

from __future__ import annotations

import os

MAX_NUMBER_DIGITS = 18  # digits in one number literal (any int64 fits)
MAX_NAME_LENGTH = 128  # characters in one name
MAX_NESTING = 50  # brackets ( [ { open at once, anywhere in a file
MAX_OPERATORS = 100  # + - * operators and arguments after a call's first, in one node's expression
MAX_NODES = 1_000  # node statements in one cell
MAX_CELL_EDGES = 20_000  # candidate sources of mixed nodes + operands of expressions, ranges expanded
MAX_DIAGNOSTICS = 50  # diagnostics printed per file; the rest are counted
MAX_EXCERPT = 160  # characters of a source line shown under a diagnostic

DEFAULT_MAX_SIZE = 16_384  # a stream's size (state h : N, --nhid N)
MAX_SIZE_ENV = "ESSDSL_MAX_SIZE"


def max_size() -> int:
    """The largest size a stream may have: ``$ESSDSL_MAX_SIZE`` if set to a positive
    integer, else :data:`DEFAULT_MAX_SIZE`.  An unusable value is ignored rather
    than fatal: the check then still reports sizes against the default."""
    raw = os.environ.get(MAX_SIZE_ENV, "").strip()
    if raw.isdigit() and 0 < len(raw) <= MAX_NUMBER_DIGITS and int(raw) > 0:
        return int(raw)
    return DEFAULT_MAX_SIZE


def size_limit_message(what: str, value: int) -> str:
    limit = max_size()
    return (
        f"{what} {value} is larger than the maximum size {limit} "
        f"(set {MAX_SIZE_ENV} to raise it; memory grows with the square of a size)"
    )
