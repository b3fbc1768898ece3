"""The answers to editor requests, computed from an :class:`~essdsl.lsp.analysis.Analysis`.

Each function takes the analysis of the document's current version and the
request's parameters and returns lsprotocol data (or None), never raising for
any text: the server calls them while the user types.
"""

from __future__ import annotations

import re
from typing import Optional

from lsprotocol import types

from essdsl.lang import ir
from essdsl.lang.graph import stream_key
from essdsl.lsp.analysis import ATTRIBUTE_VALUES, ATTRIBUTES, KEYWORDS, Analysis, Occurrence, op_doc, op_names, scan_definitions

# ----------------------------------------------------------------- hover


def hover(analysis: Analysis, position: types.Position) -> Optional[types.Hover]:
    o = analysis.occurrence_at(position)
    if o is None:
        return None
    text = _hover_text(analysis, o)
    if not text:
        return None
    return types.Hover(
        contents=types.MarkupContent(kind=types.MarkupKind.Markdown, value=text),
        range=analysis.occurrence_range(o),
    )


def _hover_text(a: Analysis, o: Occurrence) -> str:
    if o.namespace == "op":
        doc = op_doc(o.name)
        return f"**{o.name}** — {doc}" if doc else ""
    if o.namespace == "space":
        return _space_summary(a)
    if o.namespace == "op-set":
        defs = a.definitions_of(o.name, ("op-set",))
        if not defs:
            return ""
        op_set = defs[0].statement
        users = list(dict.fromkeys(u.statement.name for u in _mixed_node_definitions(a) if _uses_op_set(u.statement, o.name)))
        text = f"```space\nops {op_set.name} = {{{', '.join(op_set.ops)}}}\n```"
        if users:
            text += f"\nused by {len(users)} node{'s' if len(users) != 1 else ''}: {', '.join(users)}"
        return text
    if o.namespace == "range":
        shown = ", ".join(o.members[:12]) + (", …" if len(o.members) > 12 else "")
        return f"**{o.name}** — {len(o.members)} names: {shown}"
    return _value_hover(a, o)


def _mixed_node_definitions(a: Analysis) -> list[Occurrence]:
    return [d for d in a.occurrences if d.definition and isinstance(d.statement, ir.MixedNode)]


def _uses_op_set(node: ir.MixedNode, name: str) -> bool:
    return any(c.ops.set_name == name for c in node.clauses)


def _value_hover(a: Analysis, o: Occurrence) -> str:
    defs = a.resolve(o)
    if not defs:
        return ""
    d = defs[0]
    statement = d.statement
    if isinstance(statement, (ir.InputDecl, ir.StateDecl)):
        return _stream_hover(a, statement)
    key = stream_key(d.name, 0) if isinstance(statement, ir.StateUpdate) else d.name
    if not a.ok:
        from essdsl.lang.fmt import format_statement_line

        return f"```space\n{format_statement_line(statement)}\n```\n_sizes and parameters once the file has no errors_"
    block = a.node_blocks.get(key)
    if block is None:
        return ""
    text = f"```text\n{block}\n```"
    entry = a.node_stats.get(key)
    if entry:
        parts = [f"size {entry['dim']}"]
        if entry["kind"] == "mixed":
            parts.append(f"{entry['choices']:,} choice{'s' if entry['choices'] != 1 else ''}")
            parts.append(f"{entry['arch_weights_valid']:,} architecture weights")
        parts.append(_params_text(entry["params_supernet"], entry["params_derived_min"], entry["params_derived_max"]))
        text += "\n" + " · ".join(parts)
    return text


def _params_text(supernet: int, low: int, high: int, unit: str = " parameters") -> str:
    """``stats``' supernet / derived (min – max) pair as one phrase."""
    derived = f"{low:,}" if low == high else f"{low:,} – {high:,}"
    if derived == f"{supernet:,}":
        return f"{supernet:,}{unit}"
    return f"{supernet:,}{unit} in the supernet, {derived} in a derived model"


def _stream_hover(a: Analysis, st) -> str:
    from essdsl.lang.fmt import format_statement_line

    text = f"```space\n{format_statement_line(st)}\n```"
    graph = a.graph
    if graph is None or st.name not in graph.dims:
        return text
    past = "past values come from earlier steps" if isinstance(st, ir.StateDecl) else "the embedded token"
    text += f"\n{st.kind} of size {graph.dims[st.name]} ({past})"
    if isinstance(st, ir.StateDecl) and graph.output == st.name:
        text += "; the output fed to the decoder"
    return text


