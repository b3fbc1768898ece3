"""The task registry, the language-model task's batch streams, and the checkpoint format."""

import json
import math

import pytest
import torch

from essdsl import tasks
from essdsl.nas import checkpoint, runfiles
from essdsl.nas.runconfig import RunError
from essdsl.tasks.base import Batch, BatchStream, Task
from essdsl.tasks.corpus import batchify, get_batch, sample_seq_len, synthetic_corpus
from essdsl.tasks.lm import LanguageModelTask


@pytest.fixture(scope="module")
def lm():
    return LanguageModelTask(synthetic_corpus(0, train=3000, valid=800, test=500), bptt=8)


def test_registry_makes_the_lm_and_checks_options():
    task = tasks.create("lm", seed=0, options=tasks.parse_options("lm", ["synthetic_tokens=2000"]), bptt=8)
    assert isinstance(task, Task) and task.name == "lm" and len(task.corpus.train) == 2000
    with pytest.raises(tasks.TaskError, match="unknown task 'x' \\(known: .*lm"):
        tasks.get("x")
    with pytest.raises(tasks.TaskError, match="KEY=VALUE"):
        tasks.parse_options("lm", ["synthetic_tokens"])
    with pytest.raises(tasks.TaskError, match="expects int, got 'lots'"):
        tasks.parse_options("lm", ["synthetic-tokens=lots"])


def test_tasks_command_lists_every_task_and_its_options():
    from typer.testing import CliRunner

    from essdsl.cli import app

    listed = CliRunner().invoke(app, ["tasks"])
    assert listed.exit_code == 0, listed.output
    for name in tasks.TASKS:
        assert f"\n{name}: " in "\n" + listed.output
    assert "  synthetic_tokens=INT  training tokens of the built-in corpus" in listed.output
    assert "macrodata: " in listed.output and "(fixes columns=realgdp,realcons,realinv" in listed.output
    one = CliRunner().invoke(app, ["tasks", "lm"])
    assert one.exit_code == 0 and one.output.startswith("lm: ") and "forecast" not in one.output


def test_a_preset_is_a_registered_name_with_options_fixed():
    spec = tasks.register("tiny-lm", "", "the LM on 1,000 tokens", preset={"synthetic_tokens": 1000}, of="lm")
    try:
        assert spec.factory == tasks.TASKS["lm"].factory
        task = tasks.create("tiny-lm", seed=1, bptt=8)
        assert len(task.corpus.train) == 1000
        with pytest.raises(tasks.TaskError, match="fixes synthetic_tokens=1000"):
            tasks.parse_options("tiny-lm", ["synthetic_tokens=5000"])
    finally:
        del tasks.TASKS["tiny-lm"]


def test_train_stream_is_darts_batching_and_resumes_exactly(lm):
    import random

    stream = lm.train_stream(batch_size=4, seed=3, device=torch.device("cpu"))
    assert isinstance(stream, BatchStream)
    data, rng, position = batchify(lm.corpus.train, 4), random.Random(3), 0
    batches = []
    while (batch := stream.next()) is not None:
        tokens, targets = get_batch(data, position, sample_seq_len(8, rng))  # the DARTS loop, written out
        assert torch.equal(batch.inputs[0], tokens) and torch.equal(batch.inputs[1], targets)
        assert batch.lr_scale == tokens.size(0) / 8 and batch.size == targets.numel()
        assert batch.fresh == (position == 0)
        position += tokens.size(0)
        batches.append(batch)
    assert position >= data.size(0) - 2 and stream.progress() == (position, data.size(0) - 2)
    stream.restart()
    first = stream.next()
    saved = json.loads(json.dumps(stream.state_dict()))  # plain values
    expected = [stream.next().inputs[0] for _ in range(3)]
    again = lm.train_stream(batch_size=4, seed=99, device=torch.device("cpu"))
    again.load_state_dict(saved)
    assert first is not None
    for want in expected:
        assert torch.equal(again.next().inputs[0], want)


def test_search_stream_pairs_lengths_and_wraps_fresh(lm):
    stream = lm.search_stream(batch_size=4, device=torch.device("cpu"))
    rows = batchify(lm.corpus.valid, 4).size(0)
    like = Batch((torch.zeros(30, 4, dtype=torch.long), None), 120)
    fresh = []
    for _ in range(2 * rows // 30 + 2):
        batch = stream.next(like=like)
        assert batch.inputs[0].size(0) == 30
        fresh.append(batch.fresh)
    assert fresh[0] is False and fresh.count(True) >= 2  # a wrap starts a fresh hidden state


def test_lm_metrics_and_baseline(lm):
    assert lm.metrics[0].name == "ppl" and not lm.metrics[0].higher_is_better
    assert lm.loss_metrics(math.log(7.0))["ppl"] == pytest.approx(7.0)
    assert lm.baseline() == ("unigram", lm.corpus.unigram_ppl)
    assert lm.chance_loss() == pytest.approx(math.log(50))


def test_a_checkpoint_of_the_previous_format_names_its_writer(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"versions": {"essdsl": "0.0.9"}}))
    runfiles.save_checkpoint({"format": "essdsl-checkpoint-1", "model": {}}, tmp_path / "checkpoint.pt")
    with pytest.raises(RunError) as caught:
        checkpoint.load(tmp_path / "checkpoint.pt")
    message = str(caught.value)
    assert "written by essdsl 0.0.9" in message and "'essdsl-checkpoint-1'" in message
    assert "'essdsl-checkpoint-2'" in message and "start the run again" in message
