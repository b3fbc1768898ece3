"""Text -> IR: the Lark LALR parser and the transformer that builds :mod:`essdsl.lang.ir`.

``parse_space(text, path)`` returns a :class:`essdsl.lang.ir.Space` or raises
:class:`essdsl.errors.ParseError` carrying ``path:line:col`` diagnostics.  It
never lets a Lark or Python exception escape for any input, bytes included.
"""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path
from typing import Union

from lark import Lark, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from essdsl.lang import ir
from essdsl.lang import limits
from essdsl.lang.suggest import did_you_mean
from essdsl.errors import Diagnostic, ParseError

GRAMMAR_NAME = "space.lark"


def grammar_text() -> str:
    """The grammar, from the installed package data or (in a source checkout) ``grammars/``."""
    try:
        packaged = resources.files("essdsl").joinpath("grammars", GRAMMAR_NAME)
        if packaged.is_file():
            return packaged.read_text(encoding="utf-8")
    except (FileNotFoundError, ModuleNotFoundError):  # pragma: no cover - defensive
        pass
    repo = Path(__file__).resolve().parents[2] / "grammars" / GRAMMAR_NAME
    return repo.read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    """The LALR parser.  Building its tables takes ~0.1 s, so they are cached on
    disk as plain data (:mod:`essdsl.lang.grammar_cache`: never a pickle, never from a
    folder others can write); a missing or untrusted cache only costs that time."""
    from essdsl.lang.grammar_cache import load_parser

    return load_parser(grammar_text(), parser="lalr", lexer="contextual", propagate_positions=True, maybe_placeholders=False)


def _span(meta_or_token) -> ir.Span:
    m = meta_or_token
    if getattr(m, "empty", False):
        return ir.NO_SPAN
    return ir.Span(line=m.line, column=m.column, end_line=m.end_line, end_column=m.end_column)


