"""Discretization: architecture weights -> a genotype ``.space`` file.

Rule (docs/semantics.md, "Discretization"): for each mixed node, per candidate
edge its strength is the largest θ over its non-zero ops (θ from the node's
softmax as ``select`` says, masked slots excluded) and its op that argmax;
keep the ``keep`` strongest edges (ties: the earlier edge); the combiner is the
argmax of φ.  For ``node_softmax`` this is exactly the top-k of the node
softmax over distinct sources.  A choice can leave a node that only a dropped
candidate read with no reader: such nodes (and, transitively, the nodes only
they read) are pruned from the genotype (:func:`prune_unread_nodes`), so every
space that passes ``check`` derives a genotype that passes it too.

Everything space-specific comes from the compiled model's manifest (edge
labels, op names, masks, select, keep) and the space's IR; the genotype is the
source IR with each mixed node's ``from`` clauses replaced by one clause per
kept edge, printed by :func:`essdsl.lang.fmt.format_space`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

from pydantic import BaseModel

from essdsl.lang import ir
from essdsl.errors import CheckError, Diagnostic, EssdslError
from essdsl.ops import ZERO, is_zero  # noqa: F401 - ZERO re-exported (health, sample)


class DeriveError(EssdslError):
    """The architecture weights cannot be turned into a genotype."""


class GenotypeCheckError(DeriveError, CheckError):
    """The derived genotype's text does not pass the checker.  Carries the checker's
    ``diagnostics`` and the text as ``source`` (``render()`` shows them at their lines);
    ``str()`` stays one line naming the errors."""

    def __init__(self, diagnostics: list[Diagnostic], source: str):
        CheckError.__init__(self, diagnostics, "<genotype>", source)

    def __str__(self) -> str:
        problems = "; ".join(d.message for d in self.diagnostics if d.severity == "error")
        return f"the derived genotype does not check: {problems}"


@dataclass(frozen=True)
class KeptEdge:
    index: int  # position among the node's candidate edges
    label: str  # e.g. "s1", "h[t-1]", "h[t-1]*x[t]"
    op: str
    weight: float  # θ of the kept (edge, op)


@dataclass(frozen=True)
class NodeChoice:
    node: str
    edges: Optional[tuple[KeptEdge, ...]]  # None: the node had no op/edge choice
    combine: Optional[str] = None  # None: the node had no combiner choice
    combine_weight: Optional[float] = None


# ----------------------------------------------------------------- probabilities
def _to_lists(value):
    if hasattr(value, "detach"):
        return value.detach().cpu().double().tolist()
    return value


def op_probabilities(entry: dict, logits) -> list[list[float]]:
    """θ of an ops tensor as nested lists (masked slots are 0), per the entry's ``select``."""
    rows = _to_lists(logits)
    mask = entry.get("mask") or [[True] * len(r) for r in rows]
    if len(rows) != len(mask) or any(len(r) != len(m) for r, m in zip(rows, mask)):
        raise DeriveError(f"{entry.get('node', '?')}: arch tensor shape does not match the manifest's mask")
    values = [v for r, m in zip(rows, mask) for v, ok in zip(r, m) if ok]
    if not all(math.isfinite(v) for v in values):
        raise DeriveError(f"architecture weights of '{entry.get('node', '?')}' are not finite (NaN or inf)")

    def softmax(xs):
        top = max(xs)
        ex = [math.exp(x - top) for x in xs]
        total = sum(ex)
        return [e / total for e in ex]

    if entry.get("select", "edge_softmax") == "node_softmax":
        flat = softmax(values)
        it = iter(flat)
        return [[next(it) if ok else 0.0 for ok in m] for m in mask]
    out = []
    for r, m in zip(rows, mask):
        p = iter(softmax([v for v, ok in zip(r, m) if ok]))
        out.append([next(p) if ok else 0.0 for ok in m])
    return out


def combine_probabilities(logits) -> list[float]:
    xs = _to_lists(logits)
    if not all(math.isfinite(v) for v in xs):
        raise DeriveError("combiner weights are not finite (NaN or inf)")
    top = max(xs)
    ex = [math.exp(x - top) for x in xs]
    return [e / sum(ex) for e in ex]


