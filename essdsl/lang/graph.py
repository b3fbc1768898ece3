"""IR -> the cell's DAG for one time step, with every name, range and default resolved.

Graph node ids are the states a time step sees:

* ``x[t]``, ``x[t-1]`` … — inputs at the offsets their window allows;
* ``h[t-1]``, ``h[t-2]`` … — past values of recurrent states (graph sources:
  edges from them are *recurrent*, they never close a cycle);
* ``s3`` … — cell nodes; ``h[t]`` — the new value of state ``h``.

Each graph node carries a ``spec`` (:class:`Stream`, :class:`FixedSpec`,
:class:`MixedSpec` or :class:`UpdateSpec`).  Mixed nodes hold their
:class:`CandidateEdge` list — the unit of choice for search and derivation.
``check``, ``stats``, ``show``, ``diff`` and the compiler all read this one
structure; :func:`parameter_layout` is the single definition of which weight
tensors a compiled model has.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

import networkx as nx

from essdsl.lang import ir
from essdsl.errors import Diagnostic, EssdslError, error
from essdsl.lang.exprs import (  # noqa: F401 - the expression types and key helpers, re-exported
    EApply,
    ECombine,
    EHighway,
    ELinear,
    ERef,
    RExpr,
    expr_operand_count,
    expr_refs,
    param_safe,
    stream_key,
)

DEFAULT_SIZES = {"ninp": 300, "nhid": 300, "vocab": 10000}



@dataclass(frozen=True)
class CandidateEdge:
    """One alternative input of a mixed node: a source (or a Hadamard pair of
    sources) and the ops it may pass through."""

    sources: tuple[str, ...]
    ops: tuple[str, ...]
    line: int = field(default=0, compare=False)
    column: int = field(default=0, compare=False)

    @property
    def label(self) -> str:
        return "*".join(self.sources)


@dataclass(frozen=True)
class Stream:
    kind: str  # "input" | "past"
    name: str
    offset: int


@dataclass(frozen=True)
class FixedSpec:
    name: str
    expr: RExpr
    norm: str = "none"  # ``node s0 = … norm batchnorm``: normalised during search
    norm_shared: bool = False


@dataclass(frozen=True)
class UpdateSpec:
    name: str  # state name
    expr: RExpr


@dataclass(frozen=True)
class MixedSpec:
    name: str
    edges: tuple[CandidateEdge, ...]
    transform: str
    combine: tuple[str, ...]
    select: str
    keep: int
    norm: str
    dim_symbol: Optional[str] = None
    dim_value: Optional[int] = None
    norm_shared: bool = False  # ``norm batchnorm shared``: the cell's one shared normalisation

    @property
    def op_names(self) -> tuple[str, ...]:
        """Union of the edges' ops in first-appearance order: the columns of the arch tensor."""
        seen: dict[str, None] = {}
        for e in self.edges:
            for op in e.ops:
                seen.setdefault(op, None)
        return tuple(seen)

    @property
    def has_op_choice(self) -> bool:
        return len(self.edges) > self.keep or any(len(e.ops) > 1 for e in self.edges)

    @property
    def has_combine_choice(self) -> bool:
        return len(self.combine) > 1


@dataclass
class CellGraph:
    """The resolved cell: a NetworkX DAG plus what surrounds it."""

    name: str
    kind: str  # "space" | "genotype"
    dag: nx.DiGraph
    inputs: dict[str, ir.Window]  # name -> window (offsets <= 0)
    states: dict[str, ir.Window]
    dims: dict[str, int]  # stream/state name -> size
    dim_symbols: dict[str, str]  # stream/state name -> symbol used (or the number as text)
    output: str  # the state fed to the decoder
    sizes: dict[str, int]
    space: ir.Space

    # convenient views ---------------------------------------------------
    def spec(self, key: str):
        return self.dag.nodes[key]["spec"]

    def order(self) -> list[str]:
        """Topological order of the graph (lexicographic among ties, so stable)."""
        return list(nx.lexicographical_topological_sort(self.dag, key=_natural_key))

    def mixed_nodes(self) -> list[MixedSpec]:
        return [self.spec(k) for k in self.order() if isinstance(self.spec(k), MixedSpec)]

    def computed(self) -> list[str]:
        """Keys of nodes computed in a step (fixed, mixed, updates), in topological order."""
        return [k for k in self.order() if not isinstance(self.spec(k), Stream)]

    def dim(self, key: str) -> int:
        return self.dag.nodes[key]["dim"]

    @property
    def width(self) -> int:
        """Size of the output state (default output size of ``linear``/``project``)."""
        return self.dims[self.output]


def _natural_key(key: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", key)]


# ----------------------------------------------------------------- building
class LanguageModelError(EssdslError, ValueError):
    """The cell cannot be wrapped as a language model (e.g. it has no input to embed)."""


def embedding_dim(graph: CellGraph) -> int:
    """Size of the embedded token: every input stream is the embedded token."""
    if not graph.inputs:
        raise LanguageModelError("the cell declares no input stream, so there is nothing to embed")
    dims = {graph.dims[name] for name in graph.inputs}
    if len(dims) > 1:
        raise LanguageModelError(f"all input streams are the embedded token and need one size, got {sorted(dims)}")
    return dims.pop()


def decoder_tied(graph: CellGraph) -> bool:
    """The decoder reuses the embedding when the output state has the embedding's size."""
    return graph.dims[graph.output] == embedding_dim(graph)


def norm_text(spec) -> str:
    """A node's normalisation as the language writes it: ``none``, ``batchnorm`` or ``batchnorm shared``."""
    norm = getattr(spec, "norm", "none")
    return f"{norm} shared" if norm != "none" and getattr(spec, "norm_shared", False) else norm


def shared_norm_nodes(graph: CellGraph) -> list[str]:
    """Computed nodes that use the cell's one shared normalisation, in topological order."""
    return [k for k in graph.computed() if norm_text(graph.spec(k)).endswith(" shared")]


def shared_norm_diagnostics(graph: CellGraph) -> list[Diagnostic]:
    """One shared normalisation has one size: every node sharing it must have that size."""
    keys = [k for k in shared_norm_nodes(graph) if graph.dim(k) is not None]
    if not keys:
        return []
    first, size = keys[0], graph.dim(keys[0])
    return [
        error(
            f"'{k}' has size {graph.dim(k)} but shares one normalisation with '{first}' of size {size}; "
            "shared nodes need one size (or give this node its own 'norm batchnorm')",
            graph.dag.nodes[k].get("span"),
            "bad-norm",
        )
        for k in keys[1:]
        if graph.dim(k) != size
    ]


# Names that moved out of this module when it was split (the resolver, dimension
# inference, the parameter layout); still importable from here.  Lazy, because those
# modules import this one.
_MOVED = {
    "build_graph": "essdsl.lang.resolve",
    "MAX_RANGE": "essdsl.lang.resolve",
    "MAX_WINDOW": "essdsl.lang.resolve",
    "BUILTIN_DEFAULTS": "essdsl.lang.resolve",
    "cell_edges_message": "essdsl.lang.resolve",
    "infer_dims": "essdsl.lang.dims",
    "expr_dim": "essdsl.lang.dims",
    "ParamSpec": "essdsl.lang.layout",
    "bias_name": "essdsl.lang.layout",
    "expr_params": "essdsl.lang.layout",
    "mixed_params": "essdsl.lang.layout",
    "arch_params": "essdsl.lang.layout",
    "arch_entry_count": "essdsl.lang.layout",
    "parameter_layout": "essdsl.lang.layout",
}


def __getattr__(name: str):
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
