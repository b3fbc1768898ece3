"""IR -> canonical .space text: the formatter behind ``essdsl fmt``.

Layout of a formatted file::

    space NAME                        # the header, then one blank line
    provenance { … }                  # one entry per line
    ops NAME = {a, b}                 # one op set per line
    defaults { … }                    # one attribute per line
    cell {                            # two spaces per level
      node s3 = mix { from s0..s2 ops rnn_ops }
      node s4 = mix {
        from s0..s3 ops rnn_ops
        select node_softmax
      }
    }

Sections are separated by one blank line; inside the cell a blank line is kept
wherever the source had one between two statements.  Expressions get canonical
spacing (``a + b``, ``f(x, y)``, ``carry = h[t-1]``) and parentheses only where
the grammar's precedence needs them (``a - (b - c)``, ``a * (b + c)``).

Comments are not in the grammar, so they are placed by position
(:attr:`essdsl.lang.ir.Space.comments` keeps each one's line and column):

* a full-line comment goes before the element that follows it in the source,
  at that element's indentation;
* a trailing comment stays at the end of its element's line;
* a comment after the last element of a block stays inside the block (for
  ``defaults`` and ``provenance``, whose closing brace has no position in the
  IR, "inside" means the comment was indented);
* comments after the last element of the file stay at the end.

Formatting is idempotent and ``parse(format_space(space))`` equals ``space``
up to spans (:func:`essdsl.lang.ir.strip_spans`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Optional, Union

from essdsl.lang import ir

INDENT = "  "

# Binding strength of the expression operators (higher binds tighter).
_PRECEDENCE = {"+": 1, "-": 1, "*": 2}


# ------------------------------------------------------------------ expressions
format_time = ir.time_text  # ``0`` -> ``t``, ``-2`` -> ``t-2``


def format_ref(ref: ir.Ref) -> str:
    if not ref.timed:
        return ref.name
    return f"{ref.name}[{format_time(ref.offset)}]"


def format_range(item: ir.Range) -> str:
    if item.timed:
        return f"{item.first}[{format_time(item.first_offset)}..{format_time(item.last_offset)}]"
    return f"{item.first}..{item.last}"


def format_expr(expr) -> str:
    """Canonical text of an expression, with parentheses only where precedence needs them."""
    if isinstance(expr, ir.Ref):
        return format_ref(expr)
    if isinstance(expr, ir.Range):
        return format_range(expr)
    if isinstance(expr, ir.Call):
        parts = [format_expr(a) for a in expr.args]
        parts += [f"{key} = {format_expr(value)}" for key, value in expr.keywords.items()]
        return f"{expr.function}({', '.join(parts)})"
    if isinstance(expr, ir.BinaryOp):
        strength = _PRECEDENCE[expr.operator]
        left = format_expr(expr.left)
        right = format_expr(expr.right)
        # Both operator levels associate to the left: the left operand needs
        # parentheses only when it binds more loosely; the right operand also
        # when it binds equally (``a - (b - c)``, ``a * (b * c)``).
        if isinstance(expr.left, ir.BinaryOp) and _PRECEDENCE[expr.left.operator] < strength:
            left = f"({left})"
        if isinstance(expr.right, ir.BinaryOp) and _PRECEDENCE[expr.right.operator] <= strength:
            right = f"({right})"
        return f"{left} {expr.operator} {right}"
    raise TypeError(f"not an expression: {type(expr).__name__}")


def format_source(source) -> str:
    if isinstance(source, ir.Ref):
        return format_ref(source)
    if isinstance(source, ir.Range):
        return format_range(source)
    if isinstance(source, ir.Pair):
        return f"{format_ref(source.left)} * {format_ref(source.right)}"
    if isinstance(source, ir.Pairs):
        return f"pairs({', '.join(format_source(item) for item in source.items)})"
    raise TypeError(f"not a candidate source: {type(source).__name__}")


def format_op_list(ops) -> str:
    return "{" + ", ".join(ops) + "}"


def format_from_clause(clause: ir.FromClause) -> str:
    sources = ", ".join(format_source(s) for s in clause.sources)
    ops = clause.ops.set_name if clause.ops.set_name is not None else format_op_list(clause.ops.ops)
    return f"from {sources} ops {ops}"


def format_attribute(attribute: ir.Attribute) -> str:
    value = attribute.value
    if isinstance(value, (list, tuple)):
        return f"{attribute.name} {format_op_list(value)}"
    return f"{attribute.name} {value}" + (" shared" if attribute.shared else "")


def format_setting(setting: ir.GrowSetting) -> str:
    """A grow block's schedule line: ``start 2``, ``every 2 epochs``, ``mode interleaved``."""
    return f"{setting.name} {setting.value}" + (f" {setting.unit}" if setting.unit else "")


