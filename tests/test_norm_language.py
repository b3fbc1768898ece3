"""The language constructs of issue 14: `norm` on a fixed node, one normalisation
shared across nodes (`norm batchnorm shared`), and where the variational dropouts
apply (every value entering a matrix product; the highway carry unmasked)."""

import json

import torch

from essdsl.lang.check import load_graph_text
from essdsl.compile import ModelConfig, build_model
from essdsl.lang.diff import diff_graphs, render_edits
from essdsl.lang.fmt import format_text
from essdsl.lang.ir import strip_spans
from essdsl.lang.parse import parse_space
from essdsl.lang.show import describe
from essdsl.lang.stats import stats_dict

SHARED = """space s

defaults {
  norm batchnorm shared
}

cell {
  input x[t] : ninp
  state h[t-1] : nhid

  node s0 = highway(tanh, x[t], h[t-1], carry = h[t-1]) norm batchnorm shared
  node s1 = mix { from s0 ops {tanh, relu} }
  node s2 = mix {
    from s0..s1 ops {tanh, identity}
    norm batchnorm
  }
  h[t] = mean(s1, s2)
}
"""
SIZES = {"ninp": 6, "nhid": 6}


def graph(text=SHARED):
    return load_graph_text(text, "s.space", SIZES)


def test_fmt_keeps_the_new_constructs():
    assert format_text(SHARED) == SHARED
    squeezed = SHARED.replace("carry = h[t-1]) norm batchnorm shared", "carry=h[t-1])norm   batchnorm  shared")
    assert strip_spans(parse_space(squeezed)) == strip_spans(parse_space(SHARED))


def test_resolved_norms_show_stats_diff():
    g = graph()
    assert (g.spec("s0").norm, g.spec("s0").norm_shared) == ("batchnorm", True)
    assert g.spec("s1").norm_shared and not g.spec("s2").norm_shared  # a node's own `norm` overrides the default
    text = describe(g)
    assert "(norm batchnorm shared)" in text and "norm batchnorm," not in text.split("s2")[0]
    nodes = {n["name"]: n for n in json.loads(json.dumps(stats_dict(g)))["nodes"]}
    assert [nodes[k]["norm"] for k in ("s0", "s1", "s2")] == ["batchnorm shared", "batchnorm shared", "batchnorm"]
    plain = graph(SHARED.replace(") norm batchnorm shared", ")"))
    assert render_edits(diff_graphs(plain, g)) == "~ node s0.norm: none -> batchnorm shared"


def test_one_shared_batchnorm_updated_once_per_node_and_step():
    g = graph()
    for impl in ("generated", "reference"):
        model = build_model(g, ModelConfig(vocab=9), impl=impl).train()
        names = {n for n, _ in model.named_buffers()}
        assert {"shared_norm.running_mean", "norms.s2.running_mean"} <= names and "norms.s0.running_mean" not in names
        model(torch.randint(0, 9, (4, 3)), model.init_hidden(3))
        assert model.shared_norm.num_batches_tracked == 2 * 4  # s0 and s1, four steps
        assert build_model(g, ModelConfig(vocab=9, search=False), impl=impl).state_dict().keys().isdisjoint(names - {""})


def test_dropouth_masks_the_matrix_product_operands_not_the_carry():
    """With the hidden mask all zero, every product sees zeros: s0 = h + sigmoid(0) * (tanh(0) - h) = h / 2."""
    g = load_graph_text(
        "space c\ncell {\n input x : ninp\n state h[t-1] : nhid\n node s0 = highway(tanh, h[t-1], carry = h[t-1])\n"
        " h[t] = s0 + 0 * linear(x)\n}\n".replace(" + 0 * linear(x)", ""),
        "c.space",
        SIZES,
    )
    for impl in ("generated", "reference"):
        model = build_model(g, ModelConfig(vocab=9, dropout=0, dropouti=0, dropoute=0, dropoutx=0.5, dropouth=0.5), impl=impl)
        model.train()
        model.mask_override = {"dropouth.6": torch.zeros(2, 6)}
        hidden = [torch.randn(1, 2, 6)]
        _, new = model(torch.randint(0, 9, (1, 2)), hidden)
        torch.testing.assert_close(new[0], hidden[0] / 2)
