"""The forecaster around essdsl's compiled cells: the lstm genotype forecasts what
torch's LSTM forecasts with the same weights; a space gives a supernet with
``rnn.arch.*`` architecture weights."""

from pathlib import Path

import pytest
import torch

from essdsl.lang.check import load_graph
from essdsl.tasks.base import is_arch_parameter
from essdsl.tasks.forecast import ForecastTask
from essdsl.tasks.forecast_model import TorchRecurrentCell
from forecast_helpers import one_thread  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def task():
    return ForecastTask.load(steps=200, variables=4, window=5)


def test_lstm_genotype_forecaster_is_torch_lstm_forecaster(task):
    ninp, nhid = 6, 5
    graph = load_graph(ROOT / "genotypes/lstm.space", sizes={"ninp": ninp, "nhid": nhid})
    model = task.build_model(graph, search=False, seed=0).eval()
    torch.manual_seed(1)
    ref = task.wrap_cell(TorchRecurrentCell("lstm", ninp, nhid), ninp, nhid).eval()
    lstm = ref.rnn.cell
    with torch.no_grad():
        model.inp.load_state_dict(ref.inp.state_dict())
        model.out.load_state_dict(ref.out.state_dict())
        for node, k in zip("ifgo", range(4)):  # torch stacks the gates as (i, f, g, o)
            rows = slice(k * nhid, (k + 1) * nhid)
            weight = torch.cat([lstm.weight_ih_l0[rows], lstm.weight_hh_l0[rows]], dim=1)
            getattr(model.rnn.cell, f"{node}_w0").copy_(weight.t())
            getattr(model.rnn.cell, f"{node}_b0").copy_(lstm.bias_ih_l0[rows] + lstm.bias_hh_l0[rows])
    windows = torch.as_tensor(task.windows.split("valid").inputs[:7], dtype=torch.float32)
    torch.testing.assert_close(model(windows), ref(windows), atol=1e-5, rtol=0)
    assert task.evaluate(model, "valid", 64)["rmse"] == pytest.approx(task.evaluate(ref, "valid", 64)["rmse"], rel=1e-5)


def test_space_gives_a_supernet_with_architecture_weights(task):
    graph = load_graph(ROOT / "spaces/darts_rnn.space", sizes={"ninp": 8, "nhid": 8})
    model = task.build_model(graph, search=True, seed=0)
    arch = [n for n, _ in model.named_parameters() if is_arch_parameter(n)]
    assert arch and all(n.startswith("rnn.arch.") for n in arch)
    batch = task.train_stream(16, 0, torch.device("cpu")).next()
    loss, _ = task.loss(model, batch, None)
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if is_arch_parameter(n))
    # same seed, same weights
    again = task.build_model(graph, search=True, seed=0)
    for (n, p), (_, q) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(p, q), n