def entropy(probs) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0)


# ----------------------------------------------------------------- choices
def derive_node(entry: dict, logits) -> tuple[KeptEdge, ...]:
    """Kept edges of one mixed node from its ops tensor (see module docstring)."""
    theta = op_probabilities(entry, logits)
    ops, labels, keep = entry["ops"], entry["edges"], int(entry.get("keep", 1))
    mask = entry.get("mask") or [[True] * len(ops) for _ in labels]
    candidates = []
    for e, (row, m) in enumerate(zip(theta, mask)):
        best_k, best = None, -1.0
        for k, (p, ok) in enumerate(zip(row, m)):
            if ok and not is_zero(ops[k]) and p > best:
                best_k, best = k, p
        if best_k is not None:
            candidates.append((best, e, best_k))
    if len(candidates) < keep:
        raise DeriveError(f"'{entry.get('node', '?')}' keeps {keep} edges but only {len(candidates)} have a non-zero op")
    # strongest first; ties -> earlier edge (sorted is stable on the edge index)
    chosen = sorted(candidates, key=lambda c: (-c[0], c[1]))[:keep]
    chosen.sort(key=lambda c: c[1])  # written in the space's order
    return tuple(KeptEdge(e, labels[e], ops[k], p) for p, e, k in chosen)


def derive_choices(manifest: dict, arch: dict) -> dict[str, NodeChoice]:
    """Node name -> :class:`NodeChoice` from the manifest and ``arch`` (name -> tensor or nested list)."""
    entries = manifest.get("arch", {})
    missing = [name for name in entries if name not in arch]
    if missing:
        raise DeriveError(f"architecture weights missing for {', '.join(missing)}")
    nodes: dict[str, dict] = {}
    for name, entry in entries.items():
        slot = nodes.setdefault(entry["node"], {})
        if entry["kind"] == "ops":
            slot["edges"] = derive_node(entry, arch[name])
        elif entry["kind"] == "combine":
            phi = combine_probabilities(arch[name])
            best = max(range(len(phi)), key=lambda i: (phi[i], -i))
            slot["combine"] = entry["choices"][best]
            slot["combine_weight"] = phi[best]
        else:
            raise DeriveError(f"unknown architecture entry kind '{entry['kind']}' for {name}")
    return {node: NodeChoice(node, s.get("edges"), s.get("combine"), s.get("combine_weight")) for node, s in nodes.items()}


def arch_summary(manifest: dict, arch: dict) -> dict:
    """Per-epoch record of the architecture: derived choices, mean entropy, θ/φ per tensor."""
    entries = manifest.get("arch", {})
    probs, entropies = {}, []
    for name, entry in entries.items():
        if entry["kind"] == "ops":
            theta = op_probabilities(entry, arch[name])
            probs[name] = [[round(p, 6) for p in row] for row in theta]
            if entry.get("select") == "node_softmax":
                entropies.append(entropy([p for row in theta for p in row]))
            else:
                entropies.extend(entropy(row) for row in theta)
        else:
            phi = combine_probabilities(arch[name])
            probs[name] = [round(p, 6) for p in phi]
            entropies.append(entropy(phi))
    return {
        "genotype": compact_genotype(derive_choices(manifest, arch)),
        "arch_entropy": sum(entropies) / max(len(entropies), 1),
        "arch": probs,
    }


def compact_genotype(choices: dict[str, NodeChoice]) -> dict:
    """``{"s1": "relu(s0)", "xhat": "identity(x[t]) + tanh(h[t-1]*x[t]) | product"}``."""
    out = {}
    for node, c in choices.items():
        text = " , ".join(f"{e.op}({e.label})" for e in c.edges) if c.edges is not None else "(all)"
        if c.combine is not None:
            text += f" | {c.combine}"
        out[node] = text
    return out


