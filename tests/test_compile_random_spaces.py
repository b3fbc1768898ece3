"""Generated == reference on random small spaces: random op sets, transforms,
combiners (searchable ones included), select, keep <= E, windows, Hadamard pairs,
fixed nodes, two states, ninp != nhid."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from essdsl.lang.check import load_graph_text
from test_compile_equivalence import assert_same, pair

OPS = ["tanh", "relu", "sigmoid", "identity", "zero"]
COMBINES = ["sum", "mean", "product", "{sum, product}", "{sum, mean}", "{mean, product, sum}"]


@st.composite
def op_sets(draw):
    ops = draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=5, unique=True))
    if ops == ["zero"]:
        ops = ["zero", draw(st.sampled_from(OPS[:4]))]
    return "{" + ", ".join(ops) + "}"


@st.composite
def cell_streams(draw):
    """The header and stream declarations of a random space: (lines, wide, narrow, two_states, sizes),
    ``wide`` the streams of size nhid, ``narrow`` those of size ninp."""
    ninp, nhid = draw(st.sampled_from([(8, 8), (6, 8)]))
    x_depth = draw(st.integers(0, 2))
    h_depth = draw(st.integers(1, 3))
    two_states = draw(st.booleans())
    lines = ["space random", "cell {"]
    lines.append(f"  input x[t-{x_depth}..t] : ninp" if x_depth else "  input x : ninp")
    lines.append(f"  state h[t-{h_depth}..t-1] : nhid" if h_depth > 1 else "  state h[t-1] : nhid")
    if two_states:
        lines.append("  state c[t-1] : nhid")
    wide = [f"h[t-{k}]" for k in range(1, h_depth + 1)] + (["c[t-1]"] if two_states else [])  # size nhid
    narrow = ["x[t]"] + [f"x[t-{k}]" for k in range(1, x_depth + 1)]  # size ninp
    return lines, wide, narrow, two_states, {"ninp": ninp, "nhid": nhid}


@st.composite
def spaces(draw):
    lines, wide, narrow, two_states, sizes = draw(cell_streams())
    nodes = []
    if draw(st.booleans()):  # a fixed node in front, like s0 of DARTS
        lines.append(f"  node f0 = highway({draw(st.sampled_from(OPS[:4]))}, x[t], h[t-1], carry = h[t-1])")
        nodes.append("f0")
    for i in range(draw(st.integers(1, 3))):
        name = f"m{i}"
        transform = draw(st.sampled_from(["highway", "project"]))
        pool = wide + nodes + (narrow if transform == "project" else [])
        sources = draw(st.lists(st.sampled_from(pool), min_size=1, max_size=3, unique=True))
        clauses = [f"from {', '.join(sources)} ops {draw(op_sets())}"]
        edges = len(sources)
        same_size = wide + nodes
        if draw(st.booleans()) and len(same_size) >= 2:
            a, b = draw(st.lists(st.sampled_from(same_size), min_size=2, max_size=2, unique=True))
            if draw(st.booleans()) or len(same_size) < 3:
                clauses.append(f"from {a} * {b} ops {draw(op_sets())}")
                edges += 1
            else:
                trio = draw(st.lists(st.sampled_from(same_size), min_size=3, max_size=3, unique=True))
                clauses.append(f"from pairs({', '.join(trio)}) ops {draw(op_sets())}")
                edges += 3
        combine = draw(st.sampled_from(COMBINES if edges >= 2 else ["sum", "mean"]))
        low = 2 if "product" in combine else 1
        keep = draw(st.integers(low, edges))
        attrs = [
            f"transform {transform}",
            f"combine {combine}",
            f"select {draw(st.sampled_from(['edge_softmax', 'node_softmax']))}",
            f"keep {keep}",
            f"norm {draw(st.sampled_from(['batchnorm', 'none']))}",
        ]
        if transform == "project":
            attrs.append("dim nhid")
        lines.append(f"  node {name} = mix {{ {' '.join(clauses)} {' '.join(attrs)} }}")
        nodes.append(name)
    if len(nodes) == 1:
        lines.append(f"  h[t] = tanh({nodes[0]})")
    else:
        lines.append(f"  h[t] = mean({', '.join(nodes)})")
    if two_states:
        lines.append(f"  c[t] = sigmoid(linear(x[t], h[t])) * c[t-1] + {nodes[-1]}")
    lines.append("}")
    return "\n".join(lines) + "\n", sizes


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spaces(), st.booleans())
def test_generated_matches_reference_on_random_spaces(space, search):
    text, sizes = space
    graph = load_graph_text(text, "<random>", sizes=sizes)
    generated, reference = pair(graph, search)
    # float64: batchnorm over a batch of 3 amplifies float32 rounding in the
    # gradients past any useful tolerance, and that would hide nothing real.
    assert_same(generated.double(), reference.double(), T=3, B=3)


def test_strategy_reaches_the_interesting_cases():
    """The strategy does produce searchable combiners, pairs, windows and node softmax."""
    seen = set()

    @settings(max_examples=60, deadline=None, database=None)
    @given(spaces())
    def collect(space):
        text = space[0]
        for feature in ("{sum, product}", "pairs(", " * ", "x[t-2..t]", "node_softmax", "project", "c[t-1]"):
            if feature in text:
                seen.add(feature)
        load_graph_text(text, "<random>", sizes=space[1])  # every drawn text is a valid space

    collect()
    assert {"{sum, product}", "node_softmax", "project"} <= seen
