"""Semantic diff of two resolved cells: what a search space *means*, not how it is written.

:func:`diff_graphs` compares two :class:`essdsl.lang.graph.CellGraph` objects, so
everything the resolver already normalised is invisible to it: layout and
comments, the order of statements and of ``from`` clauses, a range
(``s0..s2``) versus the explicit list (``s0, s1, s2``), a ``defaults`` entry
versus the same attribute on every node, and a named op set versus the same
ops written inline.  The space's name and provenance are not compared either.

What is compared:

* ``kind`` — a ``space`` or a ``genotype``;
* ``input NAME`` / ``state NAME`` — presence, ``.window`` (``[t-2..t]``) and
  ``.size`` (the size symbol, ``ninp``/``nhid`` or a number);
* ``node KEY`` — every computed node (``s3``; a state update is the node
  ``h[t]``): its kind, and for fixed nodes and updates ``.expr``, a canonical
  string of the resolved expression (terms of ``+``, ``*`` and ``mean`` in a
  fixed order, since they commute);
* mixed nodes: ``.edge SOURCE`` (candidate edges as a set keyed by their
  source; a Hadamard pair ``a*b`` equals ``b*a``), ``.edge SOURCE.ops`` (op
  sets as sets), ``.transform``, ``.combine`` (a set), ``.select``, ``.keep``,
  ``.norm`` and ``.dim``;
* ``output`` — the state fed to the decoder;
* ``grow FAMILY`` — a grow block added or removed, its ``.start``, ``.max``,
  ``.when`` (schedule) and ``.mode`` (the cells themselves are compared at the
  start size, so a changed template shows in the members both have).

Worked example.  DARTS and I-DARTS differ only in how each node's candidate
edges compete (``select``), which the I-DARTS file says once in its
``defaults``.  Suppose we also drop ``s0`` as a candidate of ``s2`` and let
``s3`` try ``sigmoid`` only::

    darts:   node s2 = mix { from s0..s1 ops rnn_ops }
             node s3 = mix { from s0..s2 ops rnn_ops }
    mine:    node s2 = mix { from s1 ops rnn_ops }
             node s3 = mix { from s2, s0, s1 ops {sigmoid} }  select node_softmax

    >>> print(render_edits(diff_graphs(darts, mine)))
    - node s2.edge s0: {identity, relu, sigmoid, tanh, zero}
    ~ node s3.edge s0.ops: {identity, relu, sigmoid, tanh, zero} -> {sigmoid}
    ~ node s3.edge s1.ops: {identity, relu, sigmoid, tanh, zero} -> {sigmoid}
    ~ node s3.edge s2.ops: {identity, relu, sigmoid, tanh, zero} -> {sigmoid}
    ~ node s3.select: edge_softmax -> node_softmax

The reordered sources of ``s3`` produce nothing; each edit names the smallest
element that changed.  Edits are sorted: ``kind``, inputs, states, nodes (in
natural order, ``s2`` before ``s10``), ``output``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Union

from essdsl.lang import ir
from essdsl.lang.exprs import ECombine, EApply, EHighway, ELinear, ERef, RExpr
from essdsl.lang.graph import CellGraph, FixedSpec, MixedSpec, Stream, UpdateSpec, norm_text

EditValue = Union[str, int, None]


@dataclass(frozen=True)
class Edit:
    """One semantic difference: ``kind`` is "insert", "remove" or "update"."""

    kind: str
    path: str
    old: EditValue = None
    new: EditValue = None

    def render(self) -> str:
        if self.kind == "insert":
            return f"+ {self.path}: {self.new}"
        if self.kind == "remove":
            return f"- {self.path}: {self.old}"
        return f"~ {self.path}: {self.old} -> {self.new}"


# ------------------------------------------------------------------ canonical strings
def canonical_expr(expr: RExpr) -> str:
    """A string that is equal for two resolved expressions exactly when they compute the same thing
    up to the order of commutative terms (weight names are ignored)."""
    if isinstance(expr, ERef):
        return expr.key
    if isinstance(expr, EApply):
        return f"{expr.op}({canonical_expr(expr.arg)})"
    if isinstance(expr, ECombine):
        if expr.combiner == "sum":
            signs = expr.signs or (1,) * len(expr.terms)
            terms = sorted((_operand(t, "sum"), sign) for t, sign in zip(expr.terms, signs))
            # Positive terms first so that a leading minus appears only when all terms are negated.
            terms.sort(key=lambda item: item[1] < 0)
            text = ""
            for index, (term, sign) in enumerate(terms):
                if index == 0:
                    text = term if sign > 0 else f"-{term}"
                else:
                    text += f" {'+' if sign > 0 else '-'} {term}"
            return text
        if expr.combiner == "product":
            return " * ".join(sorted(_operand(t, "product") for t in expr.terms))
        return f"{expr.combiner}({', '.join(sorted(canonical_expr(t) for t in expr.terms))})"
    if isinstance(expr, ELinear):
        parts = [canonical_expr(t) for t in expr.inputs]
        if expr.dim_symbol:
            parts.append(f"dim = {expr.dim_symbol}")
        return f"{'linear' if expr.bias else 'project'}({', '.join(parts)})"
    if isinstance(expr, EHighway):
        parts = [expr.op] + [canonical_expr(t) for t in expr.inputs] + [f"carry = {canonical_expr(expr.carry)}"]
        return f"highway({', '.join(parts)})"
    raise TypeError(f"not a resolved expression: {type(expr).__name__}")


def _operand(expr: RExpr, parent: str) -> str:
    text = canonical_expr(expr)
    if isinstance(expr, ECombine) and expr.combiner in ("sum", "product") and expr.combiner != parent:
        if expr.combiner == "sum" or parent == "product":
            return f"({text})"
    return text


def _ops_text(ops) -> str:
    return "{" + ", ".join(sorted(ops)) + "}"


def _edge_key(sources) -> str:
    """Candidate source label; a Hadamard pair is unordered."""
    return "*".join(sorted(sources)) if len(sources) > 1 else sources[0]


def _mixed_view(spec: MixedSpec) -> dict:
    """The comparable content of a mixed node."""
    edges: dict[str, frozenset] = {}
    for edge in spec.edges:
        edges[_edge_key(edge.sources)] = frozenset(edge.ops)
    if spec.dim_value is not None:
        dim = str(spec.dim_value)
    else:
        dim = spec.dim_symbol
    return {
        "edges": edges,
        "transform": spec.transform,
        "combine": _ops_text(spec.combine),
        "select": spec.select,
        "keep": spec.keep,
        "norm": norm_text(spec),
        "dim": dim,
    }


_MIXED_ATTRIBUTES = ("transform", "combine", "select", "keep", "norm", "dim")


def describe_node(spec) -> str:
    """One-line summary of a computed node, used for inserted and removed nodes."""
    if isinstance(spec, (FixedSpec, UpdateSpec)):
        norm = norm_text(spec)
        return canonical_expr(spec.expr) + (f" norm {norm}" if norm != "none" else "")
    if isinstance(spec, MixedSpec):
        view = _mixed_view(spec)
        clauses = [f"from {key} ops {_ops_text(ops)}" for key, ops in sorted(view["edges"].items(), key=lambda kv: _natural_key(kv[0]))]
        attributes = [f"{name} {view[name]}" for name in _MIXED_ATTRIBUTES if view[name] is not None]
        return "mix { " + "; ".join(clauses + attributes) + " }"
    return type(spec).__name__


def _node_kind(spec) -> str:
    if isinstance(spec, MixedSpec):
        return "mixed"
    if isinstance(spec, UpdateSpec):
        return "update"
    return "fixed"


# ------------------------------------------------------------------ the diff
def _computed_specs(graph: CellGraph) -> dict[str, object]:
    specs = {}
    for key, data in graph.dag.nodes(data=True):
        spec = data.get("spec")
        if spec is not None and not isinstance(spec, Stream):
            specs[key] = spec
    return specs


def _diff_streams(role: str, old_graph: CellGraph, new_graph: CellGraph, edits: list[Edit]) -> None:
    old_windows = old_graph.inputs if role == "input" else old_graph.states
    new_windows = new_graph.inputs if role == "input" else new_graph.states
    for name in old_windows.keys() | new_windows.keys():
        path = f"{role} {name}"
        if name not in new_windows:
            edits.append(Edit("remove", path, old=f"{name}{ir.window_text('', old_windows[name])} : {old_graph.dim_symbols.get(name)}"))
        elif name not in old_windows:
            edits.append(Edit("insert", path, new=f"{name}{ir.window_text('', new_windows[name])} : {new_graph.dim_symbols.get(name)}"))
        else:
            old_window, new_window = ir.window_text('', old_windows[name]), ir.window_text('', new_windows[name])
            if old_window != new_window:
                edits.append(Edit("update", f"{path}.window", old_window, new_window))
            old_size, new_size = old_graph.dim_symbols.get(name), new_graph.dim_symbols.get(name)
            if old_size != new_size:
                edits.append(Edit("update", f"{path}.size", old_size, new_size))


def _diff_mixed(path: str, old: MixedSpec, new: MixedSpec, edits: list[Edit]) -> None:
    old_view, new_view = _mixed_view(old), _mixed_view(new)
    old_edges, new_edges = old_view["edges"], new_view["edges"]
    for source in old_edges.keys() | new_edges.keys():
        edge_path = f"{path}.edge {source}"
        if source not in new_edges:
            edits.append(Edit("remove", edge_path, old=_ops_text(old_edges[source])))
        elif source not in old_edges:
            edits.append(Edit("insert", edge_path, new=_ops_text(new_edges[source])))
        elif old_edges[source] != new_edges[source]:
            edits.append(Edit("update", f"{edge_path}.ops", _ops_text(old_edges[source]), _ops_text(new_edges[source])))
    for name in _MIXED_ATTRIBUTES:
        if old_view[name] != new_view[name]:
            attribute_path = f"{path}.{name}"
            if old_view[name] is None:
                edits.append(Edit("insert", attribute_path, new=new_view[name]))
            elif new_view[name] is None:
                edits.append(Edit("remove", attribute_path, old=old_view[name]))
            else:
                edits.append(Edit("update", attribute_path, old_view[name], new_view[name]))


def diff_graphs(a: CellGraph, b: CellGraph) -> list[Edit]:
    """Semantic differences that turn cell ``a`` into cell ``b`` (empty when they mean the same)."""
    edits: list[Edit] = []
    if a.kind != b.kind:
        edits.append(Edit("update", "kind", a.kind, b.kind))
    _diff_streams("input", a, b, edits)
    _diff_streams("state", a, b, edits)
    old_specs, new_specs = _computed_specs(a), _computed_specs(b)
    for key in old_specs.keys() | new_specs.keys():
        path = f"node {key}"
        old, new = old_specs.get(key), new_specs.get(key)
        if new is None:
            edits.append(Edit("remove", path, old=describe_node(old)))
        elif old is None:
            edits.append(Edit("insert", path, new=describe_node(new)))
        elif _node_kind(old) != _node_kind(new):
            edits.append(Edit("update", path, f"{_node_kind(old)}: {describe_node(old)}", f"{_node_kind(new)}: {describe_node(new)}"))
        elif isinstance(old, MixedSpec):
            _diff_mixed(path, old, new, edits)
        else:
            old_text, new_text = canonical_expr(old.expr), canonical_expr(new.expr)
            if old_text != new_text:
                edits.append(Edit("update", f"{path}.expr", old_text, new_text))
            if norm_text(old) != norm_text(new):
                edits.append(Edit("update", f"{path}.norm", norm_text(old), norm_text(new)))
    if a.output != b.output:
        edits.append(Edit("update", "output", a.output, b.output))
    from essdsl.lang.growth import diff_entries

    edits.extend(Edit(kind, path, old, new) for kind, path, old, new in diff_entries(a, b))  # grow blocks
    return sorted(edits, key=_edit_order)


_SECTION_RANK = {"kind": 0, "input": 1, "state": 2, "node": 3, "output": 4, "grow": 5}


def _natural_key(text: str):
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", text)]


def _edit_order(edit: Edit):
    section = edit.path.split(" ", 1)[0].split(".", 1)[0]
    return (_SECTION_RANK.get(section, 5), _natural_key(edit.path), edit.kind)


def render_edits(edits: list[Edit]) -> str:
    """One line per edit (``+`` insert, ``-`` remove, ``~`` update), sorted; empty string for no edits."""
    return "\n".join(edit.render() for edit in sorted(edits, key=_edit_order))


__all__ = ["Edit", "diff_graphs", "render_edits", "canonical_expr", "describe_node"]
