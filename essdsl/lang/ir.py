"""Typed IR of a .space file: what the text says, with a source span on every element.

The IR keeps the surface forms a user wrote (ranges such as ``s0..s7``, op-set
names, defaults) so that the formatter can print them back; ``essdsl.lang.graph``
resolves them into explicit candidate edges.  Equality of two IRs ignores spans
(see :func:`strip_spans`), which is what the round-trip property tests compare.
"""

from __future__ import annotations

from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from essdsl import ops as _ops

# The ops are not listed here: a new op is one entry in essdsl.ops (its name, torch
# function, code template and flags), which the resolver, checker, code generator,
# reference interpreter, stats, derive and health all read.  ACTIVATIONS is the
# built-in ops' names, for readers that want a constant (the language server).
ACTIVATIONS = _ops.names()
TRANSFORMS = ("highway", "project")
COMBINERS = ("sum", "product", "mean")
SELECTIONS = ("edge_softmax", "node_softmax")
NORMS = ("batchnorm", "none")
# Structural functions usable in expressions (besides the activations).
FUNCTIONS = ("linear", "project", "highway", "mean")


def time_text(offset: int) -> str:
    """A time offset as the language writes it: ``0`` -> ``t``, ``-2`` -> ``t-2``."""
    return "t" if offset == 0 else f"t{offset:+d}"


def window_text(name: str, window: "Window") -> str:
    """``h[t-1]`` for a one-step window, ``h[t-3..t-1]`` otherwise (``name`` may be empty)."""
    if window.earliest == window.latest:
        return f"{name}[{time_text(window.earliest)}]"
    return f"{name}[{time_text(window.earliest)}..{time_text(window.latest)}]"


class Span(BaseModel):
    model_config = ConfigDict(frozen=True)
    line: int = 0
    column: int = 0
    end_line: int = 0
    end_column: int = 0


NO_SPAN = Span()


class Element(BaseModel):
    model_config = ConfigDict(frozen=True)
    span: Span = Field(default=NO_SPAN, repr=False)


# ---------------------------------------------------------------- references
class Ref(Element):
    """A state at one time: a node (``s3``), an input (``x[t-1]``) or a state (``h[t-2]``).

    ``offset`` is 0 for ``[t]`` (and for plain node names) and -k for ``[t-k]``.
    ``timed`` records whether the user wrote a bracket, so formatting keeps it.
    """

    kind: Literal["ref"] = "ref"
    name: str
    offset: int = 0
    timed: bool = False


class Range(Element):
    """``s0..s7`` (``first``/``last`` names) or ``h[t-1..t-3]`` (``name`` with two offsets)."""

    kind: Literal["range"] = "range"
    first: str
    last: str
    first_offset: int = 0
    last_offset: int = 0
    timed: bool = False


class Pair(Element):
    """Hadamard product of two states as one candidate source: ``h[t-1] * x[t]``."""

    kind: Literal["pair"] = "pair"
    left: Ref
    right: Ref


class Pairs(Element):
    """``pairs(a, b, c)``: every unordered pair of the listed states as a product source."""

    kind: Literal["pairs"] = "pairs"
    items: list[Union[Ref, Range]]


Source = Annotated[Union[Ref, Range, Pair, Pairs], Field(discriminator="kind")]


# ---------------------------------------------------------------- expressions
class Call(Element):
    """``f(args…)``: an activation (``tanh(e)``) or a structural function
    (``linear``, ``project``, ``highway``, ``mean``)."""

    kind: Literal["call"] = "call"
    function: str
    args: list["Expr"]
    keywords: dict[str, "Expr"] = {}
    function_span: Span = Field(default=NO_SPAN, repr=False)


class BinaryOp(Element):
    """``a + b``, ``a - b`` (sum combiner) or ``a * b`` (Hadamard combiner)."""

    kind: Literal["binary"] = "binary"
    operator: Literal["+", "-", "*"]
    left: "Expr"
    right: "Expr"


Expr = Annotated[Union[Ref, Range, Call, BinaryOp], Field(discriminator="kind")]
Call.model_rebuild()
BinaryOp.model_rebuild()


# ---------------------------------------------------------------- declarations
class OpSet(Element):
    name: str
    ops: list[str]
    op_spans: list[Span] = Field(default_factory=list, repr=False)


class OpRef(Element):
    """The ops of a ``from`` clause: a named set or an inline ``{a, b}``."""

    set_name: Optional[str] = None
    ops: list[str] = []
    op_spans: list[Span] = Field(default_factory=list, repr=False)


