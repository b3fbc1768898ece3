"""Data-parallel shards of examples (tagging, forecasting): each process's contiguous
block of sentences or windows, its mean loss weighted by its share of the batch, so
that the average of the processes' gradients is the whole batch's gradient.

In one process (each rank's shard computed in turn, float64, no process group); the
2-rank gloo run of the same claim is in tests/test_distributed.py."""

import copy
import json

import pytest
import torch

from essdsl.lang.check import load_graph
from essdsl.nas import distributed as D
from essdsl.tasks.forecast import ForecastTask
from essdsl.tasks.forecast_model import TorchRecurrentCell
from essdsl.tasks.tagging import TaggingTask, settings_for
from test_tagging_task import ROOT, lstm_builder, tiny_ner

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ner_task(tmp_path_factory):
    folder = tiny_ner(tmp_path_factory.mktemp("ner"))
    return TaggingTask(settings_for("ner", data=str(folder), min_count=1), cell_builder=lstm_builder)


@pytest.fixture(scope="module")
def forecast_task():
    return ForecastTask.load(data_seed=1, steps=200, variables=4, window=5)


def _grads(task, model, batch, params):
    loss = task.loss(model, batch, None)[0]
    return loss, torch.autograd.grad(loss, params)


def averaged_shard_gap(task, model, batch, world: int):
    """(largest |averaged shard gradient - whole-batch gradient| relative to the whole
    gradient's largest entry, |mean of the shards' losses - whole loss|, the weights)."""
    params = [p for p in model.parameters() if p.requires_grad]
    loss, whole = _grads(task, model, batch, params)
    shards = [task.shard_batch(batch, rank, world) for rank in range(world)]
    results = [_grads(task, model, shard, params) for shard in shards]
    averaged = [sum(g[i] for _, g in results) / world for i in range(len(params))]
    scale = max(g.abs().max().item() for g in whole)
    gap = max((a - w).abs().max().item() for a, w in zip(averaged, whole)) / scale
    loss_gap = abs(sum(part.item() for part, _ in results) / world - loss.item())
    return gap, loss_gap, [s.extra["loss_weight"] for s in shards], shards


@pytest.mark.parametrize("batch_size, world", [(8, 2), (7, 2), (7, 3), (5, 5)])
def test_tagging_shards_of_sentences_weighted_by_tokens_give_the_whole_batch_gradient(ner_task, batch_size, world):
    torch.manual_seed(0)
    graph = load_graph(ROOT / "genotypes" / "lstm.space", {"ninp": 16, "nhid": 8})  # run as torch.nn.LSTM (lstm_builder)
    model = ner_task.build_model(graph, search=False, seed=0).double().eval()  # eval: no dropout; no BatchNorm in this cell
    batch = ner_task.train_stream(batch_size, seed=1, device=CPU).next()
    assert len(batch.inputs.index) == batch_size
    gap, loss_gap, weights, shards = averaged_shard_gap(ner_task, model, batch, world)
    assert gap < 1e-12 and loss_gap < 1e-12, (gap, loss_gap)
    # contiguous blocks, every sentence once, sizes differing by at most one
    assert sum((s.inputs.index for s in shards), []) == batch.inputs.index
    sizes = [len(s.inputs.index) for s in shards]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    # the weight counts tokens, not sentences: the tiny corpus has sentences of 4 and 5 tokens
    tokens = [int(s.inputs.lengths.sum()) for s in shards]
    assert weights == pytest.approx([t * world / batch.size for t in tokens])
    assert [s.extra["local_size"] for s in shards] == tokens and all(s.size == batch.size for s in shards)
    assert all(s.inputs.words.shape[0] == batch.inputs.words.shape[0] for s in shards)  # the batch's padded length


@pytest.mark.parametrize("batch_size, world", [(8, 2), (7, 2), (10, 3)])
def test_forecast_shards_of_windows_give_the_whole_batch_gradient(forecast_task, batch_size, world):
    torch.manual_seed(0)
    model = forecast_task.wrap_cell(TorchRecurrentCell("gru", 6, 6), 6, 6).double()
    model.drop.p = 0.0
    batch = forecast_task.train_stream(batch_size, seed=1, device=CPU).next()
    windows, targets = batch.inputs
    batch.inputs = (windows.double(), targets.double())
    gap, loss_gap, weights, shards = averaged_shard_gap(forecast_task, model, batch, world)
    assert gap < 1e-12 and loss_gap < 1e-12, (gap, loss_gap)
    assert torch.equal(torch.cat([s.inputs[0] for s in shards]), batch.inputs[0])
    assert weights == pytest.approx([len(s.inputs[0]) * world / batch_size for s in shards])
    if batch_size % world:
        assert len(set(weights)) > 1  # uneven: without the weights the average would be off


