"""Size of a search space and of the models in it, computed from the cell graph (no torch).

Everything here follows ``docs/semantics.md`` and :func:`essdsl.lang.graph.parameter_layout`:

**Architectures.** A mixed node chooses ``keep`` distinct candidate edges and
one non-``zero`` op for each, and one combiner.  With ``n_e`` the number of
non-zero ops of edge ``e``, the node has ``e_keep(n_1, …, n_E) · |combine|``
choices, where ``e_k`` is the elementary symmetric polynomial of degree ``k``.
The space has the product of its nodes' counts (fixed nodes have one).

**Parameters** (weights and biases; architecture weights are counted apart):

* embedding ``vocab × ninp``;
* decoder tied to the embedding when ``ninp == d(output)``: only a ``vocab``
  bias; otherwise ``d(output) × vocab + vocab``;
* cell: the weight and bias tensors of :func:`parameter_layout` (supernet).
  A derived (discrete) model keeps every fixed tensor, the one ``W`` of a
  ``highway`` mixed node, and for a ``project`` mixed node only the ``W_e`` of
  its ``keep`` kept edges.  Which edges are kept depends on the choice, so a
  space reports the smallest and largest derived count (equal when no choice
  changes a parameter shape, e.g. DARTS); a genotype has exactly one.

**FLOPs per token** count every matrix product of one cell step plus the
decoder, as 2 × multiply-adds (``2·m·n`` for a vector times an ``m × n``
matrix).  Elementwise work (activations, gates, sums, batchnorm, softmax of
the architecture weights) and the embedding lookup are not counted.  In the
supernet every candidate edge runs its matrix: a ``highway`` mixed node costs
``2·d·2d`` per edge (the shared ``W`` applied to each edge's source), a
``project`` node ``2·d(u_e)·d`` per edge.  A derived model runs only its kept
edges; ``derived_min``/``derived_max`` bound that over all choices.  The
decoder costs ``2·d(output)·vocab``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from essdsl import ops
from essdsl.lang.layout import arch_entry_count, arch_params, expr_params, mixed_params
from essdsl.lang.dims import expr_dim
from essdsl.lang.exprs import EApply, ECombine, EHighway, ELinear, RExpr, walk
from essdsl.lang.graph import (
    CellGraph,
    LanguageModelError,
    MixedSpec,
    UpdateSpec,
    decoder_tied,
    embedding_dim,
    norm_text,
)

from essdsl.ops import ZERO  # noqa: F401 - re-exported


# what stats raises when the graph cannot be measured as a language model (e.g. no input to embed)
StatsError = LanguageModelError


# ----------------------------------------------------------------- architectures
def elementary_symmetric(values: list[int], degree: int) -> int:
    """``e_degree(values)``: the sum over all ``degree``-subsets of the product of their values."""
    if degree < 0:
        return 0
    # e[j] after processing a prefix: sum of products over j-subsets of the prefix.
    e = [1] + [0] * degree
    for v in values:
        for j in range(degree, 0, -1):
            e[j] += e[j - 1] * v
    return e[degree]


def nonzero_op_counts(spec: MixedSpec) -> list[int]:
    return [len(ops.nonzero(edge.ops)) for edge in spec.edges]


def node_architectures(spec: MixedSpec) -> int:
    """Discrete choices of one mixed node: kept edges × their ops × the combiner."""
    return elementary_symmetric(nonzero_op_counts(spec), spec.keep) * len(spec.combine)


def architecture_count(graph: CellGraph) -> int:
    """Exact number of discrete architectures in the space (1 for a genotype)."""
    return math.prod(node_architectures(spec) for spec in graph.mixed_nodes())


# Python refuses str() (so also JSON and printing) of an int of 4,300+ digits; a
# space of 1,000 wide mixed nodes has more architectures than that.
MAX_EXACT_COUNT_DIGITS = 4000


def _log10(n: int) -> Optional[float]:
    if n <= 0:
        return None
    return round(math.log10(n), 4)  # math.log10 takes ints of any size, no str() involved


def printable_count(n: int) -> Optional[int]:
    """``n``, or None when it has too many digits to print (``architectures_log10`` still says how many)."""
    return n if n < 10**MAX_EXACT_COUNT_DIGITS else None


# ----------------------------------------------------------------- parameters


def embedding_params(graph: CellGraph) -> int:
    return graph.sizes["vocab"] * embedding_dim(graph)


def decoder_params(graph: CellGraph) -> int:
    vocab = graph.sizes["vocab"]
    if decoder_tied(graph):
        return vocab
    return graph.dims[graph.output] * vocab + vocab


def _fixed_params(graph: CellGraph, spec) -> int:
    return sum(p.numel for p in expr_params(spec.expr, graph, lambda t: expr_dim(t, graph)))


def _edge_fan_in(graph: CellGraph, spec: MixedSpec, index: int) -> int:
    # A Hadamard pair has the size of each of its (equal-sized) sources.
    return graph.dim(spec.edges[index].sources[0])


def _eligible_edges(spec: MixedSpec) -> list[int]:
    """Edges a discrete choice may keep: those with at least one non-zero op."""
    return [i for i, n in enumerate(nonzero_op_counts(spec)) if n > 0]


def _kept_extremes(spec: MixedSpec, cost) -> tuple[int, int]:
    """Smallest and largest total ``cost(edge)`` over ``keep`` kept eligible edges."""
    costs = sorted(cost(i) for i in _eligible_edges(spec))
    k = min(spec.keep, len(costs))
    return sum(costs[:k]), sum(costs[len(costs) - k :])


@dataclass(frozen=True)
class NodeSize:
    params_supernet: int
    params_derived_min: int
    params_derived_max: int
    flops_supernet: int
    flops_derived_min: int
    flops_derived_max: int


def _expr_flops(e: RExpr, graph: CellGraph) -> int:
    """Multiply-adds (x2) of an expression's matrix products; elementwise work is not counted."""
    return sum(_own_flops(x, graph) for x in walk(e))


