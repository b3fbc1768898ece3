"""The forecaster around a recurrent cell.

Any module with the cell contract works:

    hidden = cell.init_hidden(B)          # List[Tensor]
    out, hidden = cell(x, hidden)         # x (T, B, d_in) -> out (T, B, d_out)

(essdsl's compiled cells, :func:`essdsl.compile.build_cell`, and
:class:`TorchRecurrentCell`, a ``torch.nn.LSTM``/``GRU`` in that contract.)

Model: a window ``(B, W, series)`` is projected per step by ``inp`` (a linear map
from the series to the cell's input size), run through the cell from a zero state
(each window is an independent sample, no state crosses windows), and the cell's
output at the window's *last* step is projected by ``out`` to one value per target
series: the normalised forecast ``horizon`` steps ahead (the horizon is a property
of the samples, see :mod:`essdsl.tasks.forecast_data`, not of the model).  Loss: the
mean squared error over every target value (normalised scale).

The cell is the submodule ``rnn``, so its architecture weights are named
``rnn.arch.*`` (an ``arch`` component, as the searcher expects).
"""

from __future__ import annotations

from typing import List, Tuple

import torch
from torch import Tensor, nn


class Forecaster(nn.Module):
    def __init__(self, cell: nn.Module, series: int, targets: int, ninp: int, nhid: int, dropout: float = 0.0):
        super().__init__()
        self.inp = nn.Linear(series, ninp)
        self.rnn = cell
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(nhid, targets)

    def forward(self, windows: Tensor) -> Tensor:
        """``windows`` (B, W, series) -> forecasts (B, targets), normalised scale."""
        x = self.inp(windows.transpose(0, 1))  # (W, B, ninp): the cell is time-major
        hidden = self.rnn.init_hidden(windows.shape[0])
        hidden = [h.to(dtype=x.dtype, device=x.device) for h in hidden]
        outputs, _ = self.rnn(x, hidden)
        return self.out(self.drop(outputs[-1]))


def mse_loss(model: nn.Module, windows: Tensor, targets: Tensor) -> Tensor:
    """The training loss: mean squared error of the normalised forecasts."""
    return torch.mean((model(windows) - targets) ** 2)


class TorchRecurrentCell(nn.Module):
    """``torch.nn.LSTM`` or ``torch.nn.GRU`` (one layer) in the cell contract: the
    reference cell the forecaster is developed and tested with."""

    def __init__(self, kind: str, ninp: int, nhid: int):
        super().__init__()
        if kind not in ("lstm", "gru"):
            raise ValueError(f"unknown recurrent cell {kind!r} (lstm or gru)")
        self.kind = kind
        self.nhid = nhid
        self.cell = (nn.LSTM if kind == "lstm" else nn.GRU)(ninp, nhid)

    def init_hidden(self, batch_size: int) -> List[Tensor]:
        weight = self.cell.weight_hh_l0
        zeros = weight.new_zeros(1, batch_size, self.nhid)
        return [zeros, zeros.clone()] if self.kind == "lstm" else [zeros]

    def forward(self, x: Tensor, hidden: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        if self.kind == "lstm":
            out, (h, c) = self.cell(x, (hidden[0], hidden[1]))
            return out, [h, c]
        out, h = self.cell(x, hidden[0])
        return out, [h]