def test_unweighted_uneven_shards_would_not_average_to_the_whole_gradient(forecast_task):
    """The weights are what makes uneven shards exact (this test fails if they were 1)."""
    torch.manual_seed(0)
    model = forecast_task.wrap_cell(TorchRecurrentCell("gru", 6, 6), 6, 6).double()
    model.drop.p = 0.0
    batch = forecast_task.train_stream(7, seed=1, device=CPU).next()
    batch.inputs = tuple(t.double() for t in batch.inputs)
    params = list(model.parameters())
    whole = _grads(forecast_task, model, batch, params)[1]
    unweighted = [copy.copy(forecast_task.shard_batch(batch, r, 2)) for r in range(2)]
    for s in unweighted:
        s.extra = {**s.extra, "loss_weight": 1.0}
    averaged = [sum(g) / 2 for g in zip(*(_grads(forecast_task, model, s, params)[1] for s in unweighted))]
    assert max((a - w).abs().max().item() for a, w in zip(averaged, whole)) > 1e-6


def test_a_batch_smaller_than_the_world_is_refused(ner_task, forecast_task):
    batch = forecast_task.train_stream(3, seed=1, device=CPU).next()
    with pytest.raises(D.DistributedError, match=r"a batch of 3 examples cannot be split between 4 processes.*--batch-size"):
        forecast_task.shard_batch(batch, 0, 4)
    one = ner_task.train_stream(8, seed=1, device=CPU).next()
    one.inputs = one.inputs.columns(slice(0, 1))
    with pytest.raises(D.DistributedError, match=r"a batch of 1 example cannot be split between 2 processes"):
        ner_task.shard_batch(one, 1, 2)


def test_both_tasks_have_a_shard_rule_for_torchrun(ner_task, forecast_task):
    two = D.DistContext(rank=1, world_size=2)
    assert D.batch_sharder(ner_task, two) is not None and D.batch_sharder(forecast_task, two) is not None


# ----------------------------------------------------------------- 2 ranks on gloo
@pytest.mark.parametrize("task_name", ["tagging", "forecast"])
def test_two_ranks_with_uneven_example_shards_equal_one_process(tmp_path, task_name):
    """The real Trainer (first-order search, darts_rnn with BatchNorm, global batch 7 cut
    into 4 + 3 examples, dropouts off) on 2 gloo ranks against one process with batch 7:
    the architecture weights are bitwise equal on both ranks after every step (checked
    inside the ranks), and loss, architecture weights and validation loss equal the
    one-process run's within float32 rounding.  The tagging data is
    dist_worker.varied_ner: with tests/test_tagging_task.py's (every sentence ends
    in ".") the backward cell's first time step has the same value in every column,
    a BatchNorm variance of zero, and an output of pure rounding noise."""
    from dist_launch import run_worker
    from dist_worker import examples_run

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = examples_run(D.SINGLE, task_name, tmp_path / "single")
    finally:
        torch.set_num_threads(threads)
    run_worker("examples", tmp_path / "two", DIST_TASK=task_name)
    ranks = [json.loads((tmp_path / "two" / f"rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0]["trace"] == ranks[1]["trace"]
    trace = ranks[0]["trace"]
    assert [t["step"] for t in trace] == [t["step"] for t in reference["trace"]] == [1, 2, 3]
    assert max(abs(a["loss"] - b["loss"]) for a, b in zip(trace, reference["trace"])) < 1e-5
    moved = max(abs(x - y) for n in trace[-1]["arch"] for x, y in zip(trace[-1]["arch"][n], reference["trace"][0]["arch"][n]))
    gap = max(abs(x - y) for a, b in zip(trace, reference["trace"]) for n in a["arch"] for x, y in zip(a["arch"][n], b["arch"][n]))
    # Adam's first step is lr * g / (|g| + eps): a component whose gradient is near eps
    # (forecast: the zero op's on s1) carries float32 rounding up to a fraction of lr
    assert moved > 1e-3 and gap < 1e-2 * moved, (gap, moved)
    assert abs(ranks[0]["valid_loss"] - reference["valid_loss"]) < 1e-5
