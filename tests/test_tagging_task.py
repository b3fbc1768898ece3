"""The tagging task: streams, training on a tiny NER file, evaluation, the baseline."""

from pathlib import Path

import pytest
import torch

from essdsl.lang.check import load_graph
from essdsl.lang.graph import embedding_dim
from essdsl.tasks.base import Task
from essdsl.tasks.tagging import TaggingTask, settings_for
from tagging_cells import TorchLSTMCell

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"

PEOPLE = ["Peter", "Anna", "Maria", "John"]
PLACES = ["Paris", "Rome", "Berlin", "Madrid"]


def tiny_ner(folder: Path) -> Path:
    """CoNLL-2003 format (IOB1, -DOCSTART-, four columns) with a learnable pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 60), ("dev", 12), ("test", 12)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for i in range(n):
            person, place = PEOPLE[i % 4], PLACES[(i * 3) % 4]
            lines += [f"{person} NNP I-NP I-PER"]
            if i % 3 == 0:
                lines += [f"{PEOPLE[(i + 1) % 4]} NNP I-NP B-PER"]  # IOB1's split of two adjacent PER
            lines += ["visited VBD I-VP O", f"{place} NNP I-NP I-LOC", ". . O O", ""]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def lstm_builder(graph, search, dropout):
    return TorchLSTMCell(embedding_dim(graph), graph.dims[graph.output])


@pytest.fixture(scope="module")
def ner_task(tmp_path_factory):
    folder = tiny_ner(tmp_path_factory.mktemp("ner"))
    return TaggingTask(settings_for("ner", data=str(folder), min_count=1), cell_builder=lstm_builder)


def test_task_keeps_the_protocol(ner_task):
    assert isinstance(ner_task, Task)
    assert ner_task.data.file_scheme == "iob1"
    assert "dev.txt" in ner_task.describe()
    assert ner_task.metrics[0].name == "f1" and ner_task.metrics[0].higher_is_better


def test_train_stream_resumes_exactly(ner_task):
    stream = ner_task.train_stream(8, seed=3, device=torch.device("cpu"))
    first = [stream.next() for _ in range(3)]
    state = stream.state_dict()
    rest = []
    while (b := stream.next()) is not None:
        rest.append(b.inputs.index)
    again = ner_task.train_stream(8, seed=3, device=torch.device("cpu"))
    again.load_state_dict(state)
    assert [again.next().inputs.index for _ in rest] == rest and again.next() is None
    assert sorted(i for b in first for i in b.inputs.index) + sorted(i for r in rest for i in r) != []
    assert stream.progress() == (60, 60)
    search = ner_task.search_stream(8, torch.device("cpu"))
    batches = [search.next() for _ in range(3)]
    assert batches[2].fresh and not batches[1].fresh  # 12 valid sentences: wraps on the third


def test_training_learns_the_tiny_ner_file(ner_task):
    graph = load_graph(ROOT / "genotypes" / "lstm.space", {"ninp": 16, "nhid": 8})
    model = ner_task.build_model(graph, search=False, seed=0)
    before = ner_task.evaluate(model, "valid", 16)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    stream = ner_task.train_stream(8, seed=0, device=torch.device("cpu"))
    model.train()
    for _ in range(4):
        while (batch := stream.next()) is not None:
            loss, _ = ner_task.loss(model, batch, None)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        stream.restart()
    after = ner_task.evaluate(model, "test", 16)
    assert after["loss"] < before["loss"] < 2 * ner_task.chance_loss()
    assert after["f1"] > 90.0 and {"f1/PER", "f1/LOC", "precision", "recall"} <= set(after)


@pytest.mark.skipif(not (DATA / "conll2000").is_dir(), reason="../shared/data/conll2000 not present")
def test_conll2000_baseline_is_the_shared_tasks():
    """The shared task's baseline (most frequent chunk tag per POS tag) scored 77.07 F1 on test."""
    task = TaggingTask(settings_for("chunking", data=str(DATA / "conll2000")))
    name, f1 = task.baseline("test")
    assert name == "most frequent tag per pos" and round(f1, 2) == 77.07


def test_registered_presets(tmp_path):
    from essdsl import tasks

    folder = tiny_ner(tmp_path / "ner")
    ner = tasks.create("ner", 0, tasks.parse_options("ner", [f"data={folder}", "crf=false"]), bptt=35, dropouts={})
    assert ner.settings.preset == "ner" and ner.settings.chars and not ner.settings.crf
    assert str(ner.columns) == "word,-,-,tag"
    with pytest.raises(tasks.TaskError, match="expects bool"):
        tasks.parse_options("chunking", ["chars=maybe"])


def test_cli_prints_data_errors_as_file_line_and_never_a_traceback(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "train.txt").write_text("a DT B-NP\nb NN\n")
    (bad / "test.txt").write_text("a DT B-NP\n")
    out = subprocess.run(
        [sys.executable, "-m", "essdsl", "train", "genotypes/lstm.space", "--task", "chunking",
         "--task-option", f"data={bad}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"{bad / 'train.txt'}:2: error: 2 columns, expected 3 (word,pos,tag)"