def format_window(window: Optional[ir.Window]) -> str:
    if window is None:
        return ""
    return ir.window_text("", window)


def format_dim(dim: ir.Dim) -> str:
    return dim.symbol if dim.symbol is not None else str(dim.value)


def format_literal(value) -> str:
    """A provenance value as the grammar reads it back (strings JSON-escaped)."""
    if isinstance(value, bool):  # no boolean literal: write it as 0/1
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return json.dumps("nan")
        if math.isinf(value):  # reads back as float('inf')
            return "1e999" if value > 0 else "-1e999"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_literal(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=True)


def format_statement_line(statement) -> str:
    """The one-line form of a cell statement (mixed nodes: the single-clause form)."""
    if isinstance(statement, (ir.InputDecl, ir.StateDecl)):
        return f"{statement.kind} {statement.name}{format_window(statement.window)} : {format_dim(statement.dim)}"
    if isinstance(statement, ir.FixedNode):
        norm = f" {format_attribute(statement.norm)}" if statement.norm is not None else ""
        return f"node {statement.name} = {format_expr(statement.expr)}{norm}"
    if isinstance(statement, ir.StateUpdate):
        return f"{statement.name}[t] = {format_expr(statement.expr)}"
    if isinstance(statement, ir.OutputDecl):
        return f"output {statement.name}"
    if isinstance(statement, ir.MixedNode):
        inner = [format_from_clause(c) for c in statement.clauses] + [format_attribute(a) for a in statement.attributes]
        return f"node {statement.name} = mix {{ {' '.join(inner)} }}" if inner else f"node {statement.name} = mix {{ }}"
    raise TypeError(f"not a cell statement: {type(statement).__name__}")


# ------------------------------------------------------------------ comment placement
Position = tuple[int, int]


def _start(span: ir.Span) -> Position:
    return (span.line, span.column)


def _end(span: ir.Span) -> Position:
    return (span.end_line, span.end_column)


@dataclass
class _Anchor:
    """One printed line that comments can attach to (a statement, a block's opening or closing line)."""

    start: Position  # where its text begins in the source (0, 0: no position)
    end_line: int
    role: str  # "leaf", "open", "close", "header"
    group: str = ""  # "provenance" / "defaults" for entries of those blocks
    leading: list = field(default_factory=list)
    trailing: list = field(default_factory=list)

    @property
    def has_position(self) -> bool:
        return self.start[0] > 0

    def first_line(self) -> int:
        lines = [c.span.line for c in self.leading if c.span.line] + [self.start[0]]
        return min(lines)