class _Builder(Transformer):
    """Parse tree -> IR.  Each method receives (meta, children)."""

    # -- header / items
    @v_args(meta=True)
    def start(self, meta, children):
        kind, name, name_span = children[0]
        space = dict(kind=kind, name=name, name_span=name_span, span=_span(meta))
        op_sets, defaults, provenance, cells = [], [], [], []
        for item in children[1:]:
            tag, value = item
            if tag == "ops":
                op_sets.append(value)
            elif tag == "defaults":
                defaults.extend(value)
            elif tag == "provenance":
                provenance.extend(value)
            elif tag == "cell":
                cells.append(value)
        if len(cells) > 1:
            raise _SemanticSyntaxError("a file has at most one cell", cells[1].span)
        return ir.Space(
            **space,
            op_sets=op_sets,
            defaults=defaults,
            provenance=provenance,
            cell=cells[0] if cells else None,
        )

    def space_decl(self, children):
        return ("space", str(children[0]), _span(children[0]))

    def genotype_decl(self, children):
        return ("genotype", str(children[0]), _span(children[0]))

    # -- provenance
    def provenance(self, children):
        return ("provenance", children)

    @v_args(meta=True)
    def prov_entry(self, meta, children):
        return ir.ProvenanceEntry(key=str(children[0]), value=children[1], span=_span(meta))

    def string(self, children):
        import json

        return json.loads(children[0])

    def number(self, children):
        text = str(children[0])
        try:
            return int(text)
        except ValueError:
            return float(text)

    def list(self, children):
        return list(children)

    # -- op sets
    @v_args(meta=True)
    def ops_decl(self, meta, children):
        name, (ops, spans) = children
        return ("ops", ir.OpSet(name=str(name), ops=ops, op_spans=spans, span=_span(meta)))

    def op_set(self, children):
        return ([str(c) for c in children], [_span(c) for c in children])

    # -- defaults and attributes
    def defaults(self, children):
        return ("defaults", children)

    def _attr(name):  # noqa: N805 - factory used at class creation
        @v_args(meta=True)
        def method(self, meta, children):
            value = children[0]
            if isinstance(value, tuple):  # combine spec or dim
                value, value_span = value
            elif isinstance(value, ir.Dim):  # dim attribute: a size name or a number
                value, value_span = (value.symbol if value.symbol is not None else value.value), value.span
            else:
                value_span = _span(value)
                value = int(value) if value.type == "INT" else str(value)
            return ir.Attribute(name=name, value=value, value_span=value_span, span=_span(meta))

        return method

    transform_attr = _attr("transform")
    combine_attr = _attr("combine")
    select_attr = _attr("select")
    keep_attr = _attr("keep")
    dim_attr = _attr("dim")

    @v_args(meta=True)
    def norm_attr(self, meta, children):
        """``norm NAME [shared]``, in defaults, a mix block or after a fixed node."""
        value = children[0]
        return ir.Attribute(
            name="norm", value=str(value), value_span=_span(value), span=_span(meta), shared=len(children) > 1
        )

    def norm_shared(self, children):
        return True

    node_norm = norm_attr

    def combine_one(self, children):
        return (str(children[0]), _span(children[0]))

    @v_args(meta=True)
    def combine_set(self, meta, children):
        return ([str(c) for c in children], _span(meta))

    # -- cell
    @v_args(meta=True)
    def cell(self, meta, children):
        return ("cell", ir.Cell(statements=children, span=_span(meta)))

    @v_args(meta=True)
    def input_decl(self, meta, children):
        return self._stream(ir.InputDecl, meta, children)

    @v_args(meta=True)
    def state_decl(self, meta, children):
        return self._stream(ir.StateDecl, meta, children)

    def _stream(self, cls, meta, children):
        name = children[0]
        window = children[1] if len(children) == 3 else None
        dim = children[-1]
        return cls(name=str(name), window=window, dim=dim, span=_span(meta))

    @v_args(meta=True)
    def window_one(self, meta, children):
        return ir.Window(earliest=children[0], latest=children[0], span=_span(meta))

    @v_args(meta=True)
    def window_range(self, meta, children):
        a, b = children
        return ir.Window(earliest=min(a, b), latest=max(a, b), span=_span(meta))

    def time_now(self, children):
        return 0

    def time_past(self, children):
        return -int(children[0])

    @v_args(meta=True)
    def dim_symbol(self, meta, children):
        return ir.Dim(symbol=str(children[0]), span=_span(meta))

    @v_args(meta=True)
    def dim_number(self, meta, children):
        return ir.Dim(value=int(children[0]), span=_span(meta))

    @v_args(meta=True)
    def fixed_node(self, meta, children):
        name, expr, *norm = children
        return ir.FixedNode(
            name=str(name), expr=expr, name_span=_span(name), span=_span(meta), norm=norm[0] if norm else None
        )

    @v_args(meta=True)
    def mixed_node(self, meta, children):
        name, *stmts = children
        clauses = [s for s in stmts if isinstance(s, ir.FromClause)]
        attributes = [s for s in stmts if isinstance(s, ir.Attribute)]
        return ir.MixedNode(
            name=str(name), clauses=clauses, attributes=attributes, name_span=_span(name), span=_span(meta)
        )

    @v_args(meta=True)
    def state_update(self, meta, children):
        name, expr = children
        return ir.StateUpdate(name=str(name), expr=expr, name_span=_span(name), span=_span(meta))

    @v_args(meta=True)
    def output_decl(self, meta, children):
        return ir.OutputDecl(name=str(children[0]), span=_span(meta))

    @v_args(meta=True)
    def grow_block(self, meta, children):
        from essdsl.lang.growth import grow_block

        return grow_block(children, _span(meta), _span)

    def _grow_setting(name):  # noqa: N805 - factory used at class creation
        @v_args(meta=True)
        def method(self, meta, children):
            value, *unit = children
            return ir.GrowSetting(
                name=name,
                value=int(value) if value.type == "INT" else str(value),
                unit=str(unit[0]) if unit else None,
                value_span=_span(value),
                unit_span=_span(unit[0]) if unit else ir.NO_SPAN,
                span=_span(meta),
            )

        return method

    grow_start = _grow_setting("start")
    grow_max = _grow_setting("max")
    grow_every = _grow_setting("every")
    grow_plateau = _grow_setting("plateau")
    grow_mode = _grow_setting("mode")

    # -- mixed-node clauses
    @v_args(meta=True)
    def from_clause(self, meta, children):
        sources, ops = children
        if isinstance(ops, tuple):  # inline {op, op}
            names, spans = ops
            ops = ir.OpRef(ops=names, op_spans=spans, span=spans[0] if spans else ir.NO_SPAN)
        return ir.FromClause(sources=sources, ops=ops, span=_span(meta))

    @v_args(meta=True)
    def op_set_ref(self, meta, children):
        return ir.OpRef(set_name=str(children[0]), span=_span(meta))

    def source_list(self, children):
        return list(children)

    @v_args(meta=True)
    def pair(self, meta, children):
        return ir.Pair(left=children[0], right=children[1], span=_span(meta))

    @v_args(meta=True)
    def pairs(self, meta, children):
        return ir.Pairs(items=children[0], span=_span(meta))

    @v_args(meta=True)
    def ref_node(self, meta, children):
        return ir.Ref(name=str(children[0]), span=_span(meta))

    @v_args(meta=True)
    def ref_timed(self, meta, children):
        return ir.Ref(name=str(children[0]), offset=children[1], timed=True, span=_span(meta))

    @v_args(meta=True)
    def range_nodes(self, meta, children):
        return ir.Range(first=str(children[0]), last=str(children[1]), span=_span(meta))

    @v_args(meta=True)
    def range_timed(self, meta, children):
        name, a, b = children
        return ir.Range(
            first=str(name), last=str(name), first_offset=a, last_offset=b, timed=True, span=_span(meta)
        )

    # -- expressions
    def _binary(op):  # noqa: N805
        @v_args(meta=True)
        def method(self, meta, children):
            return ir.BinaryOp(operator=op, left=children[0], right=children[1], span=_span(meta))

        return method

    add = _binary("+")
    sub = _binary("-")
    mul = _binary("*")

    @v_args(meta=True)
    def call(self, meta, children):
        function, *args = children
        positional = [a for a in args if not isinstance(a, tuple)]
        keywords = {}
        for a in args:
            if isinstance(a, tuple):
                key, value, key_span = a
                if key in keywords:
                    raise _SemanticSyntaxError(f"keyword argument '{key}' given twice", key_span)
                keywords[key] = value
        if keywords and any(isinstance(a, tuple) for a in args[: len(positional)]):
            pass
        return ir.Call(
            function=str(function),
            args=positional,
            keywords=keywords,
            function_span=_span(function),
            span=_span(meta),
        )

    def keyword_arg(self, children):
        key, value = children
        return (str(key), value, _span(key))


