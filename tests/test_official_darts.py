"""The compiled DARTS supernet and the DARTS_V1/V2 genotypes equal the official
DARTS recurrent model (quark0/darts rnn/, re-implemented from its code in
essdsl/benchmark/official_darts.py): same log-probabilities, hidden state,
gradients and BatchNorm statistics for the same weights, in float64, in eval
mode and in training mode with every dropout on and the same masks."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from essdsl.benchmark.official_darts import (
    DARTS_V1,
    DARTS_V2,
    OfficialDartsLM,
    essdsl_named,
    load_essdsl_state,
    variational_mask,
)
from essdsl.lang.check import load_graph
from essdsl.compile import ModelConfig, build_model

ROOT = Path(__file__).resolve().parent.parent
V, N, T, B = 23, 10, 5, 4
DROPOUTS = dict(dropout=0.5, dropouth=0.3, dropoutx=0.4, dropouti=0.2, dropoute=0.1)
MODELS = {
    "supernet": ("spaces/darts_rnn.space", None),
    "darts_v1": ("genotypes/darts_v1.space", DARTS_V1),
    "darts_v2": ("genotypes/darts_v2.space", DARTS_V2),
}


def shared_masks(dtype) -> dict:
    """One set of masks for both models, drawn the official way, under essdsl's names."""
    g = torch.Generator().manual_seed(7)
    like = torch.empty((), dtype=dtype)

    def bern(shape, p):
        return torch.bernoulli(torch.full(shape, 1 - p, dtype=dtype), generator=g) / (1 - p)

    torch.manual_seed(8)
    return {
        "dropoute": bern((V, 1), DROPOUTS["dropoute"]),
        "dropouti": bern((1, B, N), DROPOUTS["dropouti"]),
        "dropoutx.x": variational_mask(B, N, DROPOUTS["dropoutx"], like),
        f"dropouth.{N}": variational_mask(B, N, DROPOUTS["dropouth"], like),
        "dropout": bern((1, B, N), DROPOUTS["dropout"]),
    }


def pair(which: str, impl: str, dtype=torch.float64):
    path, genotype = MODELS[which]
    torch.manual_seed(0)
    graph = load_graph(ROOT / path, {"ninp": N, "nhid": N})
    ours = build_model(graph, ModelConfig(vocab=V, search=genotype is None, **DROPOUTS), impl=impl).to(dtype)
    with torch.no_grad():
        for p in ours.arch_parameters():
            p.normal_()  # far from uniform, so a wrong op weight shows
    official = OfficialDartsLM(V, N, genotype=genotype, **DROPOUTS).to(dtype)
    load_essdsl_state(official, ours.state_dict())
    return ours, official


def run_both(ours, official, training: bool, segments: int = 2):
    """Two BPTT segments (hidden carried), loss backward after each; returns per-model results."""
    dtype = official.encoder.weight.dtype
    torch.manual_seed(3)
    tokens = torch.randint(0, V, (segments, T, B))
    targets = torch.randint(0, V, (segments, T, B))
    masks = shared_masks(dtype) if training else None
    ours.train(training), official.train(training)
    ours.mask_override = masks or {}
    results = []
    for model, is_official in ((ours, False), (official, True)):
        model.zero_grad()
        hidden = model.init_hidden(B)
        outs = []
        for s in range(segments):
            if is_official:
                log_prob, hidden = model(tokens[s], hidden, masks)
            else:
                logits, hidden = model(tokens[s], hidden)
                log_prob = F.log_softmax(logits, dim=-1)  # the artifact returns logits (semantics.md)
            F.nll_loss(log_prob.reshape(-1, V), targets[s].reshape(-1)).backward()
            hidden = [h.detach() for h in hidden]
            outs.append(log_prob.detach())
        results.append((outs, hidden))
    return results


def compare(ours, official, training: bool, tol: float):
    (o_out, o_hidden), (f_out, f_hidden) = run_both(ours, official, training)
    for a, b in zip(o_out, f_out):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)
    torch.testing.assert_close(o_hidden[0], f_hidden[0], atol=tol, rtol=tol)
    theirs = essdsl_named(official, {n: p.grad for n, p in official.named_parameters()})
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name], atol=tol, rtol=tol, msg=lambda m: f"{name}: {m}")
    buffers = essdsl_named(official, dict(official.named_buffers()))
    for name, b in ours.named_buffers():
        torch.testing.assert_close(b, buffers[name], atol=tol, rtol=tol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("training", [True, False], ids=["train-dropouts", "eval"])
@pytest.mark.parametrize("which", list(MODELS))
def test_generated_equals_official_float64(which, training):
    ours, official = pair(which, "generated")
    if training is False:
        run_both(ours, official, training=True)  # first move the BatchNorm statistics away from 0/1
    compare(ours, official, training, tol=1e-12)


@pytest.mark.parametrize("which", ["supernet", "darts_v2"])
def test_reference_interpreter_equals_official_float64(which):
    ours, official = pair(which, "reference")
    compare(ours, official, True, tol=1e-12)


def test_generated_equals_official_float32_to_rounding():
    ours, official = pair("supernet", "generated", dtype=torch.float32)
    compare(ours, official, True, tol=2e-5)


def test_supernet_layout_is_the_official_one():
    """One shared BatchNorm (s0..s8), no per-node norms; the arch tensor maps row for row."""
    ours, official = pair("supernet", "generated")
    names = set(ours.state_dict())
    assert {"shared_norm.running_mean", "shared_norm.running_var"} <= names
    assert not [n for n in names if n.startswith("norms.")]
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in official.parameters())
    back = essdsl_named(official, dict(official.named_parameters()))
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p, back[name], atol=0, rtol=0)


def test_official_initialisation_ranges():
    """Embedding (tied decoder) and cell weights within +-0.04 (INITRANGE), decoder bias 0, arch logits ~1e-3."""
    torch.manual_seed(0)
    graph = load_graph(ROOT / "spaces/darts_rnn.space", {"ninp": 64, "nhid": 64})
    model = build_model(graph, ModelConfig(vocab=500), impl="generated")
    emb = model.encoder.weight
    assert emb.abs().max() <= 0.04 and emb.abs().max() > 0.039  # uniform(+-0.04) reaches the edge
    assert torch.all(model.decoder_bias == 0)
    assert max(p.abs().max() for n, p in model.named_parameters() if n.startswith("cell.")) <= 0.04
    arch = torch.cat([p.reshape(-1) for p in model.arch_parameters()])
    assert 0.5e-3 < arch.std() < 2e-3
