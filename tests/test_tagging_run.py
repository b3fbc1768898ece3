"""Tagging through the run layer, as a user runs it: ``essdsl train/eval/search/plot
--task ner|chunking`` in subprocesses (run folder, metrics.jsonl, plots, the baseline
and per-type F1, one genotype for both directions), ``--resume`` after Ctrl-C through
the Python API, and a bad file reported at its line."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import essdsl
from essdsl.api import Observer
from essdsl.nas.runconfig import Interrupted
from test_tagging_task import tiny_ner

ROOT = Path(__file__).resolve().parents[1]
CONLL2000 = ROOT / ".." / "shared" / "data" / "conll2000"
TINY = ["--ninp", "16", "--nhid", "8", "--batch-size", "8", "--threads", "1"]
needs_conll2000 = pytest.mark.skipif(not CONLL2000.is_dir(), reason="../shared/data/conll2000 not present")


def essdsl_cli(*args, timeout=300):
    env = {**os.environ, "ESSDSL_COMPILE": "0", "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "essdsl", *map(str, args)], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def ner_folder(tmp_path_factory):
    return tiny_ner(tmp_path_factory.mktemp("ner"))


def test_cli_trains_evaluates_and_plots_a_ner_tagger(ner_folder, tmp_path):
    run = tmp_path / "run"
    proc = essdsl_cli("train", "genotypes/gru.space", "--task", "ner", "--data", ner_folder, *TINY, "--epochs", "2", "--out", run)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert f"training genotypes/gru.space on {ner_folder.name} (word,-,-,tag)" in err and "valid 12 (dev.txt)" in err
    assert "epoch 2: train loss" in err and "F1 " in err and "(most frequent tag per word F1 " in err
    assert "model (test)" in err and "trained genotype" in err  # the table against the baseline
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["task"] == "ner" and manifest["task_options"]["data"] == str(ner_folder.resolve())
    assert manifest["reference"]["metric"] == "f1" and manifest["reference"]["baseline"] == "most frequent tag per word"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2] and {"valid_f1", "valid_f1/PER", "valid_loss", "train_loss"} <= set(records[-1])

    proc = essdsl_cli("eval", run / "model.pt", "--split", "test")
    assert proc.returncode == 0, proc.stderr
    first, per_type = proc.stdout.splitlines()
    assert first.startswith("test precision ") and " f1 " in first and "tokens)" in first
    assert "baseline: most frequent tag per word f1 100.0000" in first  # the tiny file's names are all in train
    assert per_type.startswith("per type: ") and "f1/LOC" in per_type and "f1/PER" in per_type
    best = max(records, key=lambda r: r["valid_f1"])
    valid = essdsl.evaluate(run, "valid")
    assert valid["f1"] == pytest.approx(best["valid_f1"])  # the best epoch's weights, at the run's eval batch size

    proc = essdsl_cli("plot", run)
    assert proc.returncode == 0, proc.stderr
    assert (run / "plots" / "ner.png").read_bytes().startswith(b"\x89PNG")


def test_cli_search_derives_one_genotype_for_both_directions(ner_folder, tmp_path):
    run = tmp_path / "search"
    proc = essdsl_cli("search", "spaces/darts_rnn.space", "--task", "ner", "--data", ner_folder, *TINY, "--max-steps", "4",
                      "--out", run)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.lstrip().startswith("genotype darts_rnn_derived")
    assert "search health: " in proc.stderr and "the supernet" in proc.stderr and "baseline" in proc.stderr
    genotype = (run / "genotype.space").read_text()
    assert essdsl.load_space(run / "genotype.space").graph({"ninp": 16, "nhid": 8})  # checks at the run's sizes
    derived = essdsl.derive(run, tmp_path / "again.space")  # from the checkpoint: fw.arch.* under the manifest's names
    assert derived.text == genotype
    plots = essdsl.plot(run)
    assert any(p.name.startswith("arch_") for p in plots) and (run / "plots" / "ner.png").exists()


class _StopAt(Observer):
    """Ctrl-C after ``step`` steps (the trainer then checkpoints and stops)."""

    def __init__(self, step):
        self.at = step

    def step(self, info):
        if info.step == self.at:
            os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(ner_folder, tmp_path):
    settings = dict(task="ner", data=str(ner_folder), ninp=16, nhid=8, batch_size=8, epochs=2, threads=1, compile=False)
    straight = essdsl.train(ROOT / "genotypes/gru.space", out=tmp_path / "straight", **settings)
    with pytest.raises(Interrupted):
        essdsl.train(ROOT / "genotypes/gru.space", out=tmp_path / "cut", observer=_StopAt(10), **settings)
    resumed = essdsl.train(ROOT / "genotypes/gru.space", resume=tmp_path / "cut", task="ner")
    assert [r["valid_loss"] for r in resumed.metrics] == [r["valid_loss"] for r in straight.metrics]
    assert [r["valid_f1"] for r in resumed.metrics] == [r["valid_f1"] for r in straight.metrics]


def test_cli_reports_a_bad_ner_file_at_its_line_and_writes_nothing(tmp_path):
    bad = tiny_ner(tmp_path / "bad")
    lines = (bad / "dev.txt").read_text().splitlines()
    lines[3] = "visited VBD I-VP"  # a token line with three columns of four
    (bad / "dev.txt").write_text("\n".join(lines) + "\n")
    proc = essdsl_cli("train", "genotypes/gru.space", "--task", "ner", "--data", bad, "--out", tmp_path / "run")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"{bad.resolve() / 'dev.txt'}:4: error: 3 columns, expected 4 (word,-,-,tag)"
    assert not (tmp_path / "run").exists()


@needs_conll2000
def test_cli_chunking_on_conll2000_train_then_eval_against_the_baseline(tmp_path):
    run = tmp_path / "chunk"
    proc = essdsl_cli("train", "genotypes/lstm.space", "--task", "chunking", "--data", CONLL2000, "--ninp", "16", "--nhid", "8",
                      "--max-steps", "3", "--out", run, "--threads", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "conll2000 (word,pos,tag)" in proc.stderr and "(most frequent tag per pos F1 " in proc.stderr
    winner = next(line for line in proc.stderr.splitlines() if line.startswith("shared-task winner (Kudo & Matsumoto)"))
    assert winner.split()[-3:] == ["93.48", "93.45", "93.51"]
    proc = essdsl_cli("eval", run / "model.pt", "--split", "test")
    assert proc.returncode == 0, proc.stderr
    assert "47,377 tokens)" in proc.stdout
    baseline = float(proc.stdout.split("baseline: most frequent tag per pos f1 ")[1].split()[0])
    assert round(baseline, 2) == 77.07  # the shared task's published baseline
    assert "f1/NP " in proc.stdout and "f1/VP " in proc.stdout


@needs_conll2000
@pytest.mark.slow
def test_cli_search_on_conll2000_reports_health_against_the_baseline(tmp_path):
    run = tmp_path / "search"
    proc = essdsl_cli("search", "spaces/darts_rnn.space", "--task", "chunking", "--data", CONLL2000, "--ninp", "16",
                      "--nhid", "8", "--max-steps", "6", "--out", run, "--threads", "1")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "search health: " in proc.stderr and "most frequent tag per pos" in proc.stderr
    assert (run / "genotype.space").exists() and 'source = "spaces/darts_rnn.space"' in proc.stdout