class _SemanticSyntaxError(Exception):
    def __init__(self, message: str, span: ir.Span):
        super().__init__(message)
        self.message = message
        self.span = span


# Friendly messages for common mistakes, keyed by snippets that trigger the
# same LALR error state (Lark's match_examples).
_EXAMPLES = {
    "a statement inside a cell must start with 'input', 'state', 'node', 'output' or 'NAME[t] ='": [
        "space a cell { foo }",
        "space a cell { x = y }",
        "space a cell { nod s1 = x }",
    ],
    "expected '=' after the node name": ["space a cell { node s1 tanh(x) }"],
    "a 'from' clause needs 'ops' and an op set after its sources": [
        "space a cell { node s1 = mix { from s0 } }",
        "space a cell { node s1 = mix { from s0 tanh } }",
    ],
    "an op set is written '{op, op, ...}' with commas between names": [
        "space a ops o = {tanh relu}",
        "space a ops o = {}",
    ],
    "a file must start with 'space NAME' or 'genotype NAME'": ["cell { }", "ops o = {tanh}", "node s1 = x"],
    "unbalanced parentheses or brackets": ["space a cell { node s1 = tanh(x }", "space a cell { node s1 = x[t-1 }"],
    "a time index is written 't' or 't-K', e.g. h[t-1]": [
        "space a cell { node s1 = h[1] }",
        "space a cell { node s1 = h[t+1] }",
        "space a cell { node s1 = h[k] }",
    ],
}


