"""Counts of essdsl.lang.stats against published numbers, explicit enumeration and derived genotypes."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import pytest

from essdsl.lang.check import load_graph, load_graph_text
from essdsl.lang.graph import MixedSpec
from essdsl.lang.stats import (
    FLOPS_KEYS,
    NODE_KEYS,
    PARAMS_KEYS,
    STATS_KEYS,
    StatsError,
    architecture_count,
    elementary_symmetric,
    stats_dict,
)

ROOT = Path(__file__).resolve().parent.parent
SPACES = sorted((ROOT / "spaces").glob("*.space"))
GENOTYPES = sorted((ROOT / "genotypes").glob("*.space"))


# ----------------------------------------------------------------- explicit enumeration
def node_options(spec: MixedSpec) -> list[tuple]:
    """Every discrete choice of one mixed node, listed one by one."""
    options = []
    for kept in itertools.combinations(range(len(spec.edges)), spec.keep):
        op_lists = [[op for op in spec.edges[i].ops if op != "zero"] for i in kept]
        for ops in itertools.product(*op_lists):
            for combiner in spec.combine:
                options.append((tuple(zip(kept, ops)), combiner))
    return options


def all_architectures(graph):
    per_node = [[(spec, option) for option in node_options(spec)] for spec in graph.mixed_nodes()]
    return itertools.product(*per_node)


def genotype_text(space_text: str, graph, architecture) -> str:
    """The space with every mixed node replaced by one discrete choice."""
    chosen = {spec.name: (spec, option) for spec, option in architecture}
    lines = []
    for line in space_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("space "):
            lines.append("genotype " + stripped.split()[1])
            continue
        name = stripped.split()[1] if stripped.startswith("node ") and "= mix" in stripped else None
        if name in chosen:
            spec, (kept, combiner) = chosen[name]
            clauses = " ".join(
                f"from {' * '.join(spec.edges[i].sources)} ops {{{op}}}" for i, op in kept
            )
            dim = " dim nhid" if spec.transform == "project" else ""
            lines.append(
                f"  node {name} = mix {{ {clauses} transform {spec.transform} keep {len(kept)} combine {combiner}{dim} }}"
            )
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


NONZERO_OPS = ["tanh", "relu", "sigmoid", "identity"]


def random_space(rng: random.Random, max_nodes: int, max_edges: int, max_ops: int) -> str:
    """A valid random space: nhid-sized states and nodes, ninp-sized inputs (project nodes may read them)."""
    wide = ["h[t-1]", "h[t-2]"]
    narrow = ["x[t]", "x[t-1]"]
    lines = ["space random_space", "cell {", "  input x[t-1..t] : ninp", "  state h[t-2..t-1] : nhid"]
    names = []
    for index in range(rng.randint(1, max_nodes)):
        transform = rng.choice(["highway", "project"])
        pool = list(wide) + (narrow if transform == "project" else [])
        sources = rng.sample(pool, rng.randint(1, min(max_edges, len(pool))))
        if rng.random() < 0.4:
            group = rng.choice([wide, narrow]) if transform == "project" else wide
            a, b = rng.sample(group, 2)
            sources.append(f"{a} * {b}")
        clauses = []
        for source in sources:
            ops = rng.sample(NONZERO_OPS, rng.randint(1, max_ops))
            if rng.random() < 0.3:
                ops.insert(rng.randint(0, len(ops)), "zero")
            clauses.append(f"from {source} ops {{{', '.join(ops)}}}")
        keep = rng.randint(1, len(sources))
        combine = rng.choice([["sum"], ["mean"], ["sum", "product"], ["product"]] if keep >= 2 else [["sum"], ["mean"]])
        combine_text = combine[0] if len(combine) == 1 else "{" + ", ".join(combine) + "}"
        dim = " dim nhid" if transform == "project" else ""
        name = f"n{index}"
        lines.append(
            f"  node {name} = mix {{ {' '.join(clauses)} transform {transform} keep {keep} combine {combine_text}{dim} }}"
        )
        names.append(name)
        wide.append(name)
    lines.append(f"  h[t] = mean({', '.join(names)})")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------- published numbers
def test_elementary_symmetric_small_cases():
    assert elementary_symmetric([2, 3, 5], 0) == 1
    assert elementary_symmetric([2, 3, 5], 1) == 10
    assert elementary_symmetric([2, 3, 5], 2) == 2 * 3 + 2 * 5 + 3 * 5
    assert elementary_symmetric([2, 3, 5], 3) == 30
    assert elementary_symmetric([2, 3], 3) == 0


@pytest.mark.parametrize("name", ["darts_rnn", "idarts_rnn"])
def test_darts_space_has_4_to_the_8_times_8_factorial_architectures(name):
    graph = load_graph(ROOT / "spaces" / f"{name}.space")
    assert architecture_count(graph) == 2_642_411_520 == 4**8 * math.factorial(8)
    data = stats_dict(graph)
    assert data["architectures"] == 2_642_411_520
    assert data["architectures_log10"] == pytest.approx(math.log10(2_642_411_520), abs=1e-4)
    # 1 + 2 + ... + 8 edges, 5 ops each, all valid.
    assert data["arch_weights"] == data["arch_weights_valid"] == 5 * 36


@pytest.mark.parametrize(
    "sizes, expected",
    [
        (dict(ninp=850, nhid=850, vocab=10000), 22_960_000),
        (dict(ninp=300, nhid=300, vocab=10000), 4_810_000),
        (dict(ninp=700, nhid=700, vocab=33_278), 33_127_878),
    ],
)
def test_darts_v2_parameter_counts_match_the_paper(sizes, expected):
    genotype = stats_dict(load_graph(ROOT / "genotypes" / "darts_v2.space", sizes))
    assert genotype["architectures"] == 1
    assert genotype["params"]["supernet"] == genotype["params"]["derived_min"] == genotype["params"]["derived_max"] == expected
    assert genotype["params"]["decoder_tied"] is True
    assert genotype["params"]["decoder"] == sizes["vocab"]
    space = stats_dict(load_graph(ROOT / "spaces" / "darts_rnn.space", sizes))
    assert space["params"]["derived_min"] == space["params"]["derived_max"] == expected
    assert space["flops_per_token"]["derived_max"] == genotype["flops_per_token"]["supernet"]


def test_untied_decoder_counts_a_matrix_and_a_bias():
    data = stats_dict(load_graph(ROOT / "genotypes" / "gru.space", dict(ninp=20, nhid=30, vocab=100)))
    assert data["params"]["decoder_tied"] is False
    assert data["params"]["decoder"] == 30 * 100 + 100
    assert data["params"]["embedding"] == 100 * 20
    # GRU: r, z: [x, h] -> h with bias; n: two linears with bias.
    assert data["params"]["cell_supernet"] == 2 * (50 * 30 + 30) + (20 * 30 + 30) + (30 * 30 + 30)
    assert data["flops_per_token"]["supernet"] == 2 * (2 * 50 * 30 + 20 * 30 + 30 * 30) + 2 * 30 * 100


@pytest.mark.parametrize("path", SPACES + GENOTYPES, ids=lambda p: p.name)
def test_count_is_the_product_of_explicit_per_node_enumerations(path):
    graph = load_graph(path)
    data = stats_dict(graph)
    expected = math.prod(len(node_options(spec)) for spec in graph.mixed_nodes())
    assert isinstance(data["architectures"], int) and data["architectures"] >= 1
    assert data["architectures"] == expected
    for node in data["nodes"]:
        if node["kind"] == "mixed":
            assert node["choices"] == len(node_options(graph.spec(node["name"])))
    if graph.kind == "genotype":
        assert data["architectures"] == 1


def test_ess_joint_stats_are_positive_and_json_keys_are_stable():
    data = stats_dict(load_graph(ROOT / "spaces" / "ess_joint.space"))
    assert isinstance(data["architectures"], int) and data["architectures"] > 2_642_411_520
    assert tuple(data) == STATS_KEYS
    assert tuple(data["params"]) == PARAMS_KEYS
    assert tuple(data["flops_per_token"]) == FLOPS_KEYS
    assert tuple(data["sizes"]) == ("ninp", "nhid", "vocab")
    assert all(tuple(node) == NODE_KEYS for node in data["nodes"])
    assert json.loads(json.dumps(data)) == data
    # masked slots of hhat (pairs lack sigmoid, zero) and xhat are not valid weights
    assert data["arch_weights_valid"] < data["arch_weights"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for key in STATS_KEYS + tuple(f"params.{k}" for k in PARAMS_KEYS) + tuple(f"flops_per_token.{k}" for k in FLOPS_KEYS):
        assert f"`{key}`" in readme, f"README does not document the stats key {key}"


def test_a_cell_without_input_cannot_be_measured():
    graph = load_graph_text(
        "space no_input\ncell {\n  state h[t-1] : nhid\n  h[t] = tanh(linear(h[t-1]))\n}\n"
    )
    with pytest.raises(StatsError, match="no input"):
        stats_dict(graph)


# ----------------------------------------------------------------- random spaces
@pytest.mark.parametrize("seed", range(12))
def test_architecture_count_equals_full_enumeration_on_random_spaces(seed):
    rng = random.Random(seed)
    text = random_space(rng, max_nodes=3, max_edges=3, max_ops=2)
    graph = load_graph_text(text, f"random-{seed}.space", dict(ninp=4, nhid=6, vocab=11))
    enumerated = sum(1 for _ in all_architectures(graph))
    assert stats_dict(graph)["architectures"] == enumerated, text


MIXED_SIZES_SPACE = """space mixed_sizes
cell {
  input x[t-1..t] : ninp
  state h[t-2..t-1] : nhid
  node a = mix { from x[t], h[t-1] ops {tanh, zero} from x[t] * x[t-1] ops {relu} transform project keep 2 dim nhid combine {sum, product} }
  node b = mix { from a, h[t-2] ops {identity, sigmoid} transform highway }
  h[t] = mean(a, b)
}
"""

BOUNDS_SPACES = [random_space(random.Random(1000 + seed), max_nodes=2, max_edges=3, max_ops=2) for seed in range(8)]
BOUNDS_SPACES += [random_space(random.Random(1000 + seed), max_nodes=2, max_edges=3, max_ops=1) for seed in range(8)]
BOUNDS_SPACES.append(MIXED_SIZES_SPACE)


@pytest.mark.parametrize("text", BOUNDS_SPACES, ids=[f"space{i}" for i in range(len(BOUNDS_SPACES))])
def test_derived_bounds_equal_min_and_max_over_every_genotype(text):
    """Write every architecture of a small space as a genotype and measure it:
    the space's derived min/max must be exactly the extremes of those models."""
    sizes = dict(ninp=4, nhid=6, vocab=11)
    graph = load_graph_text(text, "small.space", sizes)
    space = stats_dict(graph)
    params, flops = [], []
    count = 0
    for architecture in all_architectures(graph):
        genotype = stats_dict(load_graph_text(genotype_text(text, graph, architecture), "genotype.space", sizes))
        assert genotype["architectures"] == 1
        assert genotype["arch_weights"] == 0
        assert genotype["params"]["derived_min"] == genotype["params"]["supernet"]
        params.append(genotype["params"]["supernet"])
        flops.append(genotype["flops_per_token"]["supernet"])
        count += 1
    assert count == space["architectures"]
    assert (space["params"]["derived_min"], space["params"]["derived_max"]) == (min(params), max(params)), text
    assert (space["flops_per_token"]["derived_min"], space["flops_per_token"]["derived_max"]) == (min(flops), max(flops))
    assert space["params"]["supernet"] >= space["params"]["derived_max"]
    assert space["flops_per_token"]["supernet"] >= space["flops_per_token"]["derived_max"]


def test_the_bounds_cases_include_choices_that_change_the_parameter_count():
    """Otherwise the test above would never see derived_min != derived_max."""
    sizes = dict(ninp=4, nhid=6, vocab=11)
    differing = 0
    for text in BOUNDS_SPACES:
        data = stats_dict(load_graph_text(text, "small.space", sizes))
        differing += data["params"]["derived_min"] != data["params"]["derived_max"]
    assert differing >= 2