class Attribute(Element):
    """One mixed-node attribute (``transform``, ``combine``, ``select``, ``keep``, ``norm``, ``dim``).

    ``value`` is a string, an int (``keep``, numeric ``dim``) or a list of
    combiner names (``combine {sum, product}``)."""

    name: Literal["transform", "combine", "select", "keep", "norm", "dim"]
    value: Union[int, str, list[str]]
    value_span: Span = Field(default=NO_SPAN, repr=False)
    # ``norm batchnorm shared``: one normalisation shared by every node that says so
    shared: bool = False


class FromClause(Element):
    sources: list[Source]
    ops: OpRef


class Dim(Element):
    """A size: a symbol (``ninp``, ``nhid``) or a number."""

    symbol: Optional[str] = None
    value: Optional[int] = None


class Window(Element):
    """Time offsets a stream may be referenced at, e.g. ``[t-3..t-1]`` -> (-3, -1)."""

    earliest: int
    latest: int


class InputDecl(Element):
    kind: Literal["input"] = "input"
    name: str
    window: Optional[Window] = None
    dim: Dim


class StateDecl(Element):
    kind: Literal["state"] = "state"
    name: str
    window: Optional[Window] = None
    dim: Dim


class FixedNode(Element):
    kind: Literal["fixed"] = "fixed"
    name: str
    expr: Expr
    name_span: Span = Field(default=NO_SPAN, repr=False)
    # ``node s0 = … norm batchnorm [shared]``: the node's value is normalised (search only)
    norm: Optional[Attribute] = None


class MixedNode(Element):
    kind: Literal["mixed"] = "mixed"
    name: str
    clauses: list[FromClause]
    attributes: list[Attribute] = []
    name_span: Span = Field(default=NO_SPAN, repr=False)


class StateUpdate(Element):
    """``h[t] = expr``: the new value of a recurrent state."""

    kind: Literal["update"] = "update"
    name: str
    expr: Expr
    name_span: Span = Field(default=NO_SPAN, repr=False)


class OutputDecl(Element):
    kind: Literal["output"] = "output"
    name: str


class GrowSetting(Element):
    """One schedule line of a ``grow`` block: ``start 2``, ``max 6``, ``every 2 epochs``,
    ``plateau 3 epochs``, ``mode then_prune`` (``unit`` only for every/plateau)."""

    name: Literal["start", "max", "every", "plateau", "mode"]
    value: Union[int, str]
    unit: Optional[str] = None
    value_span: Span = Field(default=NO_SPAN, repr=False)
    unit_span: Span = Field(default=NO_SPAN, repr=False)


class GrowBlock(Element):
    """``grow s { <mix body> <schedule> }``: the node family s1, s2, … that search grows.
    Meaning and expansion: :mod:`essdsl.lang.growth`."""

    kind: Literal["grow"] = "grow"
    name: str
    clauses: list[FromClause]
    attributes: list[Attribute] = []
    settings: list[GrowSetting] = []
    name_span: Span = Field(default=NO_SPAN, repr=False)


CellStatement = Annotated[
    Union[InputDecl, StateDecl, FixedNode, MixedNode, StateUpdate, OutputDecl, GrowBlock],
    Field(discriminator="kind"),
]


class Cell(Element):
    statements: list[CellStatement] = []


class ProvenanceEntry(Element):
    key: str
    value: Union[str, int, float, list]


class Comment(Element):
    """A ``# …`` comment; ``trailing`` when code precedes it on its line."""

    text: str
    trailing: bool = False


class Space(Element):
    """A whole .space file."""

    kind: Literal["space", "genotype"]
    name: str
    name_span: Span = Field(default=NO_SPAN, repr=False)
    provenance: list[ProvenanceEntry] = []
    op_sets: list[OpSet] = []
    defaults: list[Attribute] = []
    cell: Optional[Cell] = None
    # Order in which top-level items appeared (for error ordering only).
    comments: list[Comment] = Field(default_factory=list, repr=False)

    # Helpers -------------------------------------------------------------
    def statements(self, kind: str) -> list:
        if self.cell is None:
            return []
        return [s for s in self.cell.statements if s.kind == kind]


def strip_spans(value):
    """A plain-data view of an IR value with spans and comments removed (for equality tests)."""
    if isinstance(value, BaseModel):
        data = {}
        for key in type(value).model_fields:
            if key.endswith("span") or key.endswith("spans") or key == "comments":
                continue
            data[key] = strip_spans(getattr(value, key))
        return (type(value).__name__, data)
    if isinstance(value, (list, tuple)):
        return [strip_spans(v) for v in value]
    if isinstance(value, dict):
        return {k: strip_spans(v) for k, v in value.items()}
    return value
