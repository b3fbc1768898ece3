"""What the language server knows about one version of a .space document.

Everything here is plain Python over essdsl's own stages (``check_text``,
``format_text``, ``show.describe``, ``stats.stats_dict``) and lsprotocol's data
types; :mod:`essdsl.lsp.server` only wires it to pygls.  One :class:`Analysis`
is built per document version and answers every request for that version, so a
hover after a change pays for the check once and later requests are lookups.

Positions.  essdsl counts lines by ``\\n`` and columns in code points, 1-based
(Lark's counting).  LSP counts lines by ``\\n``, ``\\r\\n`` or ``\\r`` and columns,
0-based, in the negotiated unit (UTF-16 code units unless the client offers
another).  The text is analysed with ``\\r\\n`` and lone ``\\r`` turned into ``\\n``,
so essdsl's line N is LSP line N-1 and only the column needs converting.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

from lsprotocol import types

from essdsl import ops
from essdsl.lang import ir
from essdsl.lang.check import check_text
from essdsl.errors import Diagnostic, sort_key
from essdsl.lang.graph import MAX_RANGE, CellGraph

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Whitespace and comments between a keyword and the name it introduces.
_GAP = re.compile(r"(?:\s|#[^\n]*)*")
_NUMBERED = re.compile(r"(.*?)(\d+)")


# ----------------------------------------------------------------- position units
def unit_counter(encoding: Optional[str]) -> Callable[[str], int]:
    """Length of a string in the client's position units (LSP ``PositionEncodingKind``)."""
    if encoding == types.PositionEncodingKind.Utf8:
        return lambda s: len(s.encode("utf-8", "surrogatepass"))
    if encoding == types.PositionEncodingKind.Utf32:
        return len
    # UTF-16: characters outside the Basic Multilingual Plane take two code units.
    return lambda s: len(s) + sum(1 for c in s if ord(c) > 0xFFFF)


def normalize_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# ----------------------------------------------------------------- occurrences
@dataclass(frozen=True)
class Occurrence:
    """A name in the text: where it is (1-based line, code-point columns, end exclusive),
    which namespace it lives in and whether it defines or uses the name.

    ``namespace``: ``value`` (nodes, inputs, states), ``op-set``, ``op`` (an op
    name), ``space`` (the header's name) or ``range`` (``s0..s7``: ``members``
    lists the names it stands for).  ``target`` narrows a value reference:
    ``update`` for a state's new value ``h[t]`` (defined by its update statement).
    """

    name: str
    namespace: str
    line: int
    column: int
    end_line: int
    end_column: int
    definition: bool = False
    target: str = ""
    members: tuple[str, ...] = ()
    statement: object = field(default=None, compare=False, repr=False)

    def contains(self, line: int, column: int) -> bool:
        return (self.line, self.column) <= (line, column) <= (self.end_line, self.end_column)

    @property
    def size(self) -> tuple[int, int]:
        return (self.end_line - self.line, self.end_column - self.column)


def range_members(first: str, last: str) -> tuple[str, ...]:
    """The names ``first..last`` stands for (``s0..s3`` -> s0, s1, s2, s3); empty when
    the range is not valid (the checker reports it)."""
    m1, m2 = _NUMBERED.fullmatch(first), _NUMBERED.fullmatch(last)
    if not m1 or not m2 or m1.group(1) != m2.group(1):
        return ()
    a, b = int(m1.group(2)), int(m2.group(2))
    if a > b or b - a + 1 > MAX_RANGE:
        return ()
    return tuple(f"{m1.group(1)}{i}" for i in range(a, b + 1))


