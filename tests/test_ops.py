"""The op registry (essdsl/ops.py): one registered op is checked, compiled, interpreted,
counted and derived with no other edit."""

from __future__ import annotations

import pytest
import torch

from essdsl import ops
from essdsl.compile import ModelConfig, build_manifest, build_model, generate_source
from essdsl.lang.check import check_text, load_graph_text
from essdsl.lang.stats import architecture_count, node_saved_floats
from essdsl.nas.derive import derive_choices, genotype_text

SPACE = """space extra
cell {{
  input x : ninp
  state h[t-1] : nhid
  node s0 = highway(tanh, x[t], h[t-1], carry = h[t-1])
  node s1 = mix {{ from s0, h[t-1] ops {ops} }}
  node s2 = {fixed}(s1)
  h[t] = s2
}}
"""
SIZES = {"ninp": 6, "nhid": 6}


@pytest.fixture
def softsign():
    """A temporary op: softsign (x / (1 + |x|)), which keeps its output for backward."""
    op = ops.register(
        ops.Op("softsign", lambda v: v / (1 + v.abs()), "torch.nn.functional.softsign({})", "x / (1 + |x|)", saves_output=True)
    )
    yield op
    ops.unregister(op.name)


@pytest.fixture
def halved():
    """A temporary parameter-free op (v / 2): it collapses like identity."""
    op = ops.register(ops.Op("halved", lambda v: v * 0.5, "({} * 0.5)", "half the value", parameter_free=True))
    yield op
    ops.unregister(op.name)


def _errors(text):
    _, report = check_text(text, "<extra>", SIZES)
    return [d.message for d in report.diagnostics if d.severity == "error"], report


def test_unregistered_op_is_unknown_with_a_did_you_mean():
    errors, _ = _errors(SPACE.format(ops="{tanh, softsign}", fixed="identity"))
    assert errors == ["unknown op 'softsign' (known ops: tanh, relu, sigmoid, identity, zero)"]
    errors, _ = _errors(SPACE.format(ops="{tahn, relu}", fixed="idenity"))
    assert errors[0].endswith("; did you mean 'tanh'?") and errors[1].endswith("; did you mean 'identity'?")


def test_registered_op_is_checked(softsign):
    errors, report = _errors(SPACE.format(ops="{tanh, softsign}", fixed="softsign"))
    assert errors == [] and report.ok
    errors, _ = _errors(SPACE.format(ops="{tanh, sofstign}", fixed="identity"))
    assert errors == ["unknown op 'sofstign' (known ops: tanh, relu, sigmoid, identity, zero, softsign); did you mean 'softsign'?"]
    errors, _ = _errors(SPACE.format(ops="{tanh}", fixed="identity").replace("highway(tanh", "highway(softsign"))
    assert errors == []
    errors, _ = _errors(SPACE.format(ops="{tanh}", fixed="identity").replace("node s2", "node softsign").replace("= s2", "= softsign"))
    assert errors == ["'softsign' is an op or function name and cannot name a node"]


def test_parameter_free_op_gets_the_collapse_warning(halved):
    _, report = _errors(SPACE.format(ops="{tanh, halved}", fixed="identity"))
    warnings = [d for d in report.diagnostics if d.code == "collapse-risk"]
    assert len(warnings) == 1 and "parameter-free op(s) halved" in warnings[0].message
    _, report = _errors(SPACE.format(ops="{tanh, halved, zero}", fixed="identity"))
    assert not [d for d in report.diagnostics if d.code == "collapse-risk"]


@pytest.mark.parametrize("search", [True, False])
def test_registered_op_compiles_and_interprets_alike(softsign, halved, search):
    graph = load_graph_text(SPACE.format(ops="{tanh, softsign, halved, zero}", fixed="softsign"), "<extra>", SIZES)
    cfg = ModelConfig(vocab=11, search=search, dropout=0.0, dropouth=0.0, dropoutx=0.0, dropouti=0.0, dropoute=0.0)
    source = generate_source(graph, cfg)
    assert "torch.nn.functional.softsign(" in source and " * 0.5)" in source
    torch.manual_seed(0)
    generated = build_model(graph, cfg, impl="generated").double()
    reference = build_model(graph, cfg, impl="reference").double()
    with torch.no_grad():
        for p in generated.arch_parameters():
            p.normal_(0.0, 1.5)
    reference.load_state_dict(generated.state_dict())
    tokens = torch.randint(0, 11, (4, 3))
    hidden = generated.init_hidden(3)
    generated.eval(), reference.eval()
    want, _ = reference(tokens, hidden)
    got, _ = generated(tokens, hidden)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-10)
    # the op matters: the same weights with softsign swapped for tanh give other logits
    other = load_graph_text(SPACE.format(ops="{tanh, softsign, halved, zero}", fixed="tanh"), "<extra>", SIZES)
    swapped = build_model(other, cfg, impl="reference").double()
    swapped.load_state_dict(reference.state_dict())
    assert not torch.allclose(swapped.eval()(tokens, hidden)[0], want)


def test_registered_op_is_counted_and_derived(softsign):
    text = SPACE.format(ops="{tanh, softsign, zero}", fixed="identity")
    graph = load_graph_text(text, "<extra>", SIZES)
    without = load_graph_text(SPACE.format(ops="{tanh, zero}", fixed="identity"), "<extra>", SIZES)
    # s1 keeps 1 of 2 edges, each with a nonzero op: 2 ops -> 4 architectures, 1 op -> 2 (zero is not counted)
    assert (architecture_count(graph), architecture_count(without)) == (4, 2)
    # a saturating op keeps its output (E * d floats per token) for backward
    assert node_saved_floats(graph, "s1") - node_saved_floats(without, "s1") == 2 * SIZES["nhid"]

    manifest = build_manifest(graph, ModelConfig(vocab=11))
    entry = manifest["arch"]["arch.s1_ops"]
    assert entry["ops"] == ["tanh", "softsign", "zero"]
    logits = torch.tensor([[0.0, 0.0, 9.0], [0.0, 5.0, 1.0]])  # edge 0 prefers zero, edge 1 softsign
    choices = derive_choices(manifest, {"arch.s1_ops": logits})
    assert [(e.label, e.op) for e in choices["s1"].edges] == [("h[t-1]", "softsign")]
    genotype = genotype_text(graph.space, choices, sizes=SIZES)
    assert "softsign" in genotype
    assert check_text(genotype, "<genotype>", SIZES)[1].ok


def test_registry_rejects_a_duplicate_or_a_template_without_one_operand():
    with pytest.raises(ValueError, match="already registered"):
        ops.register(ops.Op("tanh", lambda v: v, "{}"))
    with pytest.raises(ValueError, match="exactly one"):
        ops.Op("twice", lambda v: v, "({} + {})")


def test_registered_op_is_offered_by_the_language_server(softsign):
    from essdsl.lsp.analysis import op_doc, op_names

    assert "softsign" in op_names()
    assert op_doc("softsign") == ops.get("softsign").doc
    assert "neg" not in op_names()  # internal: what a - b means
