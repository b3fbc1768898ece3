"""The resolved expression types of fixed nodes and state updates, and the one traversal
over them.

An expression is one of five frozen dataclasses (:data:`RExpr`).  Code that only
needs to visit every subexpression (collect references, count operands, sum a cost,
find weight tensors) uses :func:`walk` instead of its own ``isinstance`` chain; code
that treats each kind differently (the code generator, the reference interpreter,
the printers) dispatches on the type itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Union

from essdsl.lang.ir import time_text


# ----------------------------------------------------------------- resolved forms
@dataclass(frozen=True)
class ERef:
    key: str


@dataclass(frozen=True)
class EApply:
    op: str
    arg: "RExpr"


@dataclass(frozen=True)
class ECombine:
    """Sum (with signs), Hadamard product or mean of terms."""

    combiner: str  # "sum" | "product" | "mean"
    terms: tuple["RExpr", ...]
    signs: tuple[int, ...] = ()  # for sum: +1 / -1 per term


@dataclass(frozen=True)
class ELinear:
    """Affine map of the concatenated inputs (``linear``: with bias, ``project``: without)."""

    inputs: tuple["RExpr", ...]
    bias: bool
    dim_symbol: Optional[str]  # None: the cell's width
    param: str = ""


@dataclass(frozen=True)
class EHighway:
    """[c, g] = [inputs] W;  out = carry + sigmoid(c) * (op(g) - carry)."""

    op: str
    inputs: tuple["RExpr", ...]
    carry: "RExpr"
    param: str = ""


RExpr = Union[ERef, EApply, ECombine, ELinear, EHighway]


def children(e: RExpr) -> tuple[RExpr, ...]:
    """The direct subexpressions of ``e``, in reading order (a highway's carry last)."""
    if isinstance(e, EApply):
        return (e.arg,)
    if isinstance(e, ECombine):
        return e.terms
    if isinstance(e, ELinear):
        return e.inputs
    if isinstance(e, EHighway):
        return (*e.inputs, e.carry)
    return ()


def walk(e: Optional[RExpr]) -> Iterator[RExpr]:
    """``e`` and every subexpression, depth first in reading order (parents before children).

    Iterative, so a deeply nested expression cannot exhaust Python's recursion limit."""
    stack = [e] if e is not None else []
    while stack:
        x = stack.pop()
        yield x
        stack.extend(reversed(children(x)))


def expr_operand_count(e: Optional[RExpr]) -> int:
    """How many values an expression reads, repeats included (ranges expanded)."""
    return sum(1 for x in walk(e) if isinstance(x, ERef))


def expr_refs(e: RExpr) -> list[str]:
    """Graph keys an expression reads, in order of appearance (with repeats removed)."""
    return list(dict.fromkeys(x.key for x in walk(e) if isinstance(x, ERef)))


def stream_key(name: str, offset: int) -> str:
    """The graph key of a stream at one offset: ``h[t-1]``, ``x[t]``."""
    return f"{name}[{time_text(offset)}]"


def param_safe(key: str) -> str:
    """A graph key as a Python/parameter-name fragment: ``h[t-1]`` -> ``h_tm1``, ``c[t]`` -> ``c_t``."""
    return key.replace("[t-", "_tm").replace("[t]", "_t").replace("]", "").replace("*", "_x_")
