"""Discretization on hand-made architecture weights: exact genotypes, select modes, ties, combiners."""

import math
from pathlib import Path

import pytest
import torch

from essdsl.check import check_space, check_text, load_graph
from essdsl.compile import ModelConfig, build_manifest, build_model
from essdsl.derive import (
    DeriveError,
    derive_choices,
    genotype_space,
    genotype_text,
    op_probabilities,
    retained_weights,
)
from essdsl.errors import has_errors
from essdsl.graph import MixedSpec
from essdsl.parse import parse_space

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"ninp": 8, "nhid": 8}

# Published DARTS_V1: (op, predecessor) for s1..s8
DARTS_V1 = [("relu", 0), ("relu", 1), ("tanh", 2), ("relu", 3), ("relu", 4), ("identity", 1), ("relu", 5), ("relu", 1)]


def manifest_of(name):
    path = ROOT / "spaces" / f"{name}.space"
    graph = load_graph(path, SIZES)
    cfg = ModelConfig(vocab=20, search=True)
    manifest = build_manifest(graph, cfg, build_model(graph, cfg))
    space = parse_space(path.read_text(), str(path))
    return manifest, space


def zero_arch(manifest):
    return {name: torch.zeros(entry["shape"]) for name, entry in manifest["arch"].items()}


def mixed_edges(graph):
    return {s.name: [(e.sources, e.ops) for e in s.edges] for s in graph.mixed_nodes()}


def derived_graph(space, choices, provenance=None):
    genotype = genotype_space(space, choices, provenance)
    graph, diags = check_space(genotype, SIZES)
    assert not has_errors(diags), diags
    return graph


@pytest.mark.parametrize("name", ["darts_rnn", "idarts_rnn"])
def test_darts_v1_weights_give_exactly_darts_v1(name):
    manifest, space = manifest_of(name)
    arch = zero_arch(manifest)
    for i, (op, pred) in enumerate(DARTS_V1, start=1):
        entry = manifest["arch"][f"arch.s{i}_ops"]
        arch[f"arch.s{i}_ops"][entry["edges"].index(f"s{pred}"), entry["ops"].index(op)] = 3.0
    choices = derive_choices(manifest, arch)
    graph = derived_graph(space, choices)
    expected = load_graph(ROOT / "genotypes" / "darts_v1.space", SIZES)
    assert mixed_edges(graph) == mixed_edges(expected)
    # and the text form round-trips through the checker
    text = genotype_text(space, choices, {"seed": 1, "valid_ppl": 61.5, "weights": retained_weights(choices)})
    g2, report = check_text(text)
    assert report.ok and g2.kind == "genotype"
    assert mixed_edges(g2) == mixed_edges(expected)


def test_edge_softmax_and_node_softmax_pick_different_edges():
    # edge 0: four equal non-zero ops (θ 0.25 each under edge softmax);
    # edge 1: one dominant op (θ ≈ 1 under edge softmax, but a smaller logit).
    logits = torch.full((2, 5), -10.0)
    logits[0, :4] = 2.0
    logits[1, 0] = 1.5
    picks = {}
    for name in ("darts_rnn", "idarts_rnn"):
        manifest, space = manifest_of(name)
        arch = zero_arch(manifest)
        arch["arch.s2_ops"] = logits
        choices = derive_choices(manifest, arch)
        picks[name] = [(e.label, e.op) for e in choices["s2"].edges]
    assert picks["darts_rnn"] == [("s1", "tanh")]  # edge softmax: strength 0.9999 vs 0.25
    assert picks["idarts_rnn"] == [("s0", "tanh")]  # node softmax: e^2 > e^1.5 over one normaliser