class _Indexer:
    """Walks the IR and records every occurrence of a name."""

    def __init__(self, text: str, lines: list[str]):
        self.text = text
        self.lines = lines
        self.line_offsets = [0]
        for line in lines[:-1]:
            self.line_offsets.append(self.line_offsets[-1] + len(line) + 1)
        self.out: list[Occurrence] = []

    def add(self, name, namespace, line, column, **extra):
        if line <= 0:
            return
        self.out.append(Occurrence(name, namespace, line, column, line, column + len(name), **extra))

    def add_after_keyword(self, span: ir.Span, keyword: str, name: str, namespace: str, **extra):
        """A name that follows a keyword, when the IR keeps only the statement's span."""
        if span.line <= 0:
            return
        offset = self.line_offsets[span.line - 1] + span.column - 1 + len(keyword)
        offset = _GAP.match(self.text, offset).end()
        if not self.text.startswith(name, offset):
            return
        line = self.text.count("\n", 0, offset) + 1
        self.add(name, namespace, line, offset - self.line_offsets[line - 1] + 1, **extra)

    # -- references
    def ref(self, r: ir.Ref):
        target = "update" if r.timed and r.offset == 0 else ""
        self.add(r.name, "value", r.span.line, r.span.column, target=target)

    def range(self, r: ir.Range):
        s = r.span
        if s.line <= 0:
            return
        if r.timed:
            self.add(r.first, "value", s.line, s.column)
            return
        members = range_members(r.first, r.last)
        self.out.append(Occurrence(f"{r.first}..{r.last}", "range", s.line, s.column, s.end_line, s.end_column, members=members))
        self.add(r.first, "value", s.line, s.column)
        self.add(r.last, "value", s.end_line, s.end_column - len(r.last))

    def expr(self, e):
        if isinstance(e, ir.Ref):
            self.ref(e)
        elif isinstance(e, ir.Range):
            self.range(e)
        elif isinstance(e, ir.BinaryOp):
            self.expr(e.left)
            self.expr(e.right)
        elif isinstance(e, ir.Call):
            s = e.function_span
            self.add(e.function, "op", s.line, s.column)
            args = list(e.args)
            if e.function == "highway" and args and isinstance(args[0], ir.Ref) and not args[0].timed:
                op = args.pop(0)
                self.add(op.name, "op", op.span.line, op.span.column)
            for a in args:
                self.expr(a)
            for key, value in e.keywords.items():
                if key != "dim":  # dim = nhid names a size, not a value
                    self.expr(value)

    def source(self, s):
        if isinstance(s, ir.Ref):
            self.ref(s)
        elif isinstance(s, ir.Range):
            self.range(s)
        elif isinstance(s, ir.Pair):
            self.ref(s.left)
            self.ref(s.right)
        elif isinstance(s, ir.Pairs):
            for item in s.items:
                self.source(item)

    def op_ref(self, o: ir.OpRef):
        if o.set_name is not None:
            self.add(o.set_name, "op-set", o.span.line, o.span.column)
        for op, span in zip(o.ops, o.op_spans):
            self.add(op, "op", span.line, span.column)

    # -- the file
    def space(self, space: ir.Space):
        self.add(space.name, "space", space.name_span.line, space.name_span.column, definition=True, statement=space)
        for op_set in space.op_sets:
            self.add_after_keyword(op_set.span, "ops", op_set.name, "op-set", definition=True, statement=op_set)
            for op, span in zip(op_set.ops, op_set.op_spans):
                self.add(op, "op", span.line, span.column)
        for st in space.cell.statements if space.cell else []:
            if isinstance(st, (ir.InputDecl, ir.StateDecl)):
                self.add_after_keyword(st.span, st.kind, st.name, "value", definition=True, statement=st)
            elif isinstance(st, (ir.FixedNode, ir.MixedNode)):
                s = st.name_span
                self.add(st.name, "value", s.line, s.column, definition=True, statement=st)
                if isinstance(st, ir.FixedNode):
                    self.expr(st.expr)
                else:
                    for clause in st.clauses:
                        for source in clause.sources:
                            self.source(source)
                        self.op_ref(clause.ops)
            elif isinstance(st, ir.StateUpdate):
                s = st.name_span
                self.add(st.name, "value", s.line, s.column, definition=True, target="update", statement=st)
                self.expr(st.expr)
            elif isinstance(st, ir.OutputDecl):
                s = st.span
                if s.end_line > 0:
                    self.add(st.name, "value", s.end_line, s.end_column - len(st.name))


