"""Test cells that keep essdsl's cell contract without compiling a genotype."""

import torch
from torch import nn


class TorchLSTMCell(nn.Module):
    """torch.nn.LSTM behind ``out, hidden = cell(x, hidden)`` / ``init_hidden(B)``,
    hidden as essdsl lays it out: one ``(1, B, nhid)`` tensor per state (h, c)."""

    def __init__(self, d_in: int, nhid: int):
        super().__init__()
        self.lstm = nn.LSTM(d_in, nhid)
        self.nhid = nhid

    def init_hidden(self, batch_size: int):
        w = self.lstm.weight_hh_l0
        return [w.new_zeros(1, batch_size, self.nhid), w.new_zeros(1, batch_size, self.nhid)]

    def forward(self, x, hidden):
        out, (h, c) = self.lstm(x, (hidden[0], hidden[1]))
        return out, [h, c]


class ArchCell(nn.Module):
    """A two-op mixture with architecture weights ``arch.mix`` (a stand-in supernet cell)."""

    def __init__(self, d_in: int, nhid: int):
        super().__init__()
        self.cell = nn.Module()
        self.cell.w = nn.Parameter(torch.randn(d_in + nhid, nhid) * 0.1)
        self.arch = nn.Module()
        self.arch.mix = nn.Parameter(torch.zeros(2))
        self.nhid = nhid

    def init_hidden(self, batch_size: int):
        return [self.cell.w.new_zeros(1, batch_size, self.nhid)]

    def forward(self, x, hidden):
        h = hidden[0][0]
        weights = torch.softmax(self.arch.mix, 0)
        outs = []
        for t in range(x.shape[0]):
            z = torch.cat([x[t], h], -1) @ self.cell.w
            h = weights[0] * torch.tanh(z) + weights[1] * torch.relu(z)
            outs.append(h)
        return torch.stack(outs), [h.unsqueeze(0)]