class _Layout:
    """Decides the layout of mixed nodes and where every comment goes."""

    def __init__(self, space: ir.Space):
        self.space = space
        self.comments = sorted(space.comments, key=lambda c: _start(c.span))
        self.anchors: dict[int, _Anchor] = {}  # id(IR element) or a (id, role) key -> anchor
        self.ordered: list[_Anchor] = []
        self.group_head: dict[str, list[ir.Comment]] = {"provenance": [], "defaults": []}
        self.group_tail: dict[str, list[ir.Comment]] = {"provenance": [], "defaults": []}
        self.end_comments: list[ir.Comment] = []
        self.one_line: dict[int, bool] = {}
        self._collect()
        self._place_comments()

    # -- anchors
    def _add(self, key, span: ir.Span, role: str, group: str = "", end_line: Optional[int] = None) -> None:
        if role == "close":
            start = (span.end_line, max(span.end_column - 1, 0))
            last = span.end_line
        else:
            start = _start(span)
            last = span.end_line if end_line is None else end_line
        anchor = _Anchor(start=start, end_line=max(last, start[0]), role=role, group=group)
        self.anchors[key] = anchor
        self.ordered.append(anchor)

    def anchor(self, element, role: str = "") -> _Anchor:
        return self.anchors[(id(element), role)]

    def _collect(self) -> None:
        space = self.space
        header_span = space.span if space.span.line else space.name_span
        self._add((id(space), "header"), header_span, "header", end_line=max(space.name_span.line, header_span.line))
        for entry in space.provenance:
            self._add((id(entry), ""), entry.span, "leaf", "provenance")
        for op_set in space.op_sets:
            self._add((id(op_set), ""), op_set.span, "leaf")
        for attribute in space.defaults:
            self._add((id(attribute), ""), attribute.span, "leaf", "defaults")
        cell = space.cell
        if cell is None:
            return
        self._add((id(cell), "open"), cell.span, "open", end_line=cell.span.line)
        for statement in cell.statements:
            if isinstance(statement, ir.GrowBlock):  # always a block: body, then its schedule
                self.one_line[id(statement)] = False
                self._add((id(statement), "open"), statement.span, "open", end_line=statement.span.line)
                for element in [*statement.clauses, *statement.attributes, *statement.settings]:
                    self._add((id(element), ""), element.span, "leaf")
                self._add((id(statement), "close"), statement.span, "close")
                continue
            if isinstance(statement, ir.MixedNode):
                single = len(statement.clauses) == 1 and not statement.attributes
                if single and self._comment_inside(statement.span):
                    single = False
                self.one_line[id(statement)] = single or not (statement.clauses or statement.attributes)
                if self.one_line[id(statement)]:
                    self._add((id(statement), ""), statement.span, "leaf")
                    continue
                self._add((id(statement), "open"), statement.span, "open", end_line=statement.span.line)
                for clause in statement.clauses:
                    self._add((id(clause), ""), clause.span, "leaf")
                for attribute in statement.attributes:
                    self._add((id(attribute), ""), attribute.span, "leaf")
                self._add((id(statement), "close"), statement.span, "close")
            else:
                self._add((id(statement), ""), statement.span, "leaf")
        self._add((id(cell), "close"), cell.span, "close")

    def _comment_inside(self, span: ir.Span) -> bool:
        if not span.line:
            return False
        return any(_start(span) < _start(c.span) < _end(span) for c in self.comments)

    # -- comments
    def _place_comments(self) -> None:
        positioned = sorted((a for a in self.ordered if a.has_position), key=lambda a: a.start)
        for comment in self.comments:
            where = _start(comment.span)
            line = where[0]
            if comment.trailing:
                owners = [a for a in positioned if a.start[0] <= line <= a.end_line and a.start < where]
                if owners:
                    max(owners, key=lambda a: a.start).trailing.append(comment)
                    continue
            # A full-line comment between the lines of one statement stays with it.
            enclosing = [a for a in positioned if a.role == "leaf" and a.start < where and a.end_line > line]
            if enclosing:
                max(enclosing, key=lambda a: a.start).leading.append(comment)
                continue
            following = next((a for a in positioned if a.start > where), None)
            preceding = next((a for a in reversed(positioned) if a.start < where), None)
            indented = comment.span.column > 1
            if (
                preceding is not None
                and preceding.group
                and (following is None or following.group != preceding.group)
                and indented
            ):
                self.group_tail[preceding.group].append(comment)
            elif following is None:
                self.end_comments.append(comment)
            elif following.group and not indented and (preceding is None or preceding.group != following.group):
                self.group_head[following.group].append(comment)
            else:
                following.leading.append(comment)


# ------------------------------------------------------------------ printing
class _Printer:
    def __init__(self, layout: _Layout):
        self.layout = layout
        self.lines: list[str] = []

    def comment_lines(self, comments, depth: int) -> None:
        for comment in comments:
            self.lines.append(f"{INDENT * depth}{comment.text}")

    def emit(self, anchor: Optional[_Anchor], text: str, depth: int) -> None:
        trailing = list(anchor.trailing) if anchor else []
        if anchor:
            self.comment_lines(anchor.leading, depth)
            # Only one comment fits at the end of a line; others go above it.
            self.comment_lines(trailing[:-1], depth)
        line = f"{INDENT * depth}{text}"
        if trailing:
            line += f"  {trailing[-1].text}"
        self.lines.append(line)

    def blank(self) -> None:
        if self.lines and self.lines[-1] != "":
            self.lines.append("")


