"""Run results a user can trust, as a user sees them (subprocesses with stdout and
stderr piped): health warnings of a failed search, resume that keeps the run's
options and refuses result-changing ones, compare's numbers and exit status, and
output that stays one unwrapped line per item when piped."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--ninp", "16", "--nhid", "16", "--batch-size", "16", "--bptt", "10", "--threads", "1", "--synthetic-tokens", "4000"]
PTB = ROOT.parent / "shared" / "data" / "ptb"
# No test-wide ESSDSL_COMPILE / ESSDSL_FINAL_EPOCHS here: these tests pass the options
# on the command line, and resume must restore them from the run, not from the environment.
PLAIN_ENV = {k: v for k, v in os.environ.items() if k not in ("ESSDSL_COMPILE", "ESSDSL_FINAL_EPOCHS", "COLUMNS")}


def essdsl(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "essdsl", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=PLAIN_ENV)  # fmt: skip


def assert_piped_output_is_plain(text):
    assert "\r" not in text and "\x1b[" not in text, text
    assert "━" not in text and "┃" not in text, "a rich table or bar was printed to a pipe"


def metrics(folder):
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


# ----------------------------------------------------------------- search health
@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    """A deliberately failed search (--arch-lr 0) and a healthy one of the same space."""
    root = tmp_path_factory.mktemp("health")
    # ess_joint (one BatchNorm per node) on 8,000 tokens: 3 epochs learn the task and move
    # the weights without collapse; darts_rnn's shared BatchNorm (the official layout) is
    # below the unigram model in eval mode at this size, and 4,000 tokens are too few
    sized = [*SMALL[: SMALL.index("--synthetic-tokens")], "--synthetic-tokens", "8000"]
    common = ["search", "spaces/ess_joint.space", *sized, "--epochs", "3", "--final-epochs", "0"]
    failed = essdsl(*common, "--no-compile", "--arch-lr", "0", "--out", root / "failed")
    healthy = essdsl(*common, "--arch-lr", "0.01", "--out", root / "healthy")  # compile left to the policy
    return root, failed, healthy


def test_a_search_whose_architecture_never_moved_ends_with_a_warning(searches):
    root, failed, _ = searches
    assert failed.returncode == 0, failed.stderr
    lines = failed.stderr.splitlines()
    warning = [l for l in lines if l.startswith("essdsl: warning: the architecture weights did not learn")]
    assert len(warning) == 1 and "--arch-lr" in warning[0], failed.stderr  # one unwrapped line, with what to try
    assert "search health: ok" not in failed.stderr
    epochs = [l for l in lines if l.startswith("epoch ")]
    assert len(epochs) == 3 and all("health: no-learning" in l for l in epochs)
    assert "running eagerly: --no-compile" in failed.stderr
    health = json.loads((root / "failed" / "metrics.jsonl").read_text().splitlines()[-1])["health"]
    assert health["change"] == 0.0 and "no-learning" in health["warnings"]
    genotype = (root / "failed" / "genotype.space").read_text()
    assert 'health = ["no-learning"' in genotype and "arch_change = 0" in genotype
    assert essdsl("check", root / "failed" / "genotype.space").returncode == 0
    assert_piped_output_is_plain(failed.stderr)


def test_a_healthy_search_has_no_warning(searches):
    root, _, healthy = searches
    assert healthy.returncode == 0, healthy.stderr
    assert "warning" not in healthy.stderr, healthy.stderr
    assert "search health: ok" in healthy.stderr
    # 150 steps of a 16-wide cell: the compile policy runs it eagerly and says why, in one line
    decision = [l for l in healthy.stderr.splitlines() if "torch.compile" in l]
    assert len(decision) == 1 and re.match(r"essdsl: running eagerly \(no torch\.compile\): 1\d\d steps at .* --compile to force it$", decision[0]), decision
    assert json.loads((root / "healthy" / "manifest.json").read_text())["options"]["compile"] is False
    assert 'health = "ok"' in (root / "healthy" / "genotype.space").read_text()
    # one line per epoch with the reference points, no progress frames
    epochs = [l for l in healthy.stderr.splitlines() if l.startswith("epoch ")]
    assert len(epochs) == 3 and all("valid ppl" in l and "unigram" in l and "uniform 50" in l and "floor" in l for l in epochs)
    assert "the supernet beats the unigram model" in healthy.stderr
    assert_piped_output_is_plain(healthy.stderr)


def test_compare_labels_the_numbers_exits_1_on_different_genotypes_and_prints_plain_text(searches):
    root, _, _ = searches
    c = essdsl("compare", root / "failed", root / "healthy")
    assert c.returncode == 1, c.stderr  # the two genotypes differ, as diff reports it
    assert_piped_output_is_plain(c.stdout)
    header = next(l for l in c.stdout.splitlines() if l.startswith("run "))
    assert "supernet valid ppl" in header and "from-scratch valid ppl" in header
    edits = [l for l in c.stdout.splitlines() if l[:2] in ("~ ", "+ ", "- ")]
    assert edits and all(l.count(":") >= 1 for l in edits)
    j = essdsl("compare", root / "failed", root / "healthy", "--json")
    assert j.returncode == 1
    data = json.loads(j.stdout)
    assert data["genotypes_differ"] is True and data["diffs"][0]["edits"] == edits
    supernet = json.loads((root / "failed" / "metrics.jsonl").read_text().splitlines()[-1])["valid_ppl"]
    assert data["runs"][0]["supernet_valid_ppl"] == supernet and data["runs"][0]["from_scratch_valid_ppl"] is None
    assert essdsl("compare", root / "failed", root / "failed").returncode == 0


# ----------------------------------------------------------------- resume keeps the options
def test_interrupted_and_resumed_run_with_its_options_equals_the_uninterrupted_one(tmp_path):
    args = ["search", "spaces/darts_rnn.space", *SMALL, "--epochs", "3", "--seed", "5", "--no-compile", "--final-epochs", "1", "--arch-lr", "0.01"]
    full = essdsl(*args, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr

    run = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "essdsl", *args, "--out", str(run)], cwd=ROOT, env=PLAIN_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 240
    while not (run / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    hint = next(l for l in err.splitlines() if l.startswith("resume with: "))[len("resume with: "):]
    words = shlex.split(hint)
    assert words[:2] == ["essdsl", "search"]

    # the printed hint, as printed: no --no-compile, no --final-epochs, no --seed
    refused = essdsl(*words[1:], "--seed", "6")
    assert refused.returncode == 1 and "refusing to resume: --seed 6" in refused.stderr
    assert "Traceback" not in refused.stderr
    resumed = essdsl(*words[1:])
    assert resumed.returncode == 0, resumed.stderr
    assert "as the run was started" in resumed.stderr and "torch.compile" not in resumed.stderr.replace("no torch.compile", "")
    assert metrics(run) == metrics(tmp_path / "full")
    options = json.loads((run / "manifest.json").read_text())["options"]
    assert options == {"compile": False, "compile_requested": False, "final_epochs": 1, "threads": 1, "device": "cpu"}
    assert metrics(run / "final") == metrics(tmp_path / "full" / "final")
    assert len(metrics(run / "final")) == 1  # --final-epochs 1 kept, not the default 3
    assert "(1 epoch from scratch)" in resumed.stderr
    strip = lambda text: "\n".join(l for l in text.splitlines() if not l.strip().startswith("run ="))
    assert strip((run / "genotype.space").read_text()) == strip((tmp_path / "full" / "genotype.space").read_text())

    c = essdsl("compare", tmp_path / "full", run)
    assert c.returncode == 0, c.stdout  # same genotype
    scratch = metrics(run / "final")[-1]["valid_ppl"]
    assert f"{scratch:.2f} (1 ep)" in c.stdout


# ----------------------------------------------------------------- real data
@pytest.mark.skipif(not (PTB / "train.txt").exists(), reason="PTB is not in ../shared/data/ptb")
def test_a_run_shorter_than_an_epoch_on_real_data_says_so_and_shows_the_reference_points(tmp_path):
    r = essdsl("search", "spaces/darts_rnn.space", "--data", PTB, *SMALL[:8], "--max-steps", "2", "--no-compile",
               "--final-epochs", "0", "--eval-batch-size", "80", "--out", tmp_path / "run")  # fmt: skip
    assert r.returncode == 0, r.stderr
    epoch = next(l for l in r.stderr.splitlines() if l.startswith("epoch 1"))
    assert "of an epoch)" in epoch and "unigram" in epoch and "uniform 10,000" in epoch
    assert "model (last epoch)" not in r.stderr and "supernet (after" in r.stderr


# ----------------------------------------------------------------- export
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_a_trained_model_exports_to_torchscript_in_eval_mode(tmp_path):
    import torch

    run = tmp_path / "trained"
    t = essdsl("train", "genotypes/darts_v1.space", *SMALL, "--max-steps", "3", "--epochs", "1", "--no-compile", "--out", run)
    assert t.returncode == 0, t.stderr
    assert "model (after" in t.stderr  # 3 steps are not an epoch
    refused = essdsl("train", "genotypes/darts_v1.space", "--resume", run, "--lr", "5")
    assert refused.returncode == 1 and "refusing to resume: --lr 5.0 differs from the run's 20.0" in refused.stderr
    artifact = tmp_path / "darts_v1.pt"
    c = essdsl("compile", "genotypes/darts_v1.space", "--weights", run / "model.pt", "-o", artifact)
    assert c.returncode == 0, c.stderr
    model = torch.jit.load(str(artifact))
    assert not model.training
    tokens = torch.randint(0, 50, (5, 3))
    logits, _ = model(tokens, model.init_hidden(3))
    again, _ = model(tokens, model.init_hidden(3))
    assert torch.equal(logits, again)  # eval mode: no dropout
    state = torch.load(run / "model.pt", weights_only=True)
    weights = state.get("best_model") or state["model"]
    assert torch.equal(dict(model.named_parameters())["decoder_bias"], weights["decoder_bias"])
    wrong = essdsl("compile", "genotypes/darts_v2.space", "--weights", run / "model.pt", "-o", tmp_path / "x.pt")
    assert wrong.returncode == 1 and "another text" in wrong.stderr


def test_epoch_line_never_prints_ppl_inf_and_says_when_an_epoch_was_cut_short():
    from essdsl.cli.run import _epoch_line
    from essdsl.tasks.corpus import synthetic_corpus

    corpus = synthetic_corpus(0, train=2000, valid=500, test=500)
    diverged = {"epoch": 2, "train_loss": 812.5, "train_ppl": float("inf"), "valid_loss": 3.0, "valid_ppl": 20.09,
                "elapsed_s": 4.0, "epoch_fraction": 1.0}  # fmt: skip
    line = _epoch_line(diverged, corpus)
    assert "inf" not in line and "train loss 812.50 nats/token" in line and "valid ppl 20.09" in line
    assert f"unigram {corpus.unigram_ppl:.2f}" in line and "uniform 50" in line
    short = _epoch_line({**diverged, "epoch": 1, "train_ppl": 30.0, "train_loss": 3.4, "epoch_fraction": 0.25}, corpus)
    assert short.startswith("epoch 1 (0.25 of an epoch): train ppl 30.00")
