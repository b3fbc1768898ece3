"""Search health: the measures of essdsl.nas.health on hand-made architecture weights,
and the warnings a failed search ends with (run as a user runs it, output piped)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from essdsl.lang.check import load_graph
from essdsl.compile import ModelConfig, build_manifest, build_model
from essdsl.nas.health import arch_health, health_messages, search_health

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--ninp", "16", "--nhid", "16", "--batch-size", "16", "--bptt", "10", "--threads", "1", "--synthetic-tokens", "4000"]


@pytest.fixture(scope="module")
def darts():
    graph = load_graph(ROOT / "spaces" / "darts_rnn.space", {"ninp": 8, "nhid": 8})
    cfg = ModelConfig(vocab=20, search=True)
    torch.manual_seed(0)
    model = build_model(graph, cfg)
    manifest = build_manifest(graph, cfg, model)
    arch = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("arch.")}
    return manifest, arch


def test_uniform_weights_are_reported_as_unlearned(darts):
    manifest, arch = darts
    zeros = {n: torch.zeros_like(t) for n, t in arch.items()}
    health = arch_health(manifest, zeros, zeros)
    assert health["entropy_ratio"] == pytest.approx(1.0)
    assert health["kept_over_uniform"] == pytest.approx(1.0)
    assert health["margin"] == pytest.approx(0.0)
    assert health["change"] == 0.0
    report = search_health(manifest, zeros, zeros, valid_ppl=50.0, unigram_ppl=40.0)
    assert report["warnings"] == ["no-learning", "below-unigram"]
    assert report["beats_unigram"] is False
    messages = health_messages(report, 50.0)
    assert "--arch-lr" in messages[0] and "does NOT beat the unigram model" in messages[1]


def test_decided_weights_and_collapse_onto_identity(darts):
    manifest, arch = darts
    start = {n: torch.zeros_like(t) for n, t in arch.items()}
    decided = {}
    for name, t in arch.items():
        entry = manifest["arch"][name]
        logits = torch.zeros_like(t)
        if entry["kind"] == "ops":
            logits[:, entry["ops"].index("identity")] = 5.0  # every edge prefers identity strongly
        decided[name] = logits
    health = search_health(manifest, decided, start, valid_ppl=10.0, unigram_ppl=40.0)
    # edge_softmax over 5 ops: identity gets e^5 / (e^5 + 4) of each row
    theta = math.exp(5) / (math.exp(5) + 4)
    assert health["kept_over_uniform"] == pytest.approx(5 * theta, abs=1e-3)
    assert health["change"] == pytest.approx(5 * (theta - 0.2), abs=1e-3)
    assert health["entropy_ratio"] < 0.5
    assert health["op_nodes"] == 8 and len(health["parameter_free"]) == 8
    assert health["warnings"] == ["collapse"] and health["beats_unigram"] is True


def test_half_the_nodes_on_identity_is_a_collapse_one_is_not(darts):
    manifest, arch = darts
    start = {n: torch.zeros_like(t) for n, t in arch.items()}

    def prefer_identity(nodes):
        out = {}
        for name, t in arch.items():
            entry = manifest["arch"][name]
            logits = torch.zeros_like(t)
            favourite = "identity" if entry["node"] in nodes else "tanh"
            logits[:, entry["ops"].index(favourite)] = 5.0
            out[name] = logits
        return out

    half = search_health(manifest, prefer_identity({"s4", "s5", "s6", "s7"}), start, 10.0, 40.0)
    assert half["parameter_free"] == ["s4", "s5", "s6", "s7"] and half["warnings"] == ["collapse"]
    one = search_health(manifest, prefer_identity({"s4"}), start, 10.0, 40.0)
    assert one["parameter_free"] == ["s4"] and one["warnings"] == []


@pytest.mark.parametrize("name", ["darts_rnn", "idarts_rnn", "ess_joint"])
def test_every_shipped_space_measures_uniform_at_zero_and_moves_with_its_weights(name):
    graph = load_graph(ROOT / "spaces" / f"{name}.space", {"ninp": 8, "nhid": 8})
    cfg = ModelConfig(vocab=20, search=True)
    torch.manual_seed(1)
    model = build_model(graph, cfg)
    manifest = build_manifest(graph, cfg, model)
    arch = {n: p.detach().clone() for n, p in model.named_parameters() if n.startswith("arch.")}
    zeros = {n: torch.zeros_like(t) for n, t in arch.items()}
    flat = arch_health(manifest, zeros, zeros)
    assert flat["entropy_ratio"] == pytest.approx(1.0) and flat["kept_over_uniform"] == pytest.approx(1.0)
    moved = {n: torch.randn_like(t) * 3 for n, t in arch.items()}
    health = arch_health(manifest, moved, zeros)
    assert 0 < health["entropy_ratio"] < 1 and health["kept_over_uniform"] > 1 and health["change"] > 0.5 and health["margin"] > 0