def retained_weights(choices: dict[str, NodeChoice]) -> list[list]:
    """``[[node, edge, op, θ], …, [node, "combine", name, φ]]`` for the provenance block."""
    rows = []
    for node, c in choices.items():
        for e in c.edges or ():
            rows.append([node, e.label, e.op, round(e.weight, 4)])
        if c.combine is not None:
            rows.append([node, "combine", c.combine, round(c.combine_weight, 4)])
    return rows


# ----------------------------------------------------------------- IR editing
_TIMED = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\[t(?:-(\d+))?\]$")


def ref_of_key(key: str) -> ir.Ref:
    """Graph key -> IR reference: ``h[t-1]`` -> Ref(h, -1, timed), ``s0`` -> Ref(s0)."""
    m = _TIMED.match(key)
    if m:
        return ir.Ref(name=m.group(1), offset=-int(m.group(2) or 0), timed=True)
    return ir.Ref(name=key)


def source_of_label(label: str):
    parts = label.split("*")
    if len(parts) == 1:
        return ref_of_key(parts[0])
    if len(parts) == 2:
        return ir.Pair(left=ref_of_key(parts[0]), right=ref_of_key(parts[1]))
    raise DeriveError(f"cannot write the candidate source '{label}' back as text")


def _set_attribute(attributes: list[ir.Attribute], name: str, value) -> list[ir.Attribute]:
    out, done = [], False
    for a in attributes:
        if a.name == name:
            if not done:
                out.append(ir.Attribute(name=name, value=value))
                done = True
            continue
        out.append(a)
    if not done:
        out.append(ir.Attribute(name=name, value=value))
    return out


def _default(space: ir.Space, name: str, builtin):
    for a in space.defaults:
        if a.name == name:
            return a.value
    return builtin


def _python_number(value):
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DeriveError(f"refusing to write a non-finite number ({value}) into a genotype")
        return round(value, 6)
    return value


def genotype_space(space: ir.Space, choices: dict[str, NodeChoice], provenance: Optional[dict] = None, name: Optional[str] = None) -> ir.Space:
    """The source space with every choice made: a ``genotype`` IR."""
    if space.cell is None:
        raise DeriveError("the space has no cell")
    from essdsl.lang.growth import expand_to_names

    space = expand_to_names(space, choices)  # a grow block: at the size the choices were made at
    statements = []
    seen = set()
    for st in space.cell.statements:
        if isinstance(st, ir.MixedNode) and st.name in choices:
            seen.add(st.name)
            choice = choices[st.name]
            clauses, attributes = list(st.clauses), list(st.attributes)
            if choice.edges is not None:
                clauses = [
                    ir.FromClause(sources=[source_of_label(e.label)], ops=ir.OpRef(ops=[e.op])) for e in choice.edges
                ]
                kept = len(choice.edges)
                explicit_keep = any(a.name == "keep" for a in attributes)
                if kept != 1 or explicit_keep or _default(space, "keep", 1) != 1:
                    attributes = _set_attribute(attributes, "keep", kept)
            if choice.combine is not None:
                attributes = _set_attribute(attributes, "combine", choice.combine)
            statements.append(st.model_copy(update={"clauses": clauses, "attributes": attributes}))
        else:
            statements.append(st)
    unknown = set(choices) - seen
    if unknown:
        raise DeriveError(f"the manifest names mixed node(s) {', '.join(sorted(unknown))} that the space does not have")
    cell, pruned = prune_unread_nodes(space.cell.model_copy(update={"statements": statements}), space)
    statements = cell.statements
    used_sets = {
        c.ops.set_name
        for st in statements
        if isinstance(st, ir.MixedNode)
        for c in st.clauses
        if c.ops.set_name is not None
    }
    provenance = dict(provenance or {})
    if pruned:
        # the retained weights of pruned nodes describe nothing in the genotype
        if isinstance(provenance.get("weights"), list):
            provenance["weights"] = [row for row in provenance["weights"] if not (isinstance(row, list) and row and row[0] in pruned)]
        provenance["pruned"] = pruned
    entries = []
    for key, value in provenance.items():
        if isinstance(value, list):
            value = [[_python_number(v) for v in row] if isinstance(row, list) else _python_number(row) for row in value]
        else:
            value = _python_number(value)
        entries.append(ir.ProvenanceEntry(key=key, value=value))
    return space.model_copy(
        update={
            "kind": "genotype",
            "name": name or f"{space.name}_derived",
            "provenance": entries,
            "op_sets": [s for s in space.op_sets if s.name in used_sets],
            "cell": cell,
            "comments": [],
        }
    )