def _describe_unexpected(exc: UnexpectedInput, text: str) -> str:
    try:
        label = exc.match_examples(_parser().parse, _EXAMPLES, use_accepts=True)
    except Exception:  # noqa: BLE001 - match_examples re-parses; never let it escape
        label = None
    if isinstance(exc, UnexpectedEOF):
        found = "end of file"
    elif isinstance(exc, UnexpectedToken):
        tok = exc.token
        found = "end of file" if tok.type == "$END" else f"'{tok}'"
    elif isinstance(exc, UnexpectedCharacters):
        found = f"character {text[exc.pos_in_stream]!r}" if exc.pos_in_stream < len(text) else "end of file"
    else:  # pragma: no cover
        found = "input"
    # ``accepts`` (what the parser takes after performing its pending reductions) is exact;
    # ``expected`` is the LALR state's lookahead set, which merges contexts: after an op set
    # inside mix { } it also lists the file-level 'cell', 'defaults' and 'ops'.
    terminals = getattr(exc, "accepts", None) or getattr(exc, "expected", None) or getattr(exc, "allowed", None) or []
    expected = sorted(_pretty_terminal(t) for t in terminals)
    message = f"unexpected {found}"
    if label:
        message += f": {label}"
    elif expected:
        shown = ", ".join(expected[:8]) + (", ..." if len(expected) > 8 else "")
        message += f"; expected one of: {shown}"
    if isinstance(exc, UnexpectedToken) and exc.token.type == "NAME":
        message += did_you_mean(str(exc.token), _keywords(terminals))
    return message


def _keywords(terminals) -> list[str]:
    """The keywords among ``terminals`` (what a misspelt name may have meant)."""
    keywords = []
    try:
        for term in _parser().terminals:
            if term.name in terminals and term.pattern.type == "str" and term.pattern.value.isidentifier():
                keywords.append(term.pattern.value)
    except Exception:  # noqa: BLE001 - a suggestion is optional
        return []
    return keywords


_TERMINAL_NAMES = {
    "NAME": "a name",
    "INT": "an integer",
    "SIGNED_NUMBER": "a number",
    "STRING": "a string",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LPAR": "'('",
    "RPAR": "')'",
    "LSQB": "'['",
    "RSQB": "']'",
    "COMMA": "','",
    "EQUAL": "'='",
    "COLON": "':'",
    "PLUS": "'+'",
    "MINUS": "'-'",
    "STAR": "'*'",
    "$END": "end of file",
}


def _pretty_terminal(name: str) -> str:
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    try:
        for term in _parser().terminals:
            if term.name == name and term.pattern.type == "str":
                return f"'{term.pattern.value}'"
    except Exception:  # noqa: BLE001
        pass
    return name.lower()


def _collect_comments(text: str) -> list[ir.Comment]:
    """Comments with their positions, found by scanning each line ('#' inside a string is not a comment).

    A scan rather than the grammar's lexer: the standalone lexer has no parser
    context, so it reads ``t-1..t`` as the number ``-1.`` followed by a stray
    ``.``, gives up, and every comment after the first window was lost.
    """
    comments = []
    for line_number, line_text in enumerate(text.split("\n"), start=1):
        in_string = False
        escaped = False
        for index, char in enumerate(line_text):
            if in_string:
                if escaped:
                    escaped = False
                elif char == "\\":
                    escaped = True
                elif char == '"':
                    in_string = False
            elif char == '"':
                in_string = True
            elif char == "#":
                body = line_text[index:].rstrip()
                trailing = bool(line_text[:index].strip())
                span = ir.Span(line=line_number, column=index + 1, end_line=line_number, end_column=index + 1 + len(body))
                comments.append(ir.Comment(text=body, trailing=trailing, span=span))
                break
    return comments


def strip_bom(text: str) -> str:
    """``text`` without a leading UTF-8 byte-order mark (editors on Windows write one);
    it is not part of the file's text, so positions count from after it."""
    return text[1:] if text.startswith("\ufeff") else text


# ------------------------------------------------------------------ lines and limits
# One definition of a line for the parser, the diagnostic excerpt and fmt: a line
# ends at "\n" and nowhere else.  Lark counts lines that way; Python's
# str.splitlines() also breaks at \f, \r, \x85, \u2028, ..., which made the
# excerpt show a different line than the one the parser meant.
def source_lines(text: str) -> list[str]:
    """The lines of ``text`` as the parser counts them (``\r`` of a CRLF ending dropped)."""
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