def test_zero_op_is_never_kept_and_does_not_count_as_strength():
    manifest, space = manifest_of("darts_rnn")
    arch = zero_arch(manifest)
    zero = manifest["arch"]["arch.s2_ops"]["ops"].index("zero")
    arch["arch.s2_ops"][0, zero] = 9.0  # s0's edge is mostly "zero": its non-zero ops are weak
    arch["arch.s2_ops"][1, 1] = 0.5  # s1 relu slightly preferred
    choices = derive_choices(manifest, arch)
    assert [(e.label, e.op) for e in choices["s2"].edges] == [("s1", "relu")]


def test_ties_keep_the_earlier_edge_and_first_op_and_combiner():
    manifest, space = manifest_of("ess_joint")
    choices = derive_choices(manifest, zero_arch(manifest))
    for i in range(1, 9):
        assert [(e.label, e.op) for e in choices[f"s{i}"].edges] == [("s0", "tanh")]
    # edge softmax on zeros: the pair edge has 2 ops (θ 0.5), x[t] and x[t-1] have 4 (θ 0.25):
    # keep 2 takes the pair and, of the tied two, the earlier x[t]
    assert [e.label for e in choices["xhat"].edges] == ["x[t]", "h[t-1]*x[t]"]
    assert choices["xhat"].combine == "sum"
    # node softmax over hhat: the first candidate (h[t-1]) with its first non-zero op
    assert [(e.label, e.op) for e in choices["hhat"].edges] == [("h[t-1]", "identity")]


def test_ess_pairs_product_combiner_and_keep_two():
    manifest, space = manifest_of("ess_joint")
    arch = zero_arch(manifest)
    hhat = manifest["arch"]["arch.hhat_ops"]
    arch["arch.hhat_ops"][hhat["edges"].index("h[t-1]*x[t]"), hhat["ops"].index("tanh")] = 4.0
    xhat = manifest["arch"]["arch.xhat_ops"]
    arch["arch.xhat_ops"][xhat["edges"].index("h[t-1]*x[t]"), xhat["ops"].index("identity")] = 2.0
    arch["arch.xhat_ops"][xhat["edges"].index("x[t-1]"), xhat["ops"].index("sigmoid")] = 1.0
    arch["arch.xhat_combine"] = torch.tensor([0.0, 0.7])  # product
    choices = derive_choices(manifest, arch)
    graph = derived_graph(space, choices)
    assert mixed_edges(graph)["hhat"] == [(("h[t-1]", "x[t]"), ("tanh",))]
    assert mixed_edges(graph)["xhat"] == [(("x[t-1]",), ("sigmoid",)), (("h[t-1]", "x[t]"), ("identity",))]
    spec = graph.spec("xhat")
    assert isinstance(spec, MixedSpec) and spec.combine == ("product",) and spec.keep == 2
    text = genotype_text(space, choices, {"weights": retained_weights(choices)})
    assert "h[t-1] * x[t]" in text and "combine product" in text and "keep 2" in text
    assert check_text(text)[1].ok


def test_masked_slots_are_excluded_from_both_softmaxes():
    entry = {"node": "n", "select": "node_softmax", "keep": 1, "edges": ["a", "b"], "ops": ["tanh", "relu"], "mask": [[True, True], [True, False]]}
    theta = op_probabilities(entry, torch.tensor([[0.0, 0.0], [0.0, 100.0]]))
    assert theta[1][1] == 0.0
    assert sum(map(sum, theta)) == pytest.approx(1.0)
    assert theta[0][0] == pytest.approx(1 / 3)
    entry["select"] = "edge_softmax"
    theta = op_probabilities(entry, torch.tensor([[0.0, 0.0], [0.0, float("-inf")]]))
    assert theta[1] == [1.0, 0.0] and theta[0] == [0.5, 0.5]


def test_non_finite_weights_are_refused():
    manifest, space = manifest_of("darts_rnn")
    arch = zero_arch(manifest)
    arch["arch.s3_ops"][1, 2] = math.nan
    with pytest.raises(DeriveError, match="not finite"):
        derive_choices(manifest, arch)
    with pytest.raises(DeriveError, match="missing"):
        derive_choices(manifest, {})