# ----------------------------------------------------------------- documentation
# Functions that are not registered ops (their docs); every op's doc comes from the
# op registry, read when asked, so an op registered after import is offered too.
FUNCTION_DOCS = {
    "linear": "`[a, b, …] W + b`, output size `dim` (default: the output state's)",
    "project": "`[a, …] W`, no bias; as a transform: one matrix per candidate edge, `f(u W_e)`",
    "highway": "`c + σ(k) ⊙ (f(g) − c)` with `[k, g] = [a, …] W`; as a transform: one `W: d × 2d` shared by the node's edges",
    "mean": "elementwise mean of its arguments; as a combiner: the weighted mean of the edges",
}


def op_doc(name: str) -> Optional[str]:
    """Hover/completion text of an op or function name, None for other names."""
    if ops.is_op(name):
        return ops.get(name).doc
    return FUNCTION_DOCS.get(name)


def op_names() -> tuple[str, ...]:
    """The ops a user may write (every registered op but the internal negation)."""
    return tuple(op for op in ops.names() if op != ops.NEG)

KEYWORDS = ("space", "genotype", "provenance", "ops", "defaults", "cell", "input", "state", "node", "mix", "from", "pairs", "output")
ATTRIBUTES = ("transform", "combine", "select", "keep", "norm", "dim")
ATTRIBUTE_VALUES = {
    "transform": ir.TRANSFORMS,
    "combine": ir.COMBINERS,
    "select": ir.SELECTIONS,
    "norm": ir.NORMS,
    "dim": ("ninp", "nhid"),
}