_LARK_WHITESPACE = " \t\f\r\n"  # common.WS, the only whitespace the grammar ignores


def _end_position(text: str) -> tuple[int, int]:
    """(line, column) just after the last non-blank character, for "unexpected end of file"."""
    lines = text.rstrip(_LARK_WHITESPACE).split("\n")
    return len(lines), len(lines[-1]) + 1


# Comments and strings first, so that brackets and digits inside them do not count.
_LIMIT_TOKENS = re.compile(r'#[^\n]*|"(?:\\.|[^"\\\n])*"?|[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[(\[{]|[)\]}]|\n')


def lexical_limit_diagnostics(text: str) -> list[Diagnostic]:
    """Numbers, names and bracket nesting beyond :mod:`essdsl.lang.limits`, found by one
    linear scan before parsing, so that no later stage ever recurses that deep or
    converts a number that long (Python refuses int() of 4,300+ digits)."""
    diagnostics: list[Diagnostic] = []
    line, line_start, depth, nesting_reported = 1, 0, 0, False
    for match in _LIMIT_TOKENS.finditer(text):
        token = match.group()
        first = token[0]
        column = match.start() - line_start + 1
        if token == "\n":
            line, line_start = line + 1, match.end()
        elif first in "([{":
            depth += 1
            if depth > limits.MAX_NESTING and not nesting_reported:
                nesting_reported = True
                diagnostics.append(
                    Diagnostic(
                        "error",
                        f"nested too deeply: more than {limits.MAX_NESTING} levels of brackets (the limit); "
                        "give inner expressions their own nodes",
                        line, column, column + 1, code="limit",
                    )
                )
        elif first in ")]}":
            depth = max(0, depth - 1)
        elif first.isdigit() and len(token) > limits.MAX_NUMBER_DIGITS:
            diagnostics.append(
                Diagnostic(
                    "error",
                    f"number with {len(token)} digits; a number has at most {limits.MAX_NUMBER_DIGITS}",
                    line, column, column + len(token), code="limit",
                )
            )
        elif (first.isalpha() or first == "_") and len(token) > limits.MAX_NAME_LENGTH:
            diagnostics.append(
                Diagnostic(
                    "error",
                    f"name of {len(token)} characters; a name has at most {limits.MAX_NAME_LENGTH}",
                    line, column, column + len(token), code="limit",
                )
            )
    return diagnostics


_OPERATOR_RULES = ("add", "sub", "mul")
_NODE_RULES = ("fixed_node", "mixed_node")
_EXPRESSION_STATEMENTS = ("fixed_node", "state_update")


def _start(item) -> tuple[int, int]:
    """(line, column) where a parse-tree child starts (a Tree's meta or a Token)."""
    meta = getattr(item, "meta", None)
    if meta is not None and not getattr(meta, "empty", True):
        return meta.line, meta.column
    return getattr(item, "line", 0) or 0, getattr(item, "column", 0) or 0


def tree_limit_diagnostics(tree) -> list[Diagnostic]:
    """Node count and expression length beyond :mod:`essdsl.lang.limits`, found without
    recursion (a sum of 20,000 terms is a parse tree 20,000 levels deep, which the
    transformer and every later pass would recurse through)."""
    diagnostics: list[Diagnostic] = []
    cells = [child for child in tree.children if getattr(child, "data", None) == "cell"]
    for cell in cells:
        nodes = [st for st in cell.children if getattr(st, "data", None) in _NODE_RULES]
        if len(nodes) > limits.MAX_NODES:
            line, column = _start(nodes[limits.MAX_NODES])
            diagnostics.append(
                Diagnostic("error", f"more than {limits.MAX_NODES} nodes in one cell (the limit)", line, column, code="limit")
            )
        for statement in cell.children:
            if getattr(statement, "data", None) not in _EXPRESSION_STATEMENTS:
                continue
            operands: list[tuple[int, int]] = []  # where the right operand of each operator starts
            stack = [statement]
            while stack:
                item = stack.pop()
                children = getattr(item, "children", None)
                if children is None:
                    continue
                if item.data in _OPERATOR_RULES and len(children) == 2:
                    operands.append(_start(children[1]))
                elif item.data == "call":  # children: the function's name, then the arguments
                    operands.extend(_start(argument) for argument in children[2:])
                stack.extend(children)
            if len(operands) > limits.MAX_OPERATORS:
                line, column = sorted(operands)[limits.MAX_OPERATORS]
                diagnostics.append(
                    Diagnostic(
                        "error",
                        f"expression too long: {len(operands)} operators (+, -, *) and extra arguments where the limit is "
                        f"{limits.MAX_OPERATORS}; split it over several nodes",
                        line, column, code="limit",
                    )
                )
    return diagnostics


