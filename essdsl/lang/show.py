"""Readable views of a cell graph: plain text (:func:`describe`) and Graphviz dot (:func:`to_dot`). No torch.

Dot conventions: input streams are boxes, past values of recurrent states are
dashed grey boxes (they come from the previous time step), fixed nodes and
state updates are ellipses (updates drawn bold), mixed nodes are double
circles whose candidate edges are dashed and labelled with their ops.  A
Hadamard pair candidate ``a * b`` is drawn as a small ``⊙`` point fed by both
sources.
"""

from __future__ import annotations

from essdsl.lang.layout import arch_params, expr_params, mixed_params
from essdsl.lang.dims import expr_dim
from essdsl.lang.exprs import EApply, ECombine, EHighway, ELinear, ERef, RExpr
from essdsl.lang.graph import CellGraph, MixedSpec, Stream, UpdateSpec, norm_text
from essdsl.lang.ir import window_text


# ----------------------------------------------------------------- expressions
def expr_text(e: RExpr) -> str:
    """An expression in .space syntax (with graph keys for references)."""
    if isinstance(e, ERef):
        return e.key
    if isinstance(e, EApply):
        return f"{e.op}({expr_text(e.arg)})"
    if isinstance(e, ECombine):
        if e.combiner == "mean":
            return f"mean({', '.join(expr_text(t) for t in e.terms)})"
        if e.combiner == "product":
            return " * ".join(_operand(t, "product") for t in e.terms)
        parts = []
        signs = e.signs or (1,) * len(e.terms)
        for i, (t, s) in enumerate(zip(e.terms, signs)):
            text = _operand(t, "sum")
            if i == 0:
                parts.append(text if s > 0 else f"-{text}")
            else:
                parts.append(f"{'+' if s > 0 else '-'} {text}")
        return " ".join(parts)
    if isinstance(e, ELinear):
        fn = "linear" if e.bias else "project"
        args = [expr_text(t) for t in e.inputs]
        if e.dim_symbol:
            args.append(f"dim = {e.dim_symbol}")
        return f"{fn}({', '.join(args)})"
    if isinstance(e, EHighway):
        args = [e.op] + [expr_text(t) for t in e.inputs] + [f"carry = {expr_text(e.carry)}"]
        return f"highway({', '.join(args)})"
    raise TypeError(f"unknown expression {e!r}")  # pragma: no cover


def _operand(e: RExpr, context: str) -> str:
    text = expr_text(e)
    if isinstance(e, ECombine) and e.combiner == "sum" and len(e.terms) > 1:
        return f"({text})"
    if context == "product" and isinstance(e, ECombine) and e.combiner == "product":
        return f"({text})"
    return text


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(n) for n in shape)


def _size_text(graph: CellGraph, name: str) -> str:
    symbol = graph.dim_symbols.get(name, "")
    value = graph.dims[name]
    return str(value) if symbol == str(value) or not symbol else f"{symbol} = {value}"