def _own_flops(e: RExpr, graph: CellGraph) -> int:
    if isinstance(e, ELinear):
        fan_out = graph.sizes[e.dim_symbol] if e.dim_symbol else graph.width
        return 2 * sum(expr_dim(t, graph) for t in e.inputs) * fan_out
    if isinstance(e, EHighway):
        return 2 * sum(expr_dim(t, graph) for t in e.inputs) * 2 * expr_dim(e.carry, graph)
    return 0


def node_size(graph: CellGraph, key: str) -> NodeSize:
    """Parameters and FLOPs of one computed node, for the supernet and derived models."""
    spec = graph.spec(key)
    if not isinstance(spec, MixedSpec):
        params = _fixed_params(graph, spec)
        flops = _expr_flops(spec.expr, graph)
        return NodeSize(params, params, params, flops, flops, flops)
    dim = graph.dim(spec.name)
    supernet_params = sum(p.numel for p in mixed_params(spec, graph))
    if spec.transform == "highway":
        # One shared W (d × 2d) whatever is kept; each edge run costs 2·d·2d.
        edge_flops = 2 * dim * 2 * dim
        kept = min(spec.keep, len(_eligible_edges(spec)))
        return NodeSize(
            supernet_params,
            supernet_params,
            supernet_params,
            edge_flops * len(spec.edges),
            edge_flops * kept,
            edge_flops * kept,
        )
    fan_in = lambda i: _edge_fan_in(graph, spec, i)  # noqa: E731
    pmin, pmax = _kept_extremes(spec, lambda i: fan_in(i) * dim)
    fmin, fmax = _kept_extremes(spec, lambda i: 2 * fan_in(i) * dim)
    supernet_flops = sum(2 * fan_in(i) * dim for i in range(len(spec.edges)))
    return NodeSize(supernet_params, pmin, pmax, supernet_flops, fmin, fmax)


# ----------------------------------------------------------------- the summary
STATS_KEYS = (
    "name",
    "kind",
    "sizes",
    "output",
    "architectures",
    "architectures_log10",
    "mixed_nodes",
    "arch_weights",
    "arch_weights_valid",
    "params",
    "flops_per_token",
    "nodes",
)
PARAMS_KEYS = ("supernet", "derived_min", "derived_max", "embedding", "decoder", "decoder_tied", "cell_supernet", "cell_derived_min", "cell_derived_max")
FLOPS_KEYS = ("supernet", "derived_min", "derived_max", "decoder")
NODE_KEYS = (
    "name",
    "kind",
    "sources",
    "edges",
    "ops",
    "keep",
    "combine",
    "select",
    "transform",
    "norm",
    "dim",
    "choices",
    "arch_weights",
    "arch_weights_valid",
    "params_supernet",
    "params_derived_min",
    "params_derived_max",
)


