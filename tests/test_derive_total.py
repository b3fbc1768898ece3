"""Derivation is total: every genotype derived from a space that passes ``check``
passes ``check`` itself (at the space's sizes), formats to a fixed point and compiles.

The spaces are random, and built so that choices orphan nodes: a node may be
read only as a candidate of a later mixed node (or of a fixed node that is
itself such a candidate), so a choice that drops the candidate leaves it, and
transitively what only it read, without a reader.  The architecture weights
are random too, with ties, extremes and near-uniform rows.
"""

from __future__ import annotations

import random

import networkx as nx
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from essdsl.lang.check import check_text, load_graph_text
from essdsl.compile import ModelConfig, build_model, script_model
from essdsl.compile.manifest import arch_entries
from essdsl.nas.derive import derive_choices, genotype_space, genotype_text, retained_weights
from essdsl.lang.fmt import format_space, format_text
from essdsl.lang.graph import FixedSpec, MixedSpec, UpdateSpec
from essdsl.lang.parse import parse_space
from test_compile_random_spaces import COMBINES, cell_streams, op_sets

ARCHS_PER_SPACE = 25


@st.composite
def choice_spaces(draw):
    """A valid space in which some nodes are read only by later mixed (or fixed) nodes."""
    lines, wide, narrow, two_states, sizes = draw(cell_streams())
    nodes: list[str] = []  # every node has size nhid
    visible: list[str] = []  # read by a state update
    pending: list[str] = []  # the hidden node the next node must read
    readable: list[str] = []  # nodes any later node may read (hidden ones have one reader)
    count = draw(st.integers(2, 5))
    for i in range(count):
        last = i == count - 1
        if i > 0 and draw(st.integers(0, 3)) == 0:  # a fixed node over earlier nodes
            name = f"f{i}"
            reads = list(dict.fromkeys(draw(st.lists(st.sampled_from(wide + readable), min_size=1, max_size=2)) + pending))
            lines.append(f"  node {name} = {draw(st.sampled_from(['tanh', 'sigmoid']))}(linear({', '.join(reads)}))")
        else:
            name = f"m{i}"
            transform = draw(st.sampled_from(["highway", "project"]))
            pool = wide + readable + (narrow if transform == "project" else [])
            sources = list(dict.fromkeys(draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3)) + pending))
            clauses = [f"from {', '.join(sources)} ops {draw(op_sets())}"]
            edges = len(sources)
            same_size = wide + readable
            if draw(st.booleans()) and len(same_size) >= 2:
                a, b = draw(st.lists(st.sampled_from(same_size), min_size=2, max_size=2, unique=True))
                clauses.append(f"from {a} * {b} ops {draw(op_sets())}")
                edges += 1
            combine = draw(st.sampled_from(COMBINES if edges >= 2 else ["sum", "mean"]))
            keep = draw(st.integers(2 if "product" in combine else 1, edges))
            attrs = [
                f"transform {transform}",
                f"combine {combine}",
                f"select {draw(st.sampled_from(['edge_softmax', 'node_softmax']))}",
                f"keep {keep}",
            ]
            if transform == "project":
                attrs.append("dim nhid")
            lines.append(f"  node {name} = mix {{ {' '.join(clauses)} {' '.join(attrs)} }}")
        pending = []  # the node just written reads every pending one
        nodes.append(name)
        if not last and draw(st.integers(0, 2)) > 0:  # hidden two times in three: chains of them
            pending.append(name)
        else:
            visible.append(name)
            readable.append(name)
    lines.append(f"  h[t] = tanh({visible[0]})" if len(visible) == 1 else f"  h[t] = mean({', '.join(visible)})")
    if two_states:
        lines.append(f"  c[t] = sigmoid(linear(x[t], h[t])) * c[t-1] + {visible[-1]}")
    lines.append("}")
    return "\n".join(lines) + "\n", sizes


def random_arch(manifest: dict, rng: random.Random) -> dict:
    """Logits per arch tensor: Gaussian at a random scale, small integers (ties), or extremes."""
    arch = {}
    for name, entry in manifest["arch"].items():
        style = rng.choice(["gauss", "ties", "extreme", "flat"])
        numel = 1
        for n in entry["shape"]:
            numel *= n
        if style == "gauss":
            scale = rng.choice([1e-3, 0.1, 1.0, 10.0])
            values = [rng.gauss(0.0, scale) for _ in range(numel)]
        elif style == "ties":
            values = [float(rng.randint(0, 2)) for _ in range(numel)]
        elif style == "extreme":
            values = [rng.choice([-1e4, 0.0, 1e4]) for _ in range(numel)]
        else:
            values = [0.0] * numel
        arch[name] = torch.tensor(values, dtype=torch.float32).reshape(entry["shape"])
    return arch