def parse_space(source: Union[str, bytes], path: str = "<space>") -> ir.Space:
    """Parse .space text (or raw bytes) into the IR; raise ParseError with diagnostics."""
    if isinstance(source, bytes):
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = source[: exc.start].count(b"\n") + 1
            col = exc.start - (source.rfind(b"\n", 0, exc.start) + 1) + 1
            raise ParseError(
                [Diagnostic("error", f"file is not UTF-8 text (byte 0x{source[exc.start]:02x})", line, col, code="encoding")],
                path,
            ) from None
    else:
        text = source
    text = strip_bom(text)
    if "\x00" in text:
        offset = text.index("\x00")
        line = text.count("\n", 0, offset) + 1
        col = offset - (text.rfind("\n", 0, offset) + 1) + 1
        raise ParseError([Diagnostic("error", "file contains a NUL character; is it binary?", line, col, code="encoding")], path, text)
    if not text.strip() or all(not ln.strip() or ln.lstrip().startswith("#") for ln in source_lines(text)):
        raise ParseError(
            [Diagnostic("error", "empty file: a .space file starts with 'space NAME' or 'genotype NAME'", 1, 1, code="empty")],
            path,
            text,
        )
    too_big = lexical_limit_diagnostics(text)
    if too_big:
        raise ParseError(too_big, path, text)
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as exc:
        line = getattr(exc, "line", 0) or 0
        column = getattr(exc, "column", 0) or 0
        if isinstance(exc, UnexpectedEOF) or line in (0, -1):
            line, column = _end_position(text)
        raise ParseError([Diagnostic("error", _describe_unexpected(exc, text), line, column, code="syntax")], path, text) from None
    except LarkError as exc:  # pragma: no cover - other Lark failures
        raise ParseError([Diagnostic("error", f"cannot parse: {exc}", 1, 1, code="syntax")], path, text) from None
    except RecursionError:
        raise ParseError([Diagnostic("error", "expression nested too deeply", 1, 1, code="syntax")], path, text) from None
    too_big = tree_limit_diagnostics(tree)
    if too_big:
        raise ParseError(too_big, path, text)
    try:
        space = _Builder().transform(tree)
    except VisitError as exc:
        inner = exc.orig_exc
        if isinstance(inner, _SemanticSyntaxError):
            s = inner.span
            raise ParseError([Diagnostic("error", inner.message, s.line, s.column, code="syntax")], path, text) from None
        raise
    except RecursionError:
        raise ParseError([Diagnostic("error", "expression nested too deeply", 1, 1, code="syntax")], path, text) from None
    return space.model_copy(update={"comments": _collect_comments(text)})


def read_space_bytes(path: Union[str, Path]) -> bytes:
    """The bytes of a .space file; a missing or unreadable one raises ParseError with one
    ``io`` diagnostic (``no such file``, ``is a directory…``, ``cannot read: …``)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        message = "no such file"
    except IsADirectoryError:
        message = "is a directory, not a .space file"
    except OSError as exc:
        message = f"cannot read: {exc.strerror or exc}"
    raise ParseError([Diagnostic("error", message, code="io")], str(path))


def parse_file(path: Union[str, Path]) -> tuple[ir.Space, str]:
    """Read and parse a file; returns (space, text).  Missing/unreadable files raise ParseError."""
    data = read_space_bytes(path)
    space = parse_space(data, str(path))
    return space, strip_bom(data.decode("utf-8"))
