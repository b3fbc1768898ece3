"""spaces/two_input_rnn.space: the two-input backbone checks, searches a few steps on the
built-in corpus, derives a genotype that checks; and its two-input product op is the
LSTM/GRU gating, checked against a hand-written step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from essdsl.compile import ModelConfig, build_model
from essdsl.lang.check import check_text, load_graph
from essdsl.lang.graph import MixedSpec

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "spaces" / "two_input_rnn.space"


def test_every_node_reads_two_inputs_and_may_multiply_them():
    graph = load_graph(SPACE, {"ninp": 16, "nhid": 16})
    nodes = graph.mixed_nodes()
    assert nodes, "the backbone has mixed nodes"
    for spec in nodes:
        assert isinstance(spec, MixedSpec)
        assert spec.keep == 2 and len(spec.edges) >= 2, spec.name
        assert set(spec.combine) == {"sum", "product"}, spec.name
        assert "sigmoid" in spec.op_names and "tanh" in spec.op_names


def test_search_a_few_steps_derives_a_checked_two_input_genotype(tmp_path):
    run = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "essdsl", "search", str(SPACE), "--ninp", "16", "--nhid", "16", "--batch-size", "8",
         "--bptt", "8", "--threads", "1", "--synthetic-tokens", "3000", "--max-steps", "4", "--epochs", "1", "--out", str(run)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "ESSDSL_FINAL_EPOCHS": "0"},
    )
    assert result.returncode == 0, result.stderr
    graph, report = check_text((run / "genotype.space").read_text(), sizes={"ninp": 16, "nhid": 16})
    assert report.ok, report.diagnostics
    assert graph.kind == "genotype"
    for spec in graph.mixed_nodes():
        assert len(spec.edges) == 2 and len(spec.combine) == 1  # two inputs, one two-input op


GATE = """genotype gate
cell {
  input x[t] : ninp
  state h[t-1] : nhid
  node s1 = mix { from x[t] ops {sigmoid} from h[t-1] ops {tanh} transform project combine product keep 2 dim nhid }
  h[t] = highway(tanh, s1, carry = h[t-1])
}
"""


def test_a_product_node_is_the_gate_of_lstm_and_gru():
    """s1 = sigmoid(x W0) * tanh(h W1): one step of the compiled genotype against torch ops."""
    torch.manual_seed(0)
    graph, report = check_text(GATE, sizes={"ninp": 6, "nhid": 5})
    assert report.ok, report.diagnostics
    model = build_model(graph, ModelConfig(vocab=7, search=False)).double().eval()
    params = dict(model.named_parameters())
    tokens = torch.tensor([[1, 4, 2]])  # (T=1, B=3)
    h0 = torch.randn(1, 3, 5, dtype=torch.float64)
    logits, _ = model(tokens, [h0])
    x = params["encoder.weight"][tokens[0]]
    s1 = torch.sigmoid(x @ params["cell.s1_w0"]) * torch.tanh(h0[0] @ params["cell.s1_w1"])
    k, g = (s1 @ params["cell.h_t_w0"]).chunk(2, dim=-1)
    h1 = h0[0] + torch.sigmoid(k) * (torch.tanh(g) - h0[0])
    expected = h1 @ params["decoder_weight"].T + params["decoder_bias"]
    torch.testing.assert_close(logits.reshape(3, 7), expected, rtol=0, atol=1e-12)