def kept_nodes(graph, choices) -> set[str]:
    """Independent oracle: the nodes read from a state update through fixed nodes and kept edges only."""
    read, stack = set(), [k for k in graph.dag if isinstance(graph.spec(k), UpdateSpec)]
    while stack:
        key = stack.pop()
        if key in read or key not in graph.dag:
            continue
        read.add(key)
        spec = graph.spec(key)
        if isinstance(spec, MixedSpec) and spec.name in choices and choices[spec.name].edges is not None:
            stack.extend(s for e in choices[spec.name].edges for s in e.label.split("*"))
        elif isinstance(spec, (MixedSpec, FixedSpec, UpdateSpec)):
            stack.extend(graph.dag.predecessors(key))
    return {k for k in read if isinstance(graph.spec(k), (MixedSpec, FixedSpec))}


def derive_all(text: str, sizes: dict, seed: int, count: int):
    """(space graph, [(choices, genotype IR, genotype text)]) for ``count`` random architectures;
    every fifth genotype carries the retained weights in its provenance (a long line to parse)."""
    graph = load_graph_text(text, "<random>", sizes=sizes)
    manifest = {"arch": arch_entries(graph)}
    space = parse_space(text)
    rng = random.Random(seed)
    out = []
    for i in range(count):
        choices = derive_choices(manifest, random_arch(manifest, rng))
        genotype = genotype_space(space, choices, {"weights": retained_weights(choices)} if i % 5 == 0 else None)
        out.append((choices, genotype, format_space(genotype)))
    return graph, out


def pruned_names(genotype) -> list:
    return next((e.value for e in genotype.provenance if e.key == "pruned"), [])


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(choice_spaces(), st.integers(0, 2**32 - 1))
def test_every_derived_genotype_checks_and_keeps_exactly_the_read_nodes(space, seed):
    """25 architectures per space: ~2,500 derived genotypes per run."""
    text, sizes = space
    graph, derived = derive_all(text, sizes, seed, ARCHS_PER_SPACE)
    computed = {k for k in graph.dag if isinstance(graph.spec(k), (MixedSpec, FixedSpec))}
    for i, (choices, genotype, genotype_source) in enumerate(derived):
        genotype_graph, report = check_text(genotype_source, "<genotype>", sizes)
        assert report.ok and genotype_graph.kind == "genotype", report.render()
        written = {k for k in genotype_graph.dag if isinstance(genotype_graph.spec(k), (MixedSpec, FixedSpec))}
        expected = kept_nodes(graph, choices)
        assert written == expected
        assert sorted(pruned_names(genotype)) == sorted(computed - expected)
        assert "\n\n\n" not in genotype_source
        if i % 5 == 0:
            assert all(row[0] in expected for row in next(e.value for e in genotype.provenance if e.key == "weights"))
            # the production path (formats and checks at the sizes) and fmt's fixed point
            provenance = {"weights": retained_weights(choices)}
            assert genotype_text(parse_space(text), choices, provenance, sizes=sizes) == genotype_source
            assert format_text(genotype_source) == genotype_source


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(choice_spaces(), st.integers(0, 2**32 - 1))
def test_derived_genotypes_compile_and_run(space, seed):
    text, sizes = space
    _, derived = derive_all(text, sizes, seed, 1)
    graph = load_graph_text(derived[0][2], "<genotype>", sizes=sizes)
    model = build_model(graph, ModelConfig(vocab=11, search=False))
    assert not any(name.startswith("arch.") for name, _ in model.named_parameters())
    scripted = script_model(model)
    tokens = torch.randint(0, 11, (3, 2))
    logits, _ = scripted(tokens, scripted.init_hidden(2))
    assert logits.shape == (3, 2, 11) and torch.isfinite(logits).all()


def test_strategy_orphans_nodes():
    """The strategy does produce spaces where a choice prunes nodes, transitively too."""
    seen = {"pruned": 0, "chain": 0, "pair": 0, "product": 0, "node_softmax": 0}

    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    @given(choice_spaces(), st.integers(0, 2**32 - 1))
    def collect(space, seed):
        text, sizes = space
        graph, derived = derive_all(text, sizes, seed, 4)
        seen["pair"] += " * " in text
        seen["product"] += "product" in text
        seen["node_softmax"] += "node_softmax" in text
        for _, genotype, _ in derived:
            pruned = pruned_names(genotype)
            seen["pruned"] += bool(pruned)
            # a pruned node that another pruned node read: pruning went past the first node
            seen["chain"] += any(
                nx.has_path(graph.dag, a, b) for a in pruned for b in pruned if a != b
            )

    collect()
    assert all(seen.values()), seen
