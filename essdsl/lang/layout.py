"""The parameter layout of a compiled cell: which weight and architecture tensors it has,
with their names and shapes.  :func:`parameter_layout` is the single definition the
generated module, the reference interpreter, the manifest, ``stats`` and ``show`` read.
It lives with the language, not the compiler, because ``stats`` and ``show`` count
these tensors without importing the compiler (or torch)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

from essdsl.lang.dims import expr_dim
from essdsl.lang.exprs import EHighway, ELinear, RExpr, walk
from essdsl.lang.graph import CellGraph, MixedSpec


# ----------------------------------------------------------------- parameters
@dataclass(frozen=True)
class ParamSpec:
    """One tensor of a compiled model.  ``role``: "weight", "bias" or "arch"."""

    name: str
    shape: tuple[int, ...]
    role: str
    node: str = ""

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


def bias_name(weight_name: str) -> str:
    """``n_w0`` -> ``n_b0``: the bias that goes with a linear's weight."""
    stem, _, index = weight_name.rpartition("_w")
    return f"{stem}_b{index}"


def expr_params(e: RExpr, graph: CellGraph, dim_of) -> list[ParamSpec]:
    """Weight tensors of a fixed expression (``dim_of`` gives the size of an expression)."""
    out: list[ParamSpec] = []
    for x in walk(e):
        if isinstance(x, ELinear):
            fan_in = sum(dim_of(t) for t in x.inputs)
            fan_out = graph.sizes[x.dim_symbol] if x.dim_symbol else graph.width
            out.append(ParamSpec(x.param, (fan_in, fan_out), "weight"))
            if x.bias:
                out.append(ParamSpec(bias_name(x.param), (fan_out,), "bias"))
        elif isinstance(x, EHighway):
            fan_in = sum(dim_of(t) for t in x.inputs)
            out.append(ParamSpec(x.param, (fan_in, 2 * dim_of(x.carry)), "weight"))
    return out


def mixed_params(spec: MixedSpec, graph: CellGraph, kept: Optional[Iterable[int]] = None) -> list[ParamSpec]:
    """Weights of a mixed node (all candidate edges, or only ``kept`` ones) — no arch weights."""
    dim = graph.dim(spec.name)
    edges = range(len(spec.edges)) if kept is None else list(kept)
    if spec.transform == "highway":
        return [ParamSpec(f"{spec.name}_w", (dim, 2 * dim), "weight", spec.name)]
    return [
        ParamSpec(f"{spec.name}_w{i}", (graph.dim(spec.edges[i].sources[0]), dim), "weight", spec.name) for i in edges
    ]


def arch_params(spec: MixedSpec) -> list[ParamSpec]:
    out = []
    if spec.has_op_choice:
        out.append(ParamSpec(f"{spec.name}_ops", (len(spec.edges), len(spec.op_names)), "arch", spec.name))
    if spec.has_combine_choice:
        out.append(ParamSpec(f"{spec.name}_combine", (len(spec.combine),), "arch", spec.name))
    return out


def arch_entry_count(spec: MixedSpec) -> int:
    """Architecture weights that stand for a real choice (masked (edge, op) slots excluded)."""
    n = sum(len(e.ops) for e in spec.edges) if spec.has_op_choice else 0
    return n + (len(spec.combine) if spec.has_combine_choice else 0)


def parameter_layout(graph: CellGraph) -> list[ParamSpec]:
    """Every cell tensor of the compiled model, in a stable order (weights, then arch)."""
    weights: list[ParamSpec] = []
    arch: list[ParamSpec] = []
    for key in graph.computed():
        spec = graph.spec(key)
        if isinstance(spec, MixedSpec):
            weights.extend(mixed_params(spec, graph))
            arch.extend(arch_params(spec))
        else:
            weights.extend(p.__class__(p.name, p.shape, p.role, key) for p in expr_params(spec.expr, graph, lambda t: expr_dim(t, graph)))
    return weights + arch
