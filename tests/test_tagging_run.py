"""Tagging through essdsl's trainer: train (checkpoint, resume, metrics.jsonl, best
epoch by F1), evaluate a run's model.pt, search a space and derive its genotype."""

import json
from pathlib import Path

import pytest

from essdsl.lang.check import load_graph
from essdsl.nas.runconfig import RunError
from essdsl.tasks.tagging import TaggingTask, settings_for
from essdsl.tasks.tagging_run import evaluate_tagger, search_tagger, tagging_config, train_tagger
from test_tagging_task import tiny_ner

ROOT = Path(__file__).resolve().parents[1]
SIZES = {"ninp": 16, "nhid": 8}


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    folder = tiny_ner(tmp_path_factory.mktemp("ner"))
    return TaggingTask(settings_for("ner", data=str(folder), min_count=1))


@pytest.mark.slow
def test_train_resume_and_evaluate(task, tmp_path):
    run = tmp_path / "run"
    first = train_tagger(ROOT / "genotypes/gru.space", task, run, SIZES, tagging_config(False, epochs=1, batch_size=8))
    assert (run / "model.pt").exists()
    with pytest.raises(RunError, match="already holds a run"):
        train_tagger(ROOT / "genotypes/gru.space", task, run, SIZES, tagging_config(False, epochs=1, batch_size=8))
    final = train_tagger(ROOT / "genotypes/gru.space", task, run, SIZES, tagging_config(False, epochs=3, batch_size=8),
                         resume=True)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3] and all("valid_f1" in r for r in lines)
    assert (run / "plots" / "tagging.png").read_bytes().startswith(b"\x89PNG")
    assert final["f1"] >= first["f1"] and final["f1"] > 80.0
    assert evaluate_tagger(run / "model.pt", "test")["f1"] == pytest.approx(final["f1"])


@pytest.mark.slow
def test_search_derives_one_genotype_for_both_directions(task, tmp_path):
    path, text = search_tagger(ROOT / "spaces/darts_rnn.space", task, tmp_path / "search", SIZES,
                               tagging_config(True, epochs=1, batch_size=8))
    assert path.exists() and text.startswith("genotype")
    assert load_graph(path, SIZES)  # a valid genotype at the run's sizes
    assert 'task = "ner"' in text
