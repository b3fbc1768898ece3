"""The cell alone (``build_cell``, ``essdsl compile --target cell``): the generated cell
computes what the reference cell computes; a language model assembled from the cell
artifact and a small head gives today's LM artifact's logits; the artifact needs only
torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
import torch.nn.functional as F
from torch import nn

from essdsl.compile import ModelConfig, build_cell, build_manifest, build_model, save_artifact
from essdsl.compile.config import embedding_dim, mask_keys
from essdsl.lang.check import load_graph, load_graph_text
from test_compile_random_spaces import spaces

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(str(p.relative_to(ROOT)) for p in [*ROOT.glob("spaces/*.space"), *ROOT.glob("genotypes/*.space")])
SIZES = {"ninp": 8, "nhid": 8}
VOCAB = 17


def _cell_pair(graph, search: bool, **config):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab=VOCAB, search=search, **config)
    # float64: batchnorm over a batch of 3 amplifies float32 rounding in the gradients
    generated = build_cell(graph, cfg, impl="generated").double()
    reference = build_cell(graph, cfg, impl="reference").double()
    with torch.no_grad():
        for p in generated.arch_parameters():
            p.normal_(0.0, 1.5)  # far from uniform, so a wrong softmax shows
    reference.load_state_dict(generated.state_dict())
    return generated, reference


def assert_cells_agree(graph, search: bool, T: int = 4, B: int = 3):
    """Outputs, carried hidden values and every gradient of the generated and the reference cell, in train mode."""
    generated, reference = _cell_pair(graph, search, dropouth=0.3, dropoutx=0.4)
    ninp = embedding_dim(graph)
    torch.manual_seed(1)
    x = torch.randn(T, B, ninp, dtype=torch.float64)
    hidden = [0.3 * torch.randn_like(h) for h in generated.init_hidden(B)]
    weight = torch.randn(T, B, graph.dims[graph.output], dtype=torch.float64)
    results = []
    for cell in (generated, reference):
        cell.train()
        cell.zero_grad()
        torch.manual_seed(2)  # the same variational masks in both
        out, new_hidden = cell(x, hidden)
        assert out.shape == (T, B, graph.dims[graph.output]) and out.dtype == torch.float64
        ((out * weight).sum() + sum((0.1 * h).sum() for h in new_hidden)).backward()
        results.append((out, new_hidden, {n: p.grad for n, p in cell.named_parameters()}))
    (og, hg, gg), (orf, hr, gr) = results
    torch.testing.assert_close(og, orf, atol=1e-9, rtol=1e-7)
    for a, b in zip(hg, hr, strict=True):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)
    assert gg.keys() == gr.keys()
    for name, grad in gr.items():
        if grad is None:
            assert gg[name] is None or not gg[name].any(), name
        else:
            torch.testing.assert_close(gg[name], grad, atol=1e-9, rtol=1e-7, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("search", [True, False], ids=["supernet", "discrete"])
@pytest.mark.parametrize("path", SHIPPED)
def test_generated_cell_matches_reference_cell(path, search):
    assert_cells_agree(load_graph(ROOT / path, sizes=SIZES), search)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spaces(), st.booleans())
def test_generated_cell_matches_reference_cell_on_random_spaces(space, search):
    text, sizes = space
    assert_cells_agree(load_graph_text(text, "<random>", sizes=sizes), search, T=3)


def test_cell_parameters_are_the_models_minus_the_head():
    graph = load_graph(ROOT / "spaces/darts_rnn.space", sizes=SIZES)
    cfg = ModelConfig(vocab=VOCAB)
    model, cell = build_model(graph, cfg), build_cell(graph, cfg)
    head = {"encoder.weight", "decoder_bias", "decoder_weight"}
    model_keys = set(model.state_dict())
    assert set(cell.state_dict()) == model_keys - head
    assert all(k.split(".")[0] in ("cell", "arch", "norms", "shared_norm") for k in cell.state_dict())


class LMHead(nn.Module):
    """Today's LM around a cell, written independently of the generator: embedding
    (dropoute rows, dropouti locked), the cell, locked output dropout, tied or separate decoder."""

    def __init__(self, cell, vocab: int, ninp: int, nout: int, tied: bool, dropout: float, dropouti: float, dropoute: float):
        super().__init__()
        self.body = cell
        self.encoder = nn.Embedding(vocab, ninp)
        self.decoder_weight = None if tied else nn.Parameter(torch.empty(vocab, nout))
        self.decoder_bias = nn.Parameter(torch.zeros(vocab))
        self.dropout, self.dropouti, self.dropoute = dropout, dropouti, dropoute
        self.masks: dict = {}  # fixed masks for train mode (key -> tensor)

    def forward(self, tokens, hidden):
        weight = self.encoder.weight
        if self.training and self.dropoute > 0:
            weight = weight * self.masks["dropoute"]
        x = F.embedding(tokens, weight)
        if self.training and self.dropouti > 0:
            x = x * self.masks["dropouti"]
        out, hidden = self.body(x, hidden)
        if self.training and self.dropout > 0:
            out = out * self.masks["dropout"]
        decoder = self.encoder.weight if self.decoder_weight is None else self.decoder_weight
        return out @ decoder.t() + self.decoder_bias, hidden


def _masks(graph, model, B: int) -> dict:
    """One fixed dropout mask per key of the LM (head and cell), as mask_override takes them."""
    torch.manual_seed(5)
    ninp, nout = model.encoder.weight.shape[1], graph.dims[graph.output]
    shapes = {"dropoute": (VOCAB, 1), "dropouti": (1, B, ninp), "dropout": (1, B, nout)}
    for key in mask_keys(graph):
        kind, _, rest = key.partition(".")
        shapes[key] = (B, graph.dims[rest] if kind == "dropoutx" else int(rest))
    return {k: torch.bernoulli(torch.full(s, 0.7)) / 0.7 for k, s in shapes.items()}


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*deprecated:DeprecationWarning")
@pytest.mark.parametrize(
    "path, sizes", [("spaces/darts_rnn.space", {"ninp": 6, "nhid": 8}), ("spaces/ess_joint.space", SIZES)], ids=["untied", "tied"]
)
def test_lm_from_cell_artifact_and_head_gives_the_lm_artifacts_logits(path, sizes, tmp_path):
    graph = load_graph(ROOT / path, sizes=sizes)
    dropouts = dict(dropout=0.5, dropouth=0.3, dropoutx=0.4, dropouti=0.2, dropoute=0.1)
    cfg = ModelConfig(vocab=VOCAB, **dropouts)
    torch.manual_seed(3)
    model = build_model(graph, cfg)
    with torch.no_grad():
        for p in model.arch_parameters():
            p.normal_(0.0, 1.5)
    cell = build_cell(graph, cfg)
    cell.load_state_dict({k: v for k, v in model.state_dict().items() if k in cell.state_dict()})
    save_artifact(model, tmp_path / "lm.pt")
    save_artifact(cell, tmp_path / "cell.pt")
    lm_artifact = torch.jit.load(str(tmp_path / "lm.pt"))
    cell_artifact = torch.jit.load(str(tmp_path / "cell.pt"))

    tied = "decoder_weight" not in model.state_dict()
    assert tied == (path == "spaces/ess_joint.space")
    ninp, nout = model.encoder.weight.shape[1], graph.dims[graph.output]
    head = LMHead(cell_artifact, VOCAB, ninp, nout, tied, **{k: dropouts[k] for k in ("dropout", "dropouti", "dropoute")})
    head.load_state_dict({k: v for k, v in model.state_dict().items() if k in head.state_dict() and not k.startswith("body.")}, strict=False)
    assert torch.equal(head.encoder.weight, model.encoder.weight)

    B = 3
    torch.manual_seed(4)
    tokens = torch.randint(0, VOCAB, (5, B))
    hidden = [0.3 * torch.randn_like(h) for h in lm_artifact.init_hidden(B)]
    assert [h.shape for h in cell_artifact.init_hidden(B)] == [h.shape for h in hidden]

    lm_artifact.eval(), head.eval()
    want, want_hidden = lm_artifact(tokens, hidden)
    got, got_hidden = head(tokens, hidden)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    for a, b in zip(got_hidden, want_hidden, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)

    masks = _masks(graph, model, B)  # train mode: the same masks on both sides
    lm_artifact.mask_override = masks
    cell_artifact.mask_override = {k: v for k, v in masks.items() if k.startswith(("dropouth.", "dropoutx."))}
    head.masks = masks
    lm_artifact.train(), head.train()
    want, _ = lm_artifact(tokens, hidden)
    got, _ = head(tokens, hidden)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(want, lm_artifact.eval()(tokens, hidden)[0]), "the masks must change the logits"


def test_cell_artifact_loads_and_runs_without_essdsl(tmp_path):
    graph = load_graph(ROOT / "spaces/darts_rnn.space", sizes=SIZES)
    cell = build_cell(graph, ModelConfig(vocab=VOCAB))
    save_artifact(cell, tmp_path / "cell.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["essdsl"] = None  # importing essdsl now raises ImportError
        import torch
        cell = torch.jit.load({str(tmp_path / "cell.pt")!r})
        hidden = cell.init_hidden(2)
        out, hidden = cell(torch.randn(3, 2, {SIZES["ninp"]}), hidden)
        assert "essdsl" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
        print(tuple(out.shape), [tuple(h.shape) for h in hidden])
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"(3, 2, {SIZES['nhid']}) [(1, 2, {SIZES['nhid']})]"


def test_cell_manifest_describes_the_cell_not_the_head():
    graph = load_graph(ROOT / "spaces/darts_rnn.space", sizes=SIZES)
    cfg = ModelConfig(vocab=VOCAB)
    cell = build_cell(graph, cfg)
    manifest = build_manifest(graph, cfg, cell, target="cell")
    lm_manifest = build_manifest(graph, cfg, build_model(graph, cfg))
    assert manifest["format"] == "essdsl-cell/1" and manifest["target"] == "cell"
    assert (manifest["input_size"], manifest["output_size"]) == (SIZES["ninp"], SIZES["nhid"])
    assert "vocab" not in manifest["sizes"] and "vocab" not in manifest["config"] and "decoder" not in manifest
    assert manifest["arch"] == lm_manifest["arch"] and manifest["hidden"] == lm_manifest["hidden"]
    assert manifest["parameters"]["total"] == sum(p.numel() for p in cell.parameters())


def _essdsl(*args, cwd):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "essdsl", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*deprecated:DeprecationWarning")
def test_cli_compile_target_cell_end_to_end(tmp_path):
    space = ROOT / "spaces/darts_rnn.space"
    done = _essdsl("compile", str(space), "--target", "cell", "--ninp", "8", "--nhid", "8", "-o", "out/cell.pt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "cell of the supernet 'darts_rnn'" in done.stdout
    manifest = json.loads((tmp_path / "out/cell.manifest.json").read_text())
    assert manifest["format"] == "essdsl-cell/1" and manifest["artifact"] == "torchscript"
    cell = torch.jit.load(str(tmp_path / "out/cell.pt"))
    out, hidden = cell(torch.randn(2, 4, 8), cell.init_hidden(4))
    assert out.shape == (2, 4, 8) and [h.shape for h in hidden] == [(1, 4, 8)]
    assert set(dict(cell.named_parameters())) == set(manifest["arch"]) | {p["name"] for p in manifest["cell_parameters"] if p["role"] != "arch"}

    source = _essdsl("compile", str(space), "--target", "cell", "--emit-python", cwd=tmp_path)
    assert source.returncode == 0 and "class DartsRnnCell(nn.Module)" in source.stdout and "Embedding" not in source.stdout

    bad = _essdsl("compile", str(space), "--target", "tagger", cwd=tmp_path)
    assert bad.returncode != 0 and "--target must be 'lm' or 'cell'" in bad.stderr + bad.stdout


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*torch.jit.load.*deprecated:DeprecationWarning")
def test_cli_compile_target_cell_exports_a_trained_runs_cell(tmp_path):
    run = tmp_path / "trained"
    small = ["--ninp", "16", "--nhid", "16", "--batch-size", "16", "--bptt", "10", "--threads", "1", "--synthetic-tokens", "4000"]
    t = _essdsl("train", str(ROOT / "genotypes/darts_v1.space"), *small, "--max-steps", "2", "--epochs", "1", "--no-compile",
                "--out", str(run), cwd=tmp_path)  # fmt: skip
    assert t.returncode == 0, t.stderr
    c = _essdsl("compile", str(ROOT / "genotypes/darts_v1.space"), "--target", "cell", "--weights", str(run / "model.pt"),
                "-o", "cell.pt", cwd=tmp_path)  # fmt: skip
    assert c.returncode == 0, c.stderr
    cell = torch.jit.load(str(tmp_path / "cell.pt"))
    assert not cell.training
    state = torch.load(run / "model.pt", weights_only=True)
    weights = state.get("best_model") or state["model"]
    params = dict(cell.named_parameters())
    assert params and all(torch.equal(p, weights[name]) for name, p in params.items())
