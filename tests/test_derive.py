"""Discretization on hand-made architecture weights: exact genotypes, select modes, ties, combiners."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from essdsl.lang.check import check_file, check_space, check_text, load_graph, load_graph_text
from essdsl.compile import ModelConfig, build_manifest, build_model
from essdsl.compile.manifest import arch_entries
from essdsl.nas.derive import (
    DeriveError,
    derive_choices,
    genotype_space,
    genotype_text,
    op_probabilities,
    retained_weights,
)
from essdsl.errors import has_errors
from essdsl.lang.fmt import format_text
from essdsl.lang.graph import MixedSpec
from essdsl.lang.parse import parse_space

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


# ----------------------------------------------------------------- total derivation
# The space of issue 11: a GRU-like cell whose `project` node keeps 2 of 5 inputs
# (one a Hadamard pair) under a searched combiner, two highway mixes, and a mixed
# node `n` choosing between them: whichever of a, b it drops has no reader left.
GRU_LIKE = """space gru_like

cell {
  input x[t-1..t] : ninp
  state h[t-2..t-1] : nhid

  node xin = mix {
    from x[t], x[t-1], h[t-1], h[t-2] ops {identity, tanh, zero}
    from h[t-1] * x[t] ops {identity, tanh}
    transform project
    combine {sum, product}
    keep 2
    dim nhid
  }
  node z = sigmoid(linear(xin, h[t-1]))  # update gate
  node a = mix { from xin, h[t-1] ops {tanh, relu, sigmoid, zero} }
  node b = mix { from xin, h[t-2] ops {tanh, relu, identity, zero} }
  node n = mix { from a, b ops {tanh, identity, zero} select node_softmax }
  h[t] = h[t-1] + z * (n - h[t-1])
  output h
}
"""


def gru_like_manifest():
    graph = load_graph_text(GRU_LIKE, "gru_like.space", SIZES)
    return {"arch": arch_entries(graph)}, parse_space(GRU_LIKE, "gru_like.space")


@pytest.mark.parametrize("kept, dropped", [("a", "b"), ("b", "a")])
def test_a_node_a_choice_orphans_is_pruned_and_the_genotype_checks(kept, dropped):
    manifest, space = gru_like_manifest()
    arch = zero_arch(manifest)
    entry = manifest["arch"]["arch.n_ops"]
    arch["arch.n_ops"][entry["edges"].index(kept), entry["ops"].index("tanh")] = 5.0
    choices = derive_choices(manifest, arch)
    text = genotype_text(space, choices, {"weights": retained_weights(choices)}, sizes=SIZES)
    graph, report = check_text(text, "<genotype>", SIZES)
    assert report.ok, report.render()
    assert f"node {kept} = " in text and f"node {dropped} = " not in text
    provenance = {e.key: e.value for e in parse_space(text).provenance}
    assert provenance["pruned"] == [dropped]
    assert [row[0] for row in provenance["weights"]].count(dropped) == 0
    # the cut node leaves no blank line: z, the kept node and n stay one block
    assert "\n\n  node n" not in text and "\n\n  node b" not in text
    assert format_text(text) == text


def test_pruning_is_transitive_and_spares_nodes_read_elsewhere():
    text = """space chain
cell {
  input x : ninp
  state h : nhid
  node p = tanh(linear(x[t]))             # read only by q
  node q = sigmoid(linear(p, h[t-1]))     # read only as a candidate of m
  node r = tanh(linear(h[t-1]))           # a candidate of m, and read by the update
  node m = mix { from q, r, h[t-1] ops {tanh, relu} }
  h[t] = m + r
}
"""
    graph = load_graph_text(text, "chain.space", SIZES)
    manifest = {"arch": arch_entries(graph)}
    arch = zero_arch(manifest)
    arch["arch.m_ops"][2, 0] = 4.0  # keep h[t-1]: q, and p behind it, lose their only reader
    choices = derive_choices(manifest, arch)
    genotype = genotype_space(parse_space(text), choices)
    assert [e.value for e in genotype.provenance if e.key == "pruned"] == [["p", "q"]]
    names = [st.name for st in genotype.cell.statements if st.kind in ("fixed", "mixed")]
    assert names == ["r", "m"]
    assert check_space(genotype, SIZES)[1] == []


def test_shipped_spaces_prune_nothing():
    """DARTS, I-DARTS and ESS read every intermediate node in the update: no choice prunes."""
    rng = torch.Generator().manual_seed(0)
    for name in ("darts_rnn", "idarts_rnn", "ess_joint"):
        manifest, space = manifest_of(name)
        for _ in range(5):
            arch = {k: torch.randn(e["shape"], generator=rng) for k, e in manifest["arch"].items()}
            genotype = genotype_space(space, derive_choices(manifest, arch))
            assert not [e for e in genotype.provenance if e.key == "pruned"], name


def essdsl_cli(*args, timeout=300):
    env = {**os.environ, "ESSDSL_COMPILE": "0", "ESSDSL_FINAL_EPOCHS": "0", "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "essdsl", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env
    )


TINY_SEARCH = ["--epochs", "1", "--max-steps", "6", "--batch-size", "16", "--bptt", "10", "--threads", "1", "--synthetic-tokens", "3000"]


def test_issue_space_searches_and_derives_in_every_seed(tmp_path):
    """Before pruning, 3 of 3 seeds ended 'cannot derive a genotype: node 'b' does not reach any state update'."""
    space = tmp_path / "gru_like.space"
    space.write_text(GRU_LIKE)
    for seed in (0, 1, 2):
        run = tmp_path / f"run{seed}"
        result = essdsl_cli("search", space, "--ninp", 8, "--nhid", 8, "--seed", seed, *TINY_SEARCH, "--out", run)
        assert result.returncode == 0, result.stderr
        graph, report = check_file(run / "genotype.space", SIZES)
        assert report.ok and graph.kind == "genotype", report.render()
        pruned = {e.key: e.value for e in parse_space((run / "genotype.space").read_text()).provenance}["pruned"]
        assert pruned in (["a"], ["b"])  # n keeps one of the two; the other is cut


def test_space_valid_only_at_the_runs_sizes_derives_there(tmp_path):
    """Issue 12 D6: `state h : 8` with `x[t] + h[t-1]` checks only at --ninp 8; the genotype is
    checked at the run's sizes (from its manifest), by search and by derive."""
    space = tmp_path / "eight.space"
    space.write_text(
        "space eight\ncell {\n  input x : ninp\n  state h : 8\n"
        "  node s = mix { from x[t], h[t-1] ops {tanh, relu, zero} transform project dim 8 }\n"
        "  h[t] = tanh(x[t] + h[t-1]) + s\n}\n"
    )
    assert not check_file(space)[1].ok  # at the default ninp 300 the sum's sizes conflict
    run = tmp_path / "run"
    result = essdsl_cli("search", space, "--ninp", 8, *TINY_SEARCH, "--out", run)
    assert result.returncode == 0, result.stderr
    assert check_file(run / "genotype.space", {"ninp": 8})[1].ok
    again = tmp_path / "again.space"
    result = essdsl_cli("derive", run, "-o", again)
    assert result.returncode == 0, result.stderr
    assert again.read_text() == (run / "genotype.space").read_text()