# ----------------------------------------------------------------- the analysis
@dataclass
class Analysis:
    """One document version: its diagnostics, names, and lazily the views of its graph."""

    text: str  # newlines normalized
    lines: list[str]
    space: Optional[ir.Space]
    graph: Optional[CellGraph]
    diagnostics: list[Diagnostic]
    occurrences: list[Occurrence]
    units: Callable[[str], int]

    @property
    def ok(self) -> bool:
        return self.graph is not None and not any(d.severity == "error" for d in self.diagnostics)

    # -- positions
    def position(self, line: int, column: int) -> types.Position:
        """essdsl (1-based line, 1-based code-point column) -> LSP position, clamped to the text."""
        if line <= 0 or not self.lines:
            return types.Position(line=0, character=0)
        if line > len(self.lines):
            return types.Position(line=len(self.lines) - 1, character=self.units(self.lines[-1]))
        text = self.lines[line - 1]
        return types.Position(line=line - 1, character=self.units(text[: max(0, column - 1)]))

    def range(self, line: int, column: int, end_line: int, end_column: int) -> types.Range:
        return types.Range(start=self.position(line, column), end=self.position(end_line, end_column))

    def occurrence_range(self, o: Occurrence) -> types.Range:
        return self.range(o.line, o.column, o.end_line, o.end_column)

    def span_range(self, span: ir.Span) -> types.Range:
        return self.range(span.line, span.column, span.end_line or span.line, span.end_column or span.column)

    def from_position(self, position: types.Position) -> tuple[int, int]:
        """LSP position -> essdsl (line, column), 1-based, in code points."""
        line = min(max(position.line, 0), max(len(self.lines) - 1, 0))
        text = self.lines[line] if self.lines else ""
        units = 0
        for index, char in enumerate(text):
            if units >= position.character:
                return line + 1, index + 1
            units += self.units(char)
        return line + 1, len(text) + 1

    def offset(self, line: int, column: int) -> int:
        """essdsl (line, column) -> index into the (normalized) text."""
        return sum(len(text) + 1 for text in self.lines[: line - 1]) + column - 1

    def end_position(self) -> types.Position:
        return self.position(len(self.lines), len(self.lines[-1]) + 1) if self.lines else types.Position(line=0, character=0)

    # -- diagnostics
    def diagnostic_range(self, d: Diagnostic) -> types.Range:
        if d.line <= 0:
            return types.Range(start=types.Position(line=0, character=0), end=types.Position(line=0, character=0))
        end = d.end_column
        if end <= d.column and d.line <= len(self.lines):
            # No end known (the span ran over several lines): mark the word the column points at.
            match = IDENTIFIER.match(self.lines[d.line - 1], d.column - 1)
            end = match.end() + 1 if match else d.column + 1
        return self.range(d.line, d.column, d.line, end)

    def lsp_diagnostics(self, uri: str) -> list[types.Diagnostic]:
        out = []
        for d in sorted(self.diagnostics, key=sort_key):
            where = self.diagnostic_range(d)
            related = [
                types.DiagnosticRelatedInformation(
                    location=types.Location(uri=uri, range=self.occurrence_range(o)),
                    message=f"'{o.name}' is {'declared' if isinstance(o.statement, (ir.InputDecl, ir.StateDecl)) else 'defined'} here",
                )
                for o in self.related_definitions(d, where)
            ]
            out.append(
                types.Diagnostic(
                    range=where,
                    message=d.message,
                    severity={"error": types.DiagnosticSeverity.Error, "warning": types.DiagnosticSeverity.Warning}.get(
                        d.severity, types.DiagnosticSeverity.Information
                    ),
                    code=d.code or None,
                    source="essdsl",
                    related_information=related or None,
                )
            )
        return out

    def related_definitions(self, d: Diagnostic, where: types.Range) -> list[Occurrence]:
        """Definitions a diagnostic talks about, other than the place it is reported at.

        The names are those the message quotes (``state 'h' is never updated``,
        ``'s3' is defined twice``); a cycle also names every node of its ring."""
        names = re.findall(r"'([A-Za-z_][A-Za-z0-9_]*)'", d.message)
        if d.code == "cycle" and ":" in d.message:
            ring = d.message.split(":", 1)[1].split("(", 1)[0]
            names += IDENTIFIER.findall(ring)
        out = []
        for name in dict.fromkeys(names):
            for o in self.definitions_of(name, ("value", "op-set")):
                if self.occurrence_range(o) != where and o.target != "update":
                    out.append(o)
        return out

    # -- lookups
    @functools.cached_property
    def _definitions(self) -> dict[tuple[str, str], list[Occurrence]]:
        table: dict[tuple[str, str], list[Occurrence]] = {}
        for o in self.occurrences:
            if o.definition:
                table.setdefault((o.namespace, o.name), []).append(o)
        return table

    def definitions_of(self, name: str, namespaces: Iterable[str] = ("value",)) -> list[Occurrence]:
        return [o for ns in namespaces for o in self._definitions.get((ns, name), [])]

    def occurrence_at(self, position: types.Position) -> Optional[Occurrence]:
        """The innermost occurrence under the cursor (a name inside a range wins over the range)."""
        line, column = self.from_position(position)
        hits = [o for o in self.occurrences if o.contains(line, column)]
        return min(hits, key=lambda o: o.size) if hits else None

    def resolve(self, o: Occurrence) -> list[Occurrence]:
        """Where what ``o`` names is defined."""
        if o.namespace == "range":
            return [d for member in o.members for d in self.resolve_value(member, "")]
        if o.namespace == "value":
            return self.resolve_value(o.name, o.target)
        if o.namespace in ("op-set", "space"):
            return self.definitions_of(o.name, (o.namespace,))
        return []

    def resolve_value(self, name: str, target: str) -> list[Occurrence]:
        defs = self.definitions_of(name)
        if target == "update":  # h[t]: the new value, defined by 'h[t] = ...'
            updates = [d for d in defs if d.target == "update"]
            if updates:
                return updates[:1]
        declarations = [d for d in defs if d.target != "update"]
        return declarations[:1]

    def references(self, o: Occurrence, include_declaration: bool) -> list[Occurrence]:
        """Every occurrence of what ``o`` names: its uses, the ranges it is a middle member
        of (``s0..s7`` for ``s3``), a state's update ``h[t] = …``, and with
        ``include_declaration`` its definition.  Names are unique in their namespace
        (a second definition is an error), so matching by name is exact."""
        if o.namespace == "range":
            namespace, names = "value", set(o.members)
        elif o.namespace in ("value", "op-set"):
            namespace, names = o.namespace, {o.name}
        else:
            return []
        out = []
        for other in self.occurrences:
            if other.namespace == "range":
                if namespace == "value" and names & set(other.members[1:-1]):
                    out.append(other)
                continue
            if other.namespace != namespace or other.name not in names:
                continue
            if other.definition and other.target != "update" and not include_declaration:
                continue
            out.append(other)
        return out

    # -- views of the graph (computed once, on first use)
    @functools.cached_property
    def node_blocks(self) -> dict[str, str]:
        """``essdsl show``'s text for each computed node, keyed by graph key."""
        from essdsl.lang.show import describe

        blocks: dict[str, list[str]] = {}
        in_nodes, current = False, ""
        for line in describe(self.graph).splitlines():
            if line.startswith("nodes"):
                in_nodes = True
            elif not in_nodes:
                continue
            elif not line.strip():
                break
            elif line.startswith("      ") and current:  # a node's detail lines
                blocks[current].append(line[2:])
            elif line.startswith("  "):  # '  s3  [mixed, size 300]': a node starts
                current = line.split()[0]
                blocks[current] = [line[2:]]
        return {key: "\n".join(lines) for key, lines in blocks.items()}

    @functools.cached_property
    def stats(self) -> Optional[dict]:
        """``essdsl stats --json``'s numbers, or None when the cell is no language model."""
        from essdsl.lang.stats import StatsError, stats_dict

        try:
            return stats_dict(self.graph)
        except StatsError:
            return None

    @functools.cached_property
    def node_stats(self) -> dict[str, dict]:
        return {n["name"]: n for n in self.stats["nodes"]} if self.stats else {}