# ----------------------------------------------------------------- text
def describe(graph: CellGraph) -> str:
    """The cell as text: streams, nodes in topological order with what they compute, output."""
    sizes = ", ".join(f"{k}={v}" for k, v in graph.sizes.items())
    lines = [f"{graph.kind} {graph.name}  ({sizes})", ""]
    lines.append("inputs:")
    if not graph.inputs:
        lines.append("  (none)")
    for name, w in graph.inputs.items():
        lines.append(f"  {window_text(name, w):<16} : {_size_text(graph, name)}")
    lines.append("states (past values come from earlier steps):")
    for name, w in graph.states.items():
        lines.append(f"  {window_text(name, w):<16} : {_size_text(graph, name)}")
    lines.append("")
    lines.append("nodes, in the order a step computes them:")
    for key in graph.computed():
        spec = graph.spec(key)
        dim = graph.dim(key)
        if isinstance(spec, MixedSpec):
            lines.append(f"  {key}  [mixed, size {dim}]")
            attrs = [
                f"transform {spec.transform}",
                f"combine {'{' + ', '.join(spec.combine) + '}' if len(spec.combine) > 1 else spec.combine[0]}",
                f"select {spec.select}",
                f"keep {spec.keep} of {len(spec.edges)}",
                f"norm {norm_text(spec)}",
            ]
            lines.append(f"      {', '.join(attrs)}")
            width = max((len(e.label) for e in spec.edges), default=0)
            for i, edge in enumerate(spec.edges):
                what = "Hadamard pair " if len(edge.sources) > 1 else ""
                lines.append(f"      edge {i}: {what}{edge.label:<{width}}  ops {{{', '.join(edge.ops)}}}")
            params = mixed_params(spec, graph) + arch_params(spec)
            if params:
                lines.append("      tensors: " + ", ".join(f"{p.name} {_shape(p.shape)}" for p in params))
        else:
            kind = "update" if isinstance(spec, UpdateSpec) else "fixed"
            norm = f"  (norm {norm_text(spec)})" if norm_text(spec) != "none" else ""
            lines.append(f"  {key}  [{kind}, size {dim}] = {expr_text(spec.expr)}{norm}")
            params = expr_params(spec.expr, graph, lambda t: expr_dim(t, graph))
            if params:
                lines.append("      tensors: " + ", ".join(f"{p.name} {_shape(p.shape)}" for p in params))
    lines.append("")
    lines.append(f"output: {graph.output} (fed to the decoder)")
    from essdsl.lang.growth import show_lines

    lines.extend(show_lines(graph))  # the grow block, if the space has one
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- dot
def dot_quote(text: str) -> str:
    """A Graphviz double-quoted string: backslashes and quotes escaped, newlines as ``\\n``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n")
    return f'"{escaped}"'


def pair_node_id(mixed: str, label: str) -> str:
    """Dot id of the ``⊙`` point that forms a Hadamard pair candidate of ``mixed``."""
    return f"{mixed}/{label}"


def to_dot(graph: CellGraph) -> str:
    """The cell as a Graphviz ``digraph`` (render with ``dot -Tsvg``)."""
    q = dot_quote
    out = [
        f"digraph {q(graph.name)} {{",
        "  rankdir=LR;",
        f"  label={q(f'{graph.kind} {graph.name}')};",
        '  node [fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    for key in graph.order():
        spec = graph.spec(key)
        dim = graph.dim(key)
        if isinstance(spec, Stream):
            if spec.kind == "input":
                label = f"{key}\n{dim}"
                out.append(f"  {q(key)} [shape=box, label={q(label)}];")
            else:
                label = f"{key}\n{dim}\n(recurrent: earlier step)"
                out.append(f'  {q(key)} [shape=box, style="dashed,filled", fillcolor="#eeeeee", label={q(label)}];')
        elif isinstance(spec, MixedSpec):
            label = f"{key}\nkeep {spec.keep}, {'/'.join(spec.combine)}\n{spec.transform}, {spec.select}"
            out.append(f"  {q(key)} [shape=doublecircle, label={q(label)}];")
        else:
            label = f"{key}\n{expr_text(spec.expr)}"
            if key == f"{graph.output}[t]":
                label += "\n(output)"
            style = ', style="bold"' if isinstance(spec, UpdateSpec) else ""
            out.append(f"  {q(key)} [shape=ellipse{style}, label={q(label)}];")
    for key in graph.computed():
        spec = graph.spec(key)
        if isinstance(spec, MixedSpec):
            for edge in spec.edges:
                ops = "{" + ", ".join(edge.ops) + "}"
                if len(edge.sources) > 1:
                    point = pair_node_id(key, edge.label)
                    out.append(f"  {q(point)} [shape=circle, width=0.25, fixedsize=true, label={q('⊙')}];")
                    for source in edge.sources:
                        out.append(f"  {q(source)} -> {q(point)};")
                    tail = point
                else:
                    tail = edge.sources[0]
                out.append(f"  {q(tail)} -> {q(key)} [style=dashed, label={q(ops)}];")
        else:
            for source in graph.dag.predecessors(key):
                past = isinstance(graph.spec(source), Stream) and graph.spec(source).kind == "past"
                attrs = ' [color="#777777"]' if past else ""
                out.append(f"  {q(source)} -> {q(key)}{attrs};")
    from essdsl.lang.growth import dot_lines

    out.extend(dot_lines(graph, q))  # the next member a grow block adds, dotted
    out.append("}")
    return "\n".join(out) + "\n"


__all__ = ["describe", "to_dot", "expr_text", "dot_quote", "pair_node_id"]