def _node_entry(graph: CellGraph, key: str, size: NodeSize) -> dict:
    spec = graph.spec(key)
    sources = list(graph.dag.predecessors(key))
    entry = dict.fromkeys(NODE_KEYS)
    entry.update(
        name=key,
        sources=sources,
        dim=graph.dim(key),
        params_supernet=size.params_supernet,
        params_derived_min=size.params_derived_min,
        params_derived_max=size.params_derived_max,
    )
    if isinstance(spec, MixedSpec):
        entry.update(
            kind="mixed",
            edges=[{"source": e.label, "ops": list(e.ops)} for e in spec.edges],
            ops=list(spec.op_names),
            keep=spec.keep,
            combine=list(spec.combine),
            select=spec.select,
            transform=spec.transform,
            norm=norm_text(spec),
            choices=node_architectures(spec),
            arch_weights=sum(p.numel for p in arch_params(spec)),
            arch_weights_valid=arch_entry_count(spec),
        )
    else:
        entry.update(
            kind="update" if isinstance(spec, UpdateSpec) else "fixed",
            norm=norm_text(spec),
            edges=[],
            ops=[],
            choices=1,
            arch_weights=0,
            arch_weights_valid=0,
        )
    return entry


def stats_dict(graph: CellGraph) -> dict:
    """Every number ``essdsl stats`` shows, as JSON-ready data with the keys documented in README.md.

    Raises :class:`StatsError` when the cell cannot be a language model (no input).
    """
    emb = embedding_params(graph)
    dec = decoder_params(graph)
    decoder_flops = 2 * graph.dims[graph.output] * graph.sizes["vocab"]
    node_sizes = {key: node_size(graph, key) for key in graph.computed()}
    cell_super = sum(s.params_supernet for s in node_sizes.values())
    cell_min = sum(s.params_derived_min for s in node_sizes.values())
    cell_max = sum(s.params_derived_max for s in node_sizes.values())
    mixed = graph.mixed_nodes()
    count = architecture_count(graph)
    return {
        "name": graph.name,
        "kind": graph.kind,
        "sizes": {"ninp": embedding_dim(graph), "nhid": graph.dims[graph.output], "vocab": graph.sizes["vocab"]},
        "output": graph.output,
        "architectures": printable_count(count),
        "architectures_log10": _log10(count),
        "mixed_nodes": len(mixed),
        "arch_weights": sum(p.numel for spec in mixed for p in arch_params(spec)),
        "arch_weights_valid": sum(arch_entry_count(spec) for spec in mixed),
        "params": {
            "supernet": emb + dec + cell_super,
            "derived_min": emb + dec + cell_min,
            "derived_max": emb + dec + cell_max,
            "embedding": emb,
            "decoder": dec,
            "decoder_tied": decoder_tied(graph),
            "cell_supernet": cell_super,
            "cell_derived_min": cell_min,
            "cell_derived_max": cell_max,
        },
        "flops_per_token": {
            "supernet": sum(s.flops_supernet for s in node_sizes.values()) + decoder_flops,
            "derived_min": sum(s.flops_derived_min for s in node_sizes.values()) + decoder_flops,
            "derived_max": sum(s.flops_derived_max for s in node_sizes.values()) + decoder_flops,
            "decoder": decoder_flops,
        },
        "nodes": [_node_entry(graph, key, node_sizes[key]) for key in graph.computed()],
        **_growth_entry(graph),
    }


def _growth_entry(graph: CellGraph) -> dict:
    """``{"growth": …}`` (sizes at the start and at the maximum) for a space that grows, else nothing."""
    from essdsl.lang.growth import growth_of, stats_entry

    return {"growth": stats_entry(graph)} if growth_of(graph) is not None else {}


