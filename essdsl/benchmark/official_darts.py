"""The DARTS recurrent search step computed the way the official DARTS search code
shapes it, written here from the formulas (DESIGN.md §2, §5) as a benchmark row.

Per time step: s0 from one GEMM over [x, h]; then for each node i, ONE GEMM over
its i stacked predecessors with the node's matrix W_i, a Python loop over the
non-zero ops computing ``states + c * (f(g) - states)`` for every predecessor,
the op weights applied by broadcasting, BatchNorm(affine=False) on the node
state, and finally the mean of s1..s8.

Its parameters use essdsl's names for ``spaces/darts_rnn.space`` (``s0_w0``,
``s<i>_w``, ``arch.s<i>_ops``), so a state dict moves between this module and a
compiled supernet and the test suite can check that both compute the same
thing.  Dropouts are left out: the benchmark measures arithmetic.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

OPS = ("tanh", "relu", "sigmoid", "identity", "zero")
_ACTIVATION = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda v: v}


class OfficialDartsLM(nn.Module):
    def __init__(self, vocab: int, nhid: int, steps: int = 8):
        super().__init__()
        self.nhid = nhid
        self.steps = steps
        self.encoder = nn.Embedding(vocab, nhid)
        self.decoder_bias = nn.Parameter(torch.zeros(vocab))
        self.cell = nn.ParameterDict({"s0_w0": nn.Parameter(torch.empty(2 * nhid, 2 * nhid).uniform_(-0.04, 0.04))})
        for i in range(1, steps + 1):
            self.cell[f"s{i}_w"] = nn.Parameter(torch.empty(nhid, 2 * nhid).uniform_(-0.04, 0.04))
        self.arch = nn.ParameterDict(
            {f"s{i}_ops": nn.Parameter(1e-3 * torch.randn(i, len(OPS))) for i in range(1, steps + 1)}
        )
        self.norms = nn.ModuleDict({f"s{i}": nn.BatchNorm1d(nhid, affine=False) for i in range(1, steps + 1)})

    def init_hidden(self, batch_size: int) -> list:
        return [torch.zeros(1, batch_size, self.nhid)]

    def cell_step(self, x: torch.Tensor, h: torch.Tensor, probs: list) -> torch.Tensor:
        c0, g0 = torch.split(torch.cat([x, h], dim=-1) @ self.cell["s0_w0"], self.nhid, dim=-1)
        s0 = h + torch.sigmoid(c0) * (torch.tanh(g0) - h)
        states = s0.unsqueeze(0)
        for i in range(1, self.steps + 1):
            ch = (states.reshape(-1, self.nhid) @ self.cell[f"s{i}_w"]).view(i, -1, 2 * self.nhid)
            c, g = torch.split(ch, self.nhid, dim=-1)
            c = torch.sigmoid(c)
            s = torch.zeros_like(s0)
            for k, name in enumerate(OPS):
                if name == "zero":
                    continue
                unweighted = states + c * (_ACTIVATION[name](g) - states)
                s = s + torch.sum(probs[i - 1][:, k].unsqueeze(-1).unsqueeze(-1) * unweighted, dim=0)
            s = self.norms[f"s{i}"](s)
            states = torch.cat([states, s.unsqueeze(0)], dim=0)
        return torch.mean(states[-self.steps :], dim=0)

    def forward(self, tokens: torch.Tensor, hidden: list):
        probs = [F.softmax(self.arch[f"s{i}_ops"], dim=-1) for i in range(1, self.steps + 1)]
        emb = self.encoder(tokens)
        h = hidden[0][0]
        outputs = []
        for t in range(tokens.size(0)):
            h = self.cell_step(emb[t], h, probs)
            outputs.append(h)
        out = torch.stack(outputs)
        logits = out @ self.encoder.weight.t() + self.decoder_bias
        return logits, [h.unsqueeze(0)]
