"""Static checks on a resolved cell graph: every problem found in one run.

``check_space`` runs parse -> graph -> checks and returns a :class:`Report`;
``load_graph`` does the same and raises :class:`CheckError` on any error, which
is what every later stage (stats, compile, search) calls first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import networkx as nx

from essdsl import ops
from essdsl.lang import ir
from essdsl.errors import CheckError, Diagnostic, ParseError, Report, error, has_errors, warning
from essdsl.lang.exprs import ECombine, RExpr, walk
from essdsl.lang.graph import CellGraph, MixedSpec, Stream, UpdateSpec
from essdsl.lang.resolve import build_graph



def check_graph(graph: CellGraph, unsettled: Optional["Unsettled"] = None) -> list[Diagnostic]:
    """Checks on the resolved graph.  ``unsettled`` (from :func:`unsettled_by`) names what
    earlier errors left incomplete; checks that would only report their consequences skip it."""
    diags: list[Diagnostic] = []
    dag = graph.dag
    unsettled = unsettled or Unsettled()

    def span_of(key):
        return dag.nodes[key].get("span") if key in dag else None

    # Cycles within one time step (edges from [t-k] states cannot form one).
    if not nx.is_directed_acyclic_graph(dag):
        return _cycles(dag, span_of)

    # Nodes that cannot reach any state update (their value would be lost).  A
    # statement the resolver could not build may be the missing reader.
    if not unsettled.any_statement:
        updates = [k for k in dag if isinstance(dag.nodes[k]["spec"], UpdateSpec)]
        reach_output: set = set(updates)
        for u in updates:
            reach_output |= nx.ancestors(dag, u)
        for key in graph.computed():
            if key not in reach_output:
                diags.append(
                    error(f"node '{key}' does not reach any state update, so its value is never used", span_of(key), "unreachable")
                )

    for key in graph.computed():
        spec = dag.nodes[key]["spec"]
        if isinstance(spec, MixedSpec):
            if key not in unsettled.mixed:
                diags.extend(_check_mixed(graph, spec, span_of(key)))
        else:
            _check_expr(spec.expr, key, span_of(key), diags)

    if graph.kind == "genotype":
        for spec in graph.mixed_nodes():
            if spec.has_op_choice or spec.has_combine_choice:
                what = []
                if len(spec.edges) > spec.keep:
                    what.append(f"{len(spec.edges)} candidate sources for keep {spec.keep}")
                multi = [e.label for e in spec.edges if len(e.ops) > 1]
                if multi:
                    what.append(f"several ops on {', '.join(multi)}")
                if spec.has_combine_choice:
                    what.append(f"combiners {{{', '.join(spec.combine)}}}")
                diags.append(
                    error(
                        f"a genotype has no choices, but '{spec.name}' still has {'; '.join(what)}",
                        span_of(spec.name),
                        "genotype-choice",
                    )
                )
    return diags


def _cycles(dag: nx.DiGraph, span_of) -> list[Diagnostic]:
    """One error per set of nodes that depend on each other (a strongly connected
    component), at the node written first, showing the shortest loop through it."""

    def written(key):
        span = span_of(key)
        return ((span.line, span.column) if span else (10**9, 0), key)

    loops = [c for c in nx.strongly_connected_components(dag) if len(c) > 1 or any(dag.has_edge(k, k) for k in c)]
    diags = []
    for component in sorted(loops, key=lambda c: written(min(c, key=written)))[:10]:
        # the node written first always reads one written after it: the loop closes there
        first = min(component, key=written)
        inner = dag.subgraph(component)
        paths = [nx.shortest_path(inner, first, p) for p in sorted(inner.predecessors(first), key=written)]
        ring = min(paths, key=len) + [first]
        others = sorted(component - set(ring), key=written)
        also = f"; {', '.join(others)} {'is' if len(others) == 1 else 'are'} in the same loop" if others else ""
        diags.append(
            error(
                f"cycle within one time step: {' -> '.join(ring)}{also} "
                "(a node may read earlier time steps only through a state's [t-k] value)",
                span_of(first),
                "cycle",
            )
        )
    return diags


@dataclass(frozen=True)
class Unsettled:
    """What the resolver's errors left incomplete: ``mixed`` nodes with an error in their
    statement (or in a default they rely on); ``any_statement``: some node or update has one."""

    mixed: frozenset = frozenset()
    any_statement: bool = False


def unsettled_by(space: ir.Space, diags: list[Diagnostic]) -> Unsettled:
    """The nodes whose structural checks would only repeat ``diags``' errors: an undefined
    op set leaves its edges with no ops, ``keep 0`` falls back to keep 1 (then the product
    rule fails), an undefined source makes ``keep`` look too large."""
    # a size conflict leaves the structure whole: the checks below stay meaningful
    errors = [(d.line, d.column) for d in diags if d.severity == "error" and d.line and d.code != "dim-conflict"]

    def has_error(element) -> bool:
        span = element.span
        return bool(span.line) and any(
            (span.line, span.column) <= at <= (span.end_line or span.line, span.end_column or 10**9) for at in errors
        )

    failed_defaults = {a.name for a in space.defaults if has_error(a)}
    statements = space.cell.statements if space.cell is not None else []
    mixed = set()
    for st in statements:
        if isinstance(st, ir.MixedNode):
            own = {a.name for a in st.attributes}
            if has_error(st) or failed_defaults - own:
                mixed.add(st.name)
    any_statement = any(isinstance(st, (ir.FixedNode, ir.MixedNode, ir.StateUpdate)) and has_error(st) for st in statements)
    return Unsettled(frozenset(mixed), any_statement)


def _check_mixed(graph: CellGraph, spec: MixedSpec, span) -> list[Diagnostic]:
    diags: list[Diagnostic] = []
    if not spec.edges:
        diags.append(error(f"mixed node '{spec.name}' has no candidate sources", span, "empty-candidates"))
        return diags
    for edge in spec.edges:
        if not edge.ops:
            diags.append(error(f"candidate '{edge.label}' of '{spec.name}' has no ops", span, "empty-candidates"))
        elif all(ops.is_zero(op) for op in edge.ops):
            diags.append(
                error(f"candidate '{edge.label}' of '{spec.name}' can only be 'zero', so it can never be kept", span, "empty-candidates")
            )
    if spec.keep > len(spec.edges):
        diags.append(
            error(
                f"'{spec.name}' keeps {spec.keep} inputs but has only {len(spec.edges)} candidate source"
                f"{'s' if len(spec.edges) != 1 else ''}",
                span,
                "keep-too-large",
            )
        )
    if "product" in spec.combine and spec.keep < 2:
        diags.append(
            error(
                f"'{spec.name}' can combine by Hadamard product but keeps {spec.keep} input; a product needs at least two (keep 2)",
                span,
                "product-operands",
            )
        )
    if spec.transform == "project" and any(len(e.sources) > 1 for e in spec.edges):
        pass  # a pair's product is projected like a single source
    if spec.has_op_choice:
        all_ops = set(spec.op_names)
        parameter_free = {op for op in all_ops if ops.is_parameter_free(op)}
        if not any(ops.is_zero(op) for op in all_ops) and parameter_free and len(all_ops) > 1:
            diags.append(
                warning(
                    f"'{spec.name}' offers parameter-free op(s) {', '.join(sorted(parameter_free))} "
                    "with no 'zero' op to compete; DARTS tends to collapse onto such ops",
                    span,
                    "collapse-risk",
                )
            )
        if spec.select == "edge_softmax" and all(len(e.ops) == 1 for e in spec.edges) and len(spec.edges) > 1:
            diags.append(
                warning(
                    f"'{spec.name}' uses edge_softmax but every edge has one op, so all edges weigh the same; "
                    "use 'select node_softmax' to let edges compete",
                    span,
                    "flat-softmax",
                )
            )
    if spec.norm == "batchnorm" and graph.kind == "genotype":
        pass  # norm is a search-time setting; harmless in a genotype
    return diags


def _check_expr(e: RExpr, key: str, span, diags: list[Diagnostic]) -> None:
    for x in walk(e):
        if isinstance(x, ECombine) and x.combiner == "product" and len(x.terms) < 2:
            diags.append(error(f"a Hadamard product in '{key}' needs at least two operands", span, "product-operands"))


def check_space(space: ir.Space, sizes: Optional[dict] = None) -> tuple[Optional[CellGraph], list[Diagnostic]]:
    from essdsl.lang.growth import check_grown, has_growth

    if has_growth(space):  # checked expanded at its start size (and its maximum): essdsl/lang/growth.py
        return check_grown(space, sizes, _check_plain)
    return _check_plain(space, sizes)


def _check_plain(space: ir.Space, sizes: Optional[dict] = None) -> tuple[Optional[CellGraph], list[Diagnostic]]:
    graph, diags = build_graph(space, sizes)
    if graph is not None:
        diags = diags + check_graph(graph, unsettled_by(space, diags))
    return graph, diags


def check_text(text: Union[str, bytes], path: str = "<space>", sizes: Optional[dict] = None) -> tuple[Optional[CellGraph], Report]:
    from essdsl.lang.parse import parse_space, strip_bom

    source = strip_bom(text) if isinstance(text, str) else None
    try:
        space = parse_space(text, path)
    except ParseError as exc:
        return None, Report(path, exc.source if exc.source is not None else source, list(exc.diagnostics))
    if source is None:
        source = strip_bom(text.decode("utf-8"))
    graph, diags = check_space(space, sizes)
    return graph, Report(path, source, diags)


def check_file(path: Union[str, Path], sizes: Optional[dict] = None) -> tuple[Optional[CellGraph], Report]:
    from essdsl.lang.parse import read_space_bytes

    try:
        data = read_space_bytes(path)
    except ParseError as exc:
        return None, Report(str(path), None, list(exc.diagnostics))
    return check_text(data, str(path), sizes)


def load_graph(path: Union[str, Path], sizes: Optional[dict] = None) -> CellGraph:
    """Parse and check a file; return its graph or raise CheckError with every diagnostic."""
    graph, report = check_file(path, sizes)
    if not report.ok or graph is None:
        raise CheckError(report.diagnostics, report.path, report.source)
    return graph


def load_graph_space(space: ir.Space, sizes: Optional[dict] = None) -> CellGraph:
    """Check a space already parsed (e.g. a grown one); return its graph or raise CheckError."""
    graph, diags = check_space(space, sizes)
    if has_errors(diags) or graph is None:
        raise CheckError(diags, "<space>", None)
    return graph


def load_graph_text(text: str, path: str = "<space>", sizes: Optional[dict] = None) -> CellGraph:
    graph, report = check_text(text, path, sizes)
    if not report.ok or graph is None:
        raise CheckError(report.diagnostics, report.path, report.source)
    return graph


__all__ = ["check_graph", "check_space", "check_text", "check_file", "load_graph", "load_graph_text", "has_errors", "Stream"]