# ----------------------------------------------------------------- memory
# Floats autograd keeps per token for one node, read off the generated code
# (DESIGN.md §5) and checked against a measurement by bench/supernet_step.py:
# a highway mixed node keeps its stacked sources (E·d), the matmul output (2·E·d),
# σ(c) (E·d), one output per saturating op (tanh/relu/sigmoid: E·d each) and the
# mixture difference (E·d); BatchNorm keeps about 3·d.
MEMORY_KEYS = ("batch_size", "bptt", "order", "activations_bytes", "parameters_bytes", "gradients_bytes",
               "optimizer_bytes", "unrolled_bytes", "total_bytes")


def _expr_saved_floats(e: RExpr, graph: CellGraph) -> int:
    """Floats a fixed expression keeps per token: each matmul's inputs and outputs, each activation's output."""
    return sum(_own_saved_floats(x, graph) for x in walk(e))


def _own_saved_floats(e: RExpr, graph: CellGraph) -> int:
    if isinstance(e, ELinear):
        fan_out = graph.sizes[e.dim_symbol] if e.dim_symbol else graph.width
        return sum(expr_dim(t, graph) for t in e.inputs) + fan_out
    if isinstance(e, EHighway):
        return sum(expr_dim(t, graph) for t in e.inputs) + 5 * expr_dim(e.carry, graph)
    if isinstance(e, EApply):
        return expr_dim(e, graph)
    if isinstance(e, ECombine) and e.combiner == "product":
        return expr_dim(e, graph) * len(e.terms)
    return 0


def node_saved_floats(graph: CellGraph, key: str, search: bool = True) -> int:
    """Floats kept for backward per token by one computed node of the supernet."""
    spec = graph.spec(key)
    if not isinstance(spec, MixedSpec):
        norm = 3 * graph.dim(key) if search and getattr(spec, "norm", "none") == "batchnorm" else 0
        return _expr_saved_floats(spec.expr, graph) + norm
    d = graph.dim(key)
    E = len(spec.edges)
    saving = sum(1 for op in spec.op_names if ops.saves_output(op))
    pairs = sum(d for e in spec.edges if len(e.sources) > 1)
    if spec.transform == "highway":
        floats = E * d * (4 + saving + (1 if spec.has_op_choice else 0)) + pairs
    else:
        fan_in = sum(_edge_fan_in(graph, spec, i) for i in range(E))
        floats = fan_in + E * d * (1 + saving + (1 if spec.has_op_choice else 0)) + pairs
    if "product" in spec.combine:
        floats += 2 * E * d
    if search and spec.norm == "batchnorm":
        floats += 3 * d
    return floats


def memory_estimate(graph: CellGraph, batch_size: int, bptt: int, order: str = "first") -> dict:
    """Peak memory of one search step (fp32), estimated from the IR without torch.

    activations: floats kept for backward per token (embedding, every node, the
    decoder's input and the logits with their log-softmax) × batch × bptt × 4 bytes;
    parameters and their gradients; Adam's two moments for the architecture
    weights (SGD on weights keeps no state); second order adds the unrolled
    weights, a backup and the finite-difference gradient (3 × weights).
    """
    sizes = stats_dict(graph)
    weights = sizes["params"]["supernet"]
    arch = sizes["arch_weights"]
    per_token = embedding_dim(graph) * 2 + graph.dims[graph.output] * 2 + 2 * graph.sizes["vocab"]
    per_token += sum(node_saved_floats(graph, key) for key in graph.computed())
    activations = 4 * per_token * batch_size * bptt
    parameters = 4 * (weights + arch)
    gradients = parameters
    optimizer = 4 * 2 * arch
    unrolled = 4 * 3 * weights if order == "second" else 0
    return {
        "batch_size": batch_size,
        "bptt": bptt,
        "order": order,
        "activations_bytes": activations,
        "parameters_bytes": parameters,
        "gradients_bytes": gradients,
        "optimizer_bytes": optimizer,
        "unrolled_bytes": unrolled,
        "total_bytes": activations + parameters + gradients + optimizer + unrolled,
    }


__all__ = [
    "memory_estimate",
    "node_saved_floats",
    "MEMORY_KEYS",
    "StatsError",
    "STATS_KEYS",
    "PARAMS_KEYS",
    "FLOPS_KEYS",
    "NODE_KEYS",
    "elementary_symmetric",
    "node_architectures",
    "architecture_count",
    "embedding_params",
    "decoder_params",
    "node_size",
    "stats_dict",
]