def prune_unread_nodes(cell: ir.Cell, space: ir.Space) -> tuple[ir.Cell, list[str]]:
    """``cell`` without the nodes no state update reads, directly or through other
    nodes, and the names removed (in the order written).

    In a space every node reaches an update (``check`` demands it), but possibly
    only as a candidate of a mixed node; once that candidate is not kept the
    node's value is never used.  Dropping it (and whatever only it read) is the
    discrete model the search describes: the supernet's mixture gave it no say
    in the kept path.  Reachability needs no sizes, so the graph is built at
    the defaults; a node the resolver could not build is left for ``check``.
    """
    import networkx as nx

    from essdsl.lang.graph import UpdateSpec
    from essdsl.lang.resolve import build_graph

    graph, _ = build_graph(space.model_copy(update={"kind": "genotype", "cell": cell}))
    if graph is None or not nx.is_directed_acyclic_graph(graph.dag):
        return cell, []
    dag = graph.dag
    read: set[str] = set()
    for key in dag:
        if isinstance(dag.nodes[key]["spec"], UpdateSpec):
            read |= {key} | nx.ancestors(dag, key)
    pruned = [
        st.name
        for st in cell.statements
        if isinstance(st, (ir.FixedNode, ir.MixedNode)) and st.name in dag and st.name not in read
    ]
    if not pruned:
        return cell, []
    statements, removed_lines = [], 0
    for st in cell.statements:
        if isinstance(st, (ir.FixedNode, ir.MixedNode)) and st.name in pruned:
            if st.span.line:
                removed_lines += st.span.end_line - st.span.line + 1
            continue
        # as if the pruned lines were cut from the source: the formatter keeps a
        # blank line only where the source had one, not where a node was removed
        statements.append(_shift_lines(st, removed_lines) if removed_lines else st)
    return cell.model_copy(update={"statements": statements}), pruned


def _shift_lines(value, delta: int):
    """``value`` with every source position moved ``delta`` lines up."""
    if isinstance(value, ir.Span):
        if not value.line:
            return value
        return value.model_copy(update={"line": value.line - delta, "end_line": value.end_line - delta})
    if isinstance(value, BaseModel):
        return value.model_copy(update={key: _shift_lines(getattr(value, key), delta) for key in type(value).model_fields})
    if isinstance(value, list):
        return [_shift_lines(v, delta) for v in value]
    if isinstance(value, dict):
        return {k: _shift_lines(v, delta) for k, v in value.items()}
    return value


def genotype_text(
    space: ir.Space,
    choices: dict[str, NodeChoice],
    provenance: Optional[dict] = None,
    name: Optional[str] = None,
    sizes: Optional[dict] = None,
) -> str:
    """Genotype source text (formatted by :func:`essdsl.lang.fmt.format_space`) that passes ``essdsl check``
    at ``sizes`` (the run's ``ninp``/``nhid``: a space may check only at the sizes it was searched at)."""
    from essdsl.lang.check import check_text
    from essdsl.lang.fmt import format_space

    genotype = genotype_space(space, choices, provenance, name)
    text = format_space(genotype)
    _, report = check_text(text, "<genotype>", sizes)
    if not report.ok:
        raise GenotypeCheckError(report.diagnostics, text)
    return text


__all__ = [
    "DeriveError",
    "KeptEdge",
    "NodeChoice",
    "arch_summary",
    "combine_probabilities",
    "compact_genotype",
    "derive_choices",
    "derive_node",
    "genotype_space",
    "genotype_text",
    "op_probabilities",
    "prune_unread_nodes",
    "retained_weights",
]