def _space_summary(a: Analysis) -> str:
    space = a.space
    if not a.ok or a.stats is None:
        return f"**{space.kind} {space.name}**" if space else ""
    s = a.stats
    p, f = s["params"], s["flops_per_token"]
    sizes = ", ".join(f"{k} {v}" for k, v in s["sizes"].items())
    lines = [
        f"**{s['kind']} {s['name']}** ({sizes})",
        "",
        f"- architectures: {s['architectures']:,}" + (f" (10^{s['architectures_log10']:.2f})" if s["architectures_log10"] else ""),
        f"- mixed nodes: {s['mixed_nodes']}, architecture weights {s['arch_weights']:,} ({s['arch_weights_valid']:,} valid)",
        f"- parameters: {_params_text(p['supernet'], p['derived_min'], p['derived_max'])}",
        f"- FLOPs per token: {_params_text(f['supernet'], f['derived_min'], f['derived_max'], '')}",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------- definition / references
def definition(analysis: Analysis, uri: str, position: types.Position) -> Optional[list[types.Location]]:
    """Where the name under the cursor is defined; every member's definition for a range's ``..``."""
    o = analysis.occurrence_at(position)
    if o is None:
        return None
    targets = analysis.resolve(o)
    return [types.Location(uri=uri, range=analysis.occurrence_range(t)) for t in targets] or None


def references(analysis: Analysis, uri: str, position: types.Position, include_declaration: bool) -> Optional[list[types.Location]]:
    o = analysis.occurrence_at(position)
    if o is None:
        return None
    found = analysis.references(o, include_declaration)
    return [types.Location(uri=uri, range=analysis.occurrence_range(r)) for r in found] or None


# ----------------------------------------------------------------- completion
_KIND = {
    "keyword": types.CompletionItemKind.Keyword,
    "attribute": types.CompletionItemKind.Property,
    "value": types.CompletionItemKind.EnumMember,
    "op": types.CompletionItemKind.Function,
    "op-set": types.CompletionItemKind.Enum,
    "fixed": types.CompletionItemKind.Variable,
    "mixed": types.CompletionItemKind.Variable,
    "input": types.CompletionItemKind.Field,
    "state": types.CompletionItemKind.Field,
}
_FUNCTIONS = tuple(ir.FUNCTIONS)


def completion(analysis: Analysis, position: types.Position) -> types.CompletionList:
    """Names that fit where the cursor is: op names inside an op set, op-set names after
    ``ops``, nodes and streams after ``from``, an attribute's values after it, else
    keywords, attributes, functions, ops and the file's own names."""
    line, column = analysis.from_position(position)
    before = analysis.lines[line - 1][: column - 1] if analysis.lines else ""
    context = _completion_context(analysis.text, analysis.offset(line, column), before)
    names = _defined_names(analysis)
    items: list[tuple[str, str, str]] = []  # (label, kind, detail)
    if context == "op":
        items += [(op, "op", op_doc(op) or "op") for op in op_names()]
    elif context == "op-ref":
        items += [(n, "op-set", "op set") for n, k in names if k == "op-set"]
    elif context == "source":  # a candidate source of a mixed node
        items += [(n, k, {"fixed": "node", "mixed": "mixed node"}.get(k, k)) for n, k in names if k != "op-set"]
        items.append(("pairs", "keyword", "every unordered pair of the listed states, as Hadamard products"))
    elif context in ATTRIBUTE_VALUES:
        items += [(v, "value", context) for v in ATTRIBUTE_VALUES[context]]
    else:
        items += [(k, "keyword", "keyword") for k in KEYWORDS]
        items += [(k, "attribute", "mixed-node attribute") for k in ATTRIBUTES]
        items += [(f, "op", op_doc(f) or "function") for f in _FUNCTIONS]
        items += [(op, "op", op_doc(op) or "op") for op in op_names() if op not in _FUNCTIONS]
        items += [(n, k, {"fixed": "node", "mixed": "mixed node"}.get(k, k)) for n, k in names]
    seen, out = set(), []
    for label, kind, detail in items:
        if label in seen:
            continue
        seen.add(label)
        out.append(types.CompletionItem(label=label, kind=_KIND[kind], detail=detail))
    return types.CompletionList(is_incomplete=False, items=out)


def _completion_context(text: str, offset: int, line_before: str) -> str:
    """What the cursor is completing: ``op`` (inside ``{…}`` of an op set), ``op-ref``
    (right after ``ops``), ``source`` (after ``from`` or a comma of its source list),
    an attribute name (its value), or ``any``."""
    words = re.findall(r"[A-Za-z_]\w*|[{}=,]", line_before)
    partial = bool(re.search(r"[A-Za-z_]\w*$", line_before))
    if partial:
        words = words[:-1]
    previous = words[-1] if words else ""
    if previous in ATTRIBUTE_VALUES or previous == "combine":
        return previous
    if previous == "ops":
        return "op-ref"
    clause = [w for w in words if w in ("from", "ops", "{", "}")]
    if previous == "from" or (previous == "," and clause and clause[-1] == "from"):
        return "source"
    # Inside braces opened after 'ops' (an op set, named or inline)?
    head = text[:offset]
    brace = head.rfind("{")
    if brace > head.rfind("}"):
        lead = re.findall(r"[A-Za-z_]\w*|=", head[:brace])[-3:]
        if lead and (lead[-1] == "ops" or (len(lead) == 3 and lead[0] == "ops" and lead[2] == "=")):
            return "op"
        if lead and lead[-1] == "combine":
            return "combine"
    return "any"


def _defined_names(analysis: Analysis) -> list[tuple[str, str]]:
    """(name, kind) of the file's nodes, streams and op sets: from the parse when the
    text parses, else read off the text (while typing, the text rarely parses)."""
    if analysis.space is not None:
        out = [(d.name, _definition_kind(d)) for d in analysis.occurrences if d.definition and d.namespace in ("value", "op-set") and d.target != "update"]
    else:
        out = [(name, kind) for kind, name, _ in scan_definitions(analysis.text)]
    return list(dict.fromkeys(out))


def _definition_kind(d: Occurrence) -> str:
    st = d.statement
    if isinstance(st, ir.OpSet):
        return "op-set"
    if isinstance(st, ir.MixedNode):
        return "mixed"
    if isinstance(st, ir.FixedNode):
        return "fixed"
    return st.kind  # input / state


# ----------------------------------------------------------------- document symbols
_SYMBOL_KIND = {
    "op-set": types.SymbolKind.Enum,
    "fixed": types.SymbolKind.Function,
    "mixed": types.SymbolKind.Struct,
    "input": types.SymbolKind.Variable,
    "state": types.SymbolKind.Variable,
    "update": types.SymbolKind.Event,
}


def document_symbols(analysis: Analysis) -> list[types.DocumentSymbol]:
    """Op sets and the cell's streams, nodes and state updates, in file order."""
    out = []
    if analysis.space is not None:
        for d in analysis.occurrences:
            if not d.definition or d.namespace not in ("value", "op-set"):
                continue
            kind = "update" if d.target == "update" else _definition_kind(d)
            whole = analysis.span_range(d.statement.span) if getattr(d.statement, "span", None) else analysis.occurrence_range(d)
            name_range = analysis.occurrence_range(d)
            name = f"{d.name}[t]" if kind == "update" else d.name
            out.append(_symbol(name, kind, _cover(whole, name_range), name_range))
        return out
    for kind, name, offset in scan_definitions(analysis.text):
        line = analysis.text.count("\n", 0, offset) + 1
        column = offset - (analysis.text.rfind("\n", 0, offset) + 1) + 1
        name_range = analysis.range(line, column, line, column + len(name))
        out.append(_symbol(name, kind, name_range, name_range))
    return out


def _cover(outer: types.Range, inner: types.Range) -> types.Range:
    """``outer`` stretched to contain ``inner`` (LSP requires a symbol's range to hold its selection)."""
    start = min((outer.start.line, outer.start.character), (inner.start.line, inner.start.character))
    end = max((outer.end.line, outer.end.character), (inner.end.line, inner.end.character))
    return types.Range(start=types.Position(line=start[0], character=start[1]), end=types.Position(line=end[0], character=end[1]))


def _symbol(name: str, kind: str, whole: types.Range, selection: types.Range) -> types.DocumentSymbol:
    detail = {"fixed": "node", "mixed": "mixed node", "update": "state update", "op-set": "op set"}.get(kind, kind)
    return types.DocumentSymbol(name=name, kind=_SYMBOL_KIND[kind], range=whole, selection_range=selection, detail=detail)


# ----------------------------------------------------------------- formatting
def formatting(analysis: Analysis, original: str) -> Optional[list[types.TextEdit]]:
    """One edit that replaces the document by ``essdsl fmt``'s output; None when the
    text does not parse (its diagnostics say why) and [] when it is already formatted.
    The analysis already holds the parse, so only the printing is done here."""
    from essdsl.lang.fmt import format_space

    if analysis.space is None:
        return None
    formatted = format_space(analysis.space)
    if formatted == original:
        return []
    return [types.TextEdit(range=types.Range(start=types.Position(line=0, character=0), end=analysis.end_position()), new_text=formatted)]


__all__ = ["hover", "definition", "references", "completion", "document_symbols", "formatting"]