def _gap_between(previous: Optional[_Anchor], current: _Anchor) -> bool:
    """Whether the source had a blank line between two consecutive elements."""
    if previous is None or not previous.has_position or not current.has_position:
        return False
    return current.first_line() > previous.end_line + 1


def format_space(space: ir.Space) -> str:
    """The canonical text of a whole file (ends with a newline)."""
    layout = _Layout(space)
    out = _Printer(layout)

    header = layout.anchor(space, "header")
    out.emit(header, f"{space.kind} {space.name}", 0)

    def block(group: str, title: str, elements, render) -> None:
        if not elements:
            out.comment_lines(layout.group_head[group] + layout.group_tail[group], 0)
            return
        out.blank()
        out.comment_lines(layout.group_head[group], 0)
        out.lines.append(f"{title} {{")
        for element in elements:
            out.emit(layout.anchor(element), render(element), 1)
        out.comment_lines(layout.group_tail[group], 1)
        out.lines.append("}")

    block("provenance", "provenance", space.provenance, lambda e: f"{e.key} = {format_literal(e.value)}")
    if space.op_sets:
        out.blank()
        for op_set in space.op_sets:
            out.emit(layout.anchor(op_set), f"ops {op_set.name} = {format_op_list(op_set.ops)}", 0)
    block("defaults", "defaults", space.defaults, format_attribute)

    last: Optional[_Anchor] = None
    if space.cell is not None:
        out.blank()
        cell = space.cell
        out.emit(layout.anchor(cell, "open"), "cell {", 0)
        previous: Optional[_Anchor] = None
        for statement in cell.statements:
            if isinstance(statement, (ir.MixedNode, ir.GrowBlock)) and not layout.one_line[id(statement)]:
                opening = layout.anchor(statement, "open")
                if _gap_between(previous, opening):
                    out.blank()
                grows = isinstance(statement, ir.GrowBlock)
                out.emit(opening, f"grow {statement.name} {{" if grows else f"node {statement.name} = mix {{", 1)
                for clause in statement.clauses:
                    out.emit(layout.anchor(clause), format_from_clause(clause), 2)
                for attribute in statement.attributes:
                    out.emit(layout.anchor(attribute), format_attribute(attribute), 2)
                for setting in statement.settings if grows else ():
                    out.emit(layout.anchor(setting), format_setting(setting), 2)
                closing = layout.anchor(statement, "close")
                out.comment_lines(closing.leading, 2)
                out.emit(_Anchor((0, 0), 0, "close", trailing=closing.trailing), "}", 1)
                previous = closing
            else:
                anchor = layout.anchor(statement)
                if _gap_between(previous, anchor):
                    out.blank()
                out.emit(anchor, format_statement_line(statement), 1)
                previous = anchor
        closing = layout.anchor(cell, "close")
        if closing.leading and _gap_between(previous, _Anchor(_start(closing.leading[0].span), closing.end_line, "close")):
            out.blank()
        out.comment_lines(closing.leading, 1)
        out.emit(_Anchor((0, 0), 0, "close", trailing=closing.trailing), "}", 0)
        last = closing
    else:
        last = max((a for a in layout.ordered if a.has_position), key=lambda a: a.start, default=None)

    if layout.end_comments:
        first = layout.end_comments[0].span.line
        if last is not None and last.has_position and first > last.end_line + 1:
            out.blank()
        out.comment_lines(layout.end_comments, 0)
    return "\n".join(out.lines) + "\n"


def format_text(text: Union[str, bytes], path: str = "<space>") -> str:
    """Parse .space text and return its canonical form (raises :class:`essdsl.errors.ParseError`)."""
    from essdsl.lang.parse import parse_space

    return format_space(parse_space(text, path))


__all__ = ["format_space", "format_text", "format_expr", "format_source", "format_literal"]
