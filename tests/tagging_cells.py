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


class TorchBiLSTMEncoder(nn.Module):
    """The two directions of a tagger as one ``torch.nn.LSTM(bidirectional=True)``
    over packed sequences: torch's own padding handling, an oracle for the tagger's."""

    def __init__(self, d_in: int, nhid: int):
        super().__init__()
        self.lstm = nn.LSTM(d_in, nhid, bidirectional=True)

    def forward(self, x, lengths):
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, total_length=x.shape[0])
        return out


def copy_lstm_into_genotype_cell(lstm: nn.LSTM, cell: nn.Module, suffix: str = "") -> None:
    """genotypes/lstm.space's parameters from one direction of ``lstm``: node ``i``'s
    ``linear(x[t], h[t-1])`` is ``[W_ih | W_hh]`` of gate i, transposed; its bias
    ``b_ih + b_hh`` (torch stacks the gates as i, f, g, o)."""
    nhid = lstm.hidden_size
    with torch.no_grad():
        for k, gate in enumerate("ifgo"):
            rows = slice(k * nhid, (k + 1) * nhid)
            w_ih = getattr(lstm, f"weight_ih_l0{suffix}")[rows]
            w_hh = getattr(lstm, f"weight_hh_l0{suffix}")[rows]
            getattr(cell.cell, f"{gate}_w0").copy_(torch.cat([w_ih, w_hh], dim=1).t())
            bias = getattr(lstm, f"bias_ih_l0{suffix}")[rows] + getattr(lstm, f"bias_hh_l0{suffix}")[rows]
            getattr(cell.cell, f"{gate}_b0").copy_(bias)
