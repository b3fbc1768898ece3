"""The generated DARTS supernet equals an independent implementation shaped like
the official DARTS search code (essdsl/benchmark/official_darts.py, written
from the formulas): same logits and gradients for the same weights."""

from pathlib import Path

import pytest
import torch

from essdsl.benchmark.official_darts import OfficialDartsLM
from essdsl.check import load_graph
from essdsl.compile import ModelConfig, build_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("impl", ["generated", "reference"])
def test_darts_supernet_matches_official_shape(impl):
    torch.manual_seed(0)
    graph = load_graph(ROOT / "spaces/darts_rnn.space", {"ninp": 12, "nhid": 12})
    config = ModelConfig(vocab=25, dropout=0, dropouth=0, dropoutx=0, dropouti=0, dropoute=0, search=True)
    model = build_model(graph, config, impl=impl).train()
    with torch.no_grad():
        for p in model.arch_parameters():
            p.normal_()  # far from uniform, so a wrong op weight shows
    official = OfficialDartsLM(25, 12).train()
    result = official.load_state_dict(model.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    tokens = torch.randint(0, 25, (6, 3))
    ours, _ = model(tokens, model.init_hidden(3))
    theirs, _ = official(tokens, official.init_hidden(3))
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    ours.square().mean().backward()
    theirs.square().mean().backward()
    grads = dict(official.named_parameters())
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-5, rtol=1e-4, msg=name)
