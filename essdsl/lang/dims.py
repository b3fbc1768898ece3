"""Dimension inference: the size of every computed node and of every expression."""

from __future__ import annotations

from typing import Optional

from essdsl.errors import Diagnostic, error
from essdsl.lang.exprs import EApply, ECombine, EHighway, ELinear, ERef, RExpr
from essdsl.lang.graph import CellGraph, MixedSpec, Stream, UpdateSpec


def infer_dims(graph: CellGraph) -> list[Diagnostic]:
    """Give every computed node its size, reporting size conflicts at the node."""
    diags: list[Diagnostic] = []
    dag = graph.dag

    def conflict(key: str, message: str):
        span = dag.nodes[key].get("span")
        diags.append(error(f"size conflict in '{key}': {message}", span, "dim-conflict"))

    def describe(e: RExpr) -> str:
        if isinstance(e, ERef):
            return e.key
        if isinstance(e, EApply):
            return f"{e.op}({describe(e.arg)})"
        if isinstance(e, ELinear):
            return "linear(...)" if e.bias else "project(...)"
        if isinstance(e, EHighway):
            return f"highway({e.op}, ...)"
        return f"{e.combiner}(...)"

    def dim_of(key: str, e: RExpr) -> Optional[int]:
        if isinstance(e, ERef):
            return dag.nodes[e.key]["dim"] if e.key in dag else None
        if isinstance(e, EApply):
            return dim_of(key, e.arg)
        if isinstance(e, ECombine):
            dims = [dim_of(key, t) for t in e.terms]
            if any(d is None for d in dims):
                return None
            if len(set(dims)) > 1:
                what = {"sum": "added", "product": "multiplied elementwise", "mean": "averaged"}[e.combiner]
                parts = ", ".join(f"{describe(t)} has {d}" for t, d in zip(e.terms, dims))
                conflict(key, f"terms {what} must have one size, but {parts}")
                return None
            return dims[0]
        if isinstance(e, ELinear):
            for t in e.inputs:
                dim_of(key, t)
            # No state means no width (reported as no-state): the size is unknown.
            return graph.sizes[e.dim_symbol] if e.dim_symbol else graph.dims.get(graph.output)
        if isinstance(e, EHighway):
            for t in e.inputs:
                dim_of(key, t)
            return dim_of(key, e.carry)
        raise AssertionError(e)  # pragma: no cover

    for key in graph.order():
        spec = dag.nodes[key]["spec"]
        if isinstance(spec, Stream):
            continue
        if isinstance(spec, MixedSpec):
            dims = {}
            for edge in spec.edges:
                # A source whose own definition failed (already reported) has no node: size unknown.
                ds = [dag.nodes[s]["dim"] if s in dag else None for s in edge.sources]
                if None in ds:
                    continue
                if len(set(ds)) > 1:
                    parts = ", ".join(f"{s} has {d}" for s, d in zip(edge.sources, ds))
                    conflict(key, f"a Hadamard pair needs equal sizes, but {parts}")
                    continue
                dims[edge.label] = ds[0]
            declared = spec.dim_value or (graph.sizes[spec.dim_symbol] if spec.dim_symbol else None)
            distinct = set(dims.values())
            if spec.transform == "highway":
                if len(distinct) > 1:
                    parts = ", ".join(f"{k} has {d}" for k, d in dims.items())
                    conflict(key, f"a highway node shares one matrix, so its sources need one size, but {parts}")
                    dim = None
                else:
                    dim = next(iter(distinct), None)
                    if declared is not None and dim is not None and declared != dim:
                        conflict(key, f"dim is {declared} but a highway node keeps its sources' size {dim}")
            else:
                if declared is not None:
                    dim = declared
                elif len(distinct) == 1:
                    dim = next(iter(distinct))
                elif not distinct:
                    dim = None
                else:
                    parts = ", ".join(f"{k} has {d}" for k, d in dims.items())
                    conflict(key, f"sources have different sizes ({parts}); give the node a size with 'dim'")
                    dim = None
            dag.nodes[key]["dim"] = dim
        else:
            dim = dim_of(key, spec.expr)
            if isinstance(spec, UpdateSpec) and dim is not None and dim != graph.dims[spec.name]:
                conflict(key, f"state '{spec.name}' has size {graph.dims[spec.name]} but its update has size {dim}")
            dag.nodes[key]["dim"] = dim
    return diags


def expr_dim(e: RExpr, graph: "CellGraph") -> int:
    """Size of an expression's value (assumes the checker found no dimension conflict)."""
    if isinstance(e, ERef):
        return graph.dim(e.key)
    if isinstance(e, EApply):
        return expr_dim(e.arg, graph)
    if isinstance(e, ECombine):
        return expr_dim(e.terms[0], graph)
    if isinstance(e, ELinear):
        return graph.sizes[e.dim_symbol] if e.dim_symbol else graph.width
    if isinstance(e, EHighway):
        return expr_dim(e.carry, graph)
    raise AssertionError(e)  # pragma: no cover
