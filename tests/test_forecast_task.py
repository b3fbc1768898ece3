"""The forecast task: the Task protocol's streams, loss, metrics and baselines."""

import numpy as np
import pytest
import torch

from essdsl.errors import EssdslError
from essdsl.tasks.base import Task
from essdsl.tasks.forecast import ForecastTask, comparison_table
from essdsl.tasks.forecast_metrics import forecast_metrics
from essdsl.tasks.forecast_model import TorchRecurrentCell

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def task():
    return ForecastTask.load(data_seed=1, steps=300, variables=4, window=6)


def test_task_follows_the_protocol_and_describes_its_data(task):
    assert isinstance(task, Task)
    assert task.name == "forecast" and task.metrics[0].name == "rmse" and not task.metrics[0].higher_is_better
    assert "lorenz96: 300 steps x 4 series" in task.describe()
    fp = task.fingerprint()
    # the run's seed does not change the data; the data seed does
    assert fp["hash"] == ForecastTask.load(seed=7, data_seed=1, steps=300, variables=4, window=6).fingerprint()["hash"]
    assert fp["hash"] != ForecastTask.load(data_seed=2, steps=300, variables=4, window=6).fingerprint()["hash"]


def test_train_stream_is_one_shuffled_epoch_and_resumes_exactly(task):
    stream = task.train_stream(32, seed=5, device=CPU)
    n = len(task.windows.split("train"))
    seen, batches = [], []
    while (b := stream.next()) is not None:
        batches.append(b)
        seen.append(b.inputs[1])
    assert batches[0].fresh and not batches[1].fresh
    assert stream.progress() == (n, n) and stream.steps_per_epoch() == len(batches)
    # every training sample once
    got = torch.cat(seen)
    want = torch.as_tensor(task.windows.split("train").targets, dtype=torch.float32)
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, want.tolist()))
    stream.restart()
    first_of_epoch_2 = stream.next()
    assert not torch.equal(first_of_epoch_2.inputs[1], batches[0].inputs[1])  # reshuffled
    state = stream.state_dict()
    after = [stream.next().inputs[0] for _ in range(3)]
    other = task.train_stream(32, seed=5, device=CPU)
    other.load_state_dict(state)
    for a in after:
        torch.testing.assert_close(other.next().inputs[0], a)


def test_search_stream_wraps_and_marks_fresh(task):
    stream = task.search_stream(16, CPU)
    n = len(task.windows.split("valid"))
    steps = -(-n // 16)
    flags = [stream.next().fresh for _ in range(steps + 1)]
    assert flags[0] and not any(flags[1:steps]) and flags[steps]


def test_loss_evaluate_and_baselines(task):
    torch.manual_seed(0)
    model = task.wrap_cell(TorchRecurrentCell("lstm", 8, 8), 8, 8)
    batch = task.train_stream(8, 0, CPU).next()
    loss, carry = task.loss(model, batch, None)
    assert carry is None and loss.shape == ()
    torch.testing.assert_close(loss, torch.mean((model(batch.inputs[0]) - batch.inputs[1]) ** 2))
    result = task.evaluate(model, "test", 10)
    assert set(result) == {"loss", "rmse", "mae", "rse", "corr"}
    pred = task.predict(model, "test", batch_size=7)  # any batch size gives the same forecasts
    assert result == pytest.approx({"loss": result["loss"], **forecast_metrics(task.windows.split("test").raw_targets, pred)})
    name, value = task.baseline("valid")
    assert name == "persistence" and value > 0
    rows = task.baseline_rows("test")
    assert "persistence" in rows and any(k.startswith("VAR(") for k in rows)
    table = comparison_table({"lstm": dict(result, params=123)}, rows)
    assert "persistence" in table and "lstm" in table and "RMSE" in table
    assert 0.5 < task.chance_loss() < 2.0


def test_task_settings_errors():
    with pytest.raises(EssdslError, match="no series x9 in the built-in data"):
        ForecastTask.load(target=["x9"], steps=100)
    with pytest.raises(EssdslError, match="unknown transform"):
        ForecastTask.load(transform="sqrt", steps=100)
    with pytest.raises(EssdslError, match="apply to a CSV file"):
        ForecastTask.load(transform="logdiff", steps=100)


def test_task_on_a_csv_with_targets_and_log_differences(tmp_path):
    rng = np.random.default_rng(0)
    levels = np.exp(np.cumsum(0.01 + 0.02 * rng.standard_normal((80, 3)), axis=0))
    text = "time,a,b,c\n" + "".join(f"{t},{r[0]},{r[1]},{r[2]}\n" for t, r in enumerate(levels))
    (tmp_path / "m.csv").write_text(text)
    task = ForecastTask.load(data=str(tmp_path / "m.csv"), target="c", columns=" a,c ", transform="logdiff", window=4)
    assert task.windows.series.steps == 79 and task.target_count == 1 and task.series_count == 2
    np.testing.assert_allclose(task.windows.series.values[0, 1], 100 * np.log(levels[1, 2] / levels[0, 2]))
