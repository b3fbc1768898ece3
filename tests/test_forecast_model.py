"""The forecaster around a cell in the cell contract (here torch's own LSTM/GRU)."""

import numpy as np
import pytest
import torch

from essdsl.tasks.forecast_baselines import persistence
from essdsl.tasks.forecast_data import lorenz96, make_windows
from essdsl.tasks.forecast_metrics import rmse
from essdsl.tasks.forecast_model import Forecaster, TorchRecurrentCell, mse_loss
from forecast_helpers import one_thread  # noqa: F401 - a fixture

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_forecaster_is_projection_cell_projection_at_the_last_step(kind):
    torch.manual_seed(0)
    model = Forecaster(TorchRecurrentCell(kind, 5, 7), series=3, targets=2, ninp=5, nhid=7).double().eval()
    windows = torch.randn(4, 6, 3, dtype=torch.float64)
    # the same computation written with torch's batch-first RNN, from a zero state
    rnn = model.rnn.cell
    ref_rnn = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(5, 7, batch_first=True).double()
    ref_rnn.load_state_dict(rnn.state_dict())
    seq, _ = ref_rnn(windows @ model.inp.weight.T + model.inp.bias)
    expected = seq[:, -1] @ model.out.weight.T + model.out.bias
    torch.testing.assert_close(model(windows), expected)
    # windows are independent samples: one forecast does not depend on the rest of the batch
    torch.testing.assert_close(model(windows[2:3]), expected[2:3])
    assert mse_loss(model, windows, expected.detach()).item() == pytest.approx(0.0, abs=1e-20)


def test_forecaster_learns_lorenz96_better_than_persistence():
    torch.manual_seed(0)
    w = make_windows(lorenz96(steps=300, variables=4, seed=0, spinup=100), window=6)
    train = w.split("train")
    x = torch.tensor(train.inputs, dtype=torch.float32)
    y = torch.tensor(train.targets, dtype=torch.float32)
    model = Forecaster(TorchRecurrentCell("gru", 16, 16), series=4, targets=4, ninp=16, nhid=16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(80):
        idx = torch.randint(0, len(x), (32,))
        opt.zero_grad()
        mse_loss(model, x[idx], y[idx]).backward()
        opt.step()
    test = w.split("test")
    model.eval()
    with torch.no_grad():
        z = model(torch.tensor(test.inputs, dtype=torch.float32)).numpy()
    pred = w.normaliser.invert(z.astype(np.float64), np.asarray(w.series.targets))
    assert rmse(test.raw_targets, pred) < rmse(test.raw_targets, persistence(test))