def analyze(text: str, path: str = "<space>", sizes: Optional[dict] = None, units: Callable[[str], int] = len) -> Analysis:
    """Check ``text`` as essdsl does and index its names.  Never raises for any text."""
    text = normalize_newlines(text)
    graph, report = check_text(text, path, sizes)
    space = graph.space if graph is not None else None
    if space is None and not any(d.code == "syntax" or d.code == "empty" or d.code == "encoding" for d in report.diagnostics):
        from essdsl.lang.parse import parse_space
        from essdsl.errors import ParseError

        try:  # parses, but no graph (e.g. no cell): still index its names
            space = parse_space(text, path)
        except ParseError:
            space = None
    lines = text.split("\n")
    indexer = _Indexer(text, lines)
    if space is not None:
        indexer.space(space)
    return Analysis(text, lines, space, graph, list(report.diagnostics), indexer.out, units)


# ----------------------------------------------------------------- lexical fallback
_DEFINITION = re.compile(
    r"\b(?:(node)\s+([A-Za-z_]\w*)\s*=\s*(mix\b)?|(ops)\s+([A-Za-z_]\w*)\s*=|(input|state)\s+([A-Za-z_]\w*))"
)


def strip_comments(text: str) -> str:
    """The text with every ``# …`` comment blanked out (same length; ``#`` inside a string kept)."""
    return re.sub(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*', lambda m: m.group() if m.group().startswith('"') else " " * len(m.group()), text)


def scan_definitions(text: str) -> list[tuple[str, str, int]]:
    """(kind, name, offset) of every definition a text spells, read without parsing —
    what completion and the outline use while the file does not parse (mid-typing).
    ``kind``: ``fixed``, ``mixed``, ``op-set``, ``input`` or ``state``."""
    out = []
    for m in _DEFINITION.finditer(strip_comments(text)):
        if m.group(1):
            out.append(("mixed" if m.group(3) else "fixed", m.group(2), m.start(2)))
        elif m.group(4):
            out.append(("op-set", m.group(5), m.start(5)))
        else:
            out.append((m.group(6), m.group(7), m.start(7)))
    return out


__all__ = ["Analysis", "Occurrence", "analyze", "scan_definitions", "range_members", "unit_counter", "normalize_newlines"]
