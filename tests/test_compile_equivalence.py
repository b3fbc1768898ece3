"""The generated module computes what the edge-by-edge reference interpreter computes:
logits, carried hidden values and the gradients of every weight and arch parameter."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from essdsl.lang.check import load_graph
from essdsl.compile import ModelConfig, build_model

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("spaces/*.space"), *ROOT.glob("genotypes/*.space")])
NO_DROPOUT = dict(dropout=0.0, dropouth=0.0, dropoutx=0.0, dropouti=0.0, dropoute=0.0)
SIZES = {"ninp": 8, "nhid": 8}


def pair(graph, search: bool, vocab: int = 20, seed: int = 0, **dropouts):
    """A generated model with random (far from uniform) arch logits, and a reference with its state."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab=vocab, search=search, **{**NO_DROPOUT, **dropouts})
    generated = build_model(graph, cfg, impl="generated")
    reference = build_model(graph, cfg, impl="reference")
    with torch.no_grad():
        for p in generated.arch_parameters():
            p.normal_(0.0, 1.5)
    reference.load_state_dict(generated.state_dict())
    return generated, reference


def assert_same(generated, reference, vocab=20, T=4, B=3, seed=1, training=True):
    torch.manual_seed(seed)
    tokens = torch.randint(0, vocab, (T, B))
    hidden = [0.3 * torch.randn_like(h) for h in generated.init_hidden(B)]
    assert [h.shape for h in hidden] == [h.shape for h in reference.init_hidden(B)]
    outputs = []
    for model in (generated, reference):
        model.train(training)
        model.zero_grad()
        torch.manual_seed(seed + 1)  # same dropout masks when dropouts are on
        logits, new_hidden = model(tokens, hidden)
        assert logits.shape == (T, B, vocab)
        outputs.append((logits, new_hidden))
    weight = torch.randn_like(outputs[0][0])
    for logits, new_hidden in outputs:
        loss = (logits * weight).sum() + sum((0.1 * h).sum() for h in new_hidden)
        loss.backward()
    (lg, hg), (lr, hr) = outputs
    torch.testing.assert_close(lg, lr, atol=1e-5, rtol=1e-4)
    for a, b in zip(hg, hr, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    gp, rp = dict(generated.named_parameters()), dict(reference.named_parameters())
    assert gp.keys() == rp.keys()
    for name in gp:
        assert gp[name].shape == rp[name].shape, name
        if rp[name].grad is None:
            assert gp[name].grad is None or not gp[name].grad.any(), name
            continue
        assert gp[name].grad is not None, name
        torch.testing.assert_close(gp[name].grad, rp[name].grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    return outputs


@pytest.mark.parametrize("search", [True, False], ids=["supernet", "discrete"])
@pytest.mark.parametrize("path", SHIPPED)
def test_generated_matches_reference_on_shipped_files(path, search):
    graph = load_graph(ROOT / path, sizes=SIZES)
    generated, reference = pair(graph, search)
    # float64: batchnorm over a batch of 3 followed by Hadamard products (two_input_rnn)
    # turns float32 rounding of two summation orders into differences of ~3e-5
    generated.double(), reference.double()
    assert_same(generated, reference)
    if search and graph.kind == "space":
        assert generated.arch_parameters(), "a space compiles to a supernet with arch params"
    if graph.kind == "genotype":
        assert not [n for n, _ in generated.named_parameters() if n.startswith("arch.")]


@pytest.mark.parametrize(
    "path, norm",
    [("spaces/ess_joint.space", "own"), ("spaces/darts_rnn.space", "shared")],  # per-node norms; one shared by s0..s8
)
def test_eval_mode_uses_running_statistics_identically(path, norm):
    graph = load_graph(ROOT / path, sizes=SIZES)
    generated, reference = pair(graph, True)
    assert_same(generated, reference)  # one train step updates the running stats of both
    if norm == "shared":
        torch.testing.assert_close(generated.shared_norm.running_mean, reference.shared_norm.running_mean)
    else:
        for node in ("hhat", "s3"):
            torch.testing.assert_close(getattr(generated.norms, node).running_mean, reference.norms[node].running_mean)
    tokens = torch.randint(0, 20, (3, 2))
    generated.eval(), reference.eval()
    with torch.no_grad():
        lg, _ = generated(tokens, generated.init_hidden(2))
        lr, _ = reference(tokens, reference.init_hidden(2))
    torch.testing.assert_close(lg, lr, atol=1e-5, rtol=1e-4)


def test_dropouts_draw_the_same_masks_in_both_implementations():
    graph = load_graph(ROOT / "spaces/ess_joint.space", sizes=SIZES)
    generated, reference = pair(graph, True, dropout=0.5, dropouth=0.3, dropoutx=0.4, dropouti=0.2, dropoute=0.1)
    (lg, _), _ = assert_same(generated, reference)
    generated.eval()
    torch.manual_seed(2)
    tokens = torch.randint(0, 20, (4, 3))
    with torch.no_grad():
        a, _ = generated(tokens, generated.init_hidden(3))
        b, _ = generated(tokens, generated.init_hidden(3))
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # dropouts off in eval


def test_hidden_carries_windows_across_segments():
    graph = load_graph(ROOT / "spaces/ess_joint.space", sizes=SIZES)
    generated, reference = pair(graph, False)
    tokens = torch.randint(0, 20, (6, 2))
    generated.eval()
    with torch.no_grad():
        whole, _ = generated(tokens, generated.init_hidden(2))
        first, hidden = generated(tokens[:2], generated.init_hidden(2))
        second, _ = generated(tokens[2:], hidden)
    torch.testing.assert_close(torch.cat([first, second]), whole, atol=1e-6, rtol=1e-5)
    assert [tuple(h.shape) for h in hidden] == [(3, 2, 8), (1, 2, 8)]  # h[t-1..t-3], x[t-1]


def test_untied_decoder_when_sizes_differ():
    graph = load_graph(ROOT / "spaces/darts_rnn.space", sizes={"ninp": 6, "nhid": 8})
    generated, reference = pair(graph, True)
    assert dict(generated.named_parameters())["decoder_weight"].shape == (20, 8)
    assert_same(generated, reference)


def test_neg_of_a_sum_negates_the_whole_sum():
    # the generated code once wrote neg(a + h[t-1]) as `-a + h_tm1` (its operand's
    # parentheses were dropped); the reference negated the sum
    from essdsl.lang.check import check_text

    text = (
        "space negated\ncell {\n  input x[t] : ninp\n  state h[t-1] : nhid\n"
        "  node a = linear(x[t], h[t-1])\n  node n = neg(a + h[t-1])\n  h[t] = tanh(n)\n}\n"
    )
    graph, report = check_text(text, "<neg>", SIZES)
    assert report.ok, report.render()
    generated, reference = pair(graph, search=False)
    assert_same(generated.double(), reference.double())
