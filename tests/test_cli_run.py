"""The run commands as a user sees them: subprocesses, exit codes, messages, files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--ninp", "16", "--nhid", "16", "--batch-size", "16", "--bptt", "10", "--threads", "1", "--synthetic-tokens", "4000"]


def essdsl(*args, cwd=None, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "essdsl", *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "120"},
    )


def assert_clean_failure(result, fragment):
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert fragment in result.stderr, result.stderr


def test_search_writes_run_files_and_derive_plot_eval(tmp_path):
    run = tmp_path / "run"
    r = essdsl("search", "spaces/idarts_rnn.space", *SMALL, "--max-steps", "6", "--epochs", "2", "--out", run)
    assert r.returncode == 0, r.stderr
    for name in ("manifest.json", "metrics.jsonl", "checkpoint.pt", "genotype.space"):
        assert (run / name).exists(), name
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["space"]["sha256"] and manifest["seed"] == 0 and manifest["sizes"] == {"ninp": 16, "nhid": 16}
    assert manifest["task"] == "lm"  # --task's default, recorded so that resume and eval use it
    assert {"essdsl", "torch"} <= set(manifest["versions"])
    record = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"train_ppl", "valid_ppl", "genotype", "arch_entropy", "arch", "elapsed_s"} <= set(record)
    genotype = (run / "genotype.space").read_text()
    assert "provenance" in genotype and "sha256" in genotype and "weights" in genotype
    assert essdsl("check", run / "genotype.space").returncode == 0
    assert "unigram" in r.stderr and "floor" in r.stderr

    out = tmp_path / "again.space"
    d = essdsl("derive", run, "-o", out)
    assert d.returncode == 0, d.stderr
    assert out.read_text() == genotype

    p = essdsl("plot", run)
    assert p.returncode == 0, p.stderr
    assert (run / "plots" / "perplexity.png").exists()
    assert any(f.name.startswith("arch_") for f in (run / "plots").iterdir())

    trained = tmp_path / "trained"
    t = essdsl("train", run / "genotype.space", *SMALL, "--max-steps", "5", "--epochs", "1", "--out", trained)
    assert t.returncode == 0, t.stderr
    e = essdsl("eval", trained / "model.pt", "--split", "test")
    assert e.returncode == 0, e.stderr
    assert "test ppl" in e.stdout
    assert_clean_failure(essdsl("eval", trained, "--task", "parsing"), "unknown task 'parsing' (known: ")

    c = essdsl("compare", run, trained)
    assert c.returncode == 0, c.stderr
    assert "idarts_rnn" in c.stdout


def test_sigint_then_resume_matches_an_uninterrupted_run(tmp_path):
    args = ["search", "spaces/darts_rnn.space", *SMALL, "--epochs", "3", "--seed", "3"]
    full = essdsl(*args, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr

    run = tmp_path / "cut"
    proc = subprocess.Popen(
        [sys.executable, "-m", "essdsl", *args, "--out", str(run)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 240
    while not (run / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err

    resumed = essdsl(*args, "--resume", run)
    assert resumed.returncode == 0, resumed.stderr

    def metrics(folder):
        rows = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]

    assert metrics(run) == metrics(tmp_path / "full")
    strip = lambda text: "\n".join(l for l in text.splitlines() if not l.strip().startswith("run ="))
    assert strip((run / "genotype.space").read_text()) == strip((tmp_path / "full" / "genotype.space").read_text())


def test_resume_refuses_a_changed_space_and_a_corrupt_checkpoint(tmp_path):
    space = tmp_path / "s.space"
    shutil.copy(ROOT / "spaces" / "darts_rnn.space", space)
    run = tmp_path / "run"
    r = essdsl("search", space, *SMALL, "--max-steps", "6", "--out", run)
    assert r.returncode == 0, r.stderr
    space.write_text(space.read_text().replace("node s8 = mix { from s0..s7 ops rnn_ops }", "node s8 = mix { from s0..s6 ops rnn_ops }"))
    assert_clean_failure(essdsl("search", space, "--resume", run), "refusing to resume")
    shutil.copy(ROOT / "spaces" / "darts_rnn.space", space)
    assert_clean_failure(essdsl("search", space, "--resume", run, "--nhid", "24"), "refusing to resume")

    (run / "checkpoint.pt").write_bytes(b"this is not a checkpoint")
    assert_clean_failure(essdsl("search", space, "--resume", run), "corrupt")
    assert_clean_failure(essdsl("derive", run), "corrupt")


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["search", "spaces/darts_rnn.space", "--data", "/nonexistent/data"], "does not exist"),
        (["search", "spaces/darts_rnn.space", "--order", "third"], "--order"),
        (["search", "spaces/darts_rnn.space", "--epochs", "0"], "--epochs"),
        (["search", "missing.space"], "no such file"),
        (["search", "genotypes/darts_v1.space", "--max-steps", "1"], "nothing to search"),
        (["train", "spaces/darts_rnn.space"], "still has choices"),
        (["derive", "/nonexistent/run"], "does not exist"),
        (["eval", "/nonexistent/model.pt"], "no checkpoint"),
        (["search", "build/none.pt"], "no such compiled artifact"),
        (["search", "spaces/darts_rnn.space", "--task", "chess"], "unknown task 'chess'"),
        (["search", "spaces/darts_rnn.space", "--task-option", "colour=red"], "task 'lm' has no option 'colour'"),
        (["train", "genotypes/darts_v1.space", "--task-option", "synthetic_tokens=many"], "option 'synthetic_tokens' expects int"),
    ],
)
def test_bad_arguments_fail_cleanly(args, fragment):
    assert_clean_failure(essdsl(*args), fragment)


def test_missing_split_is_a_clear_error(tmp_path):
    (tmp_path / "train.txt").write_text("a b\n")
    (tmp_path / "valid.txt").write_text("a\n")
    assert_clean_failure(essdsl("search", "spaces/darts_rnn.space", "--data", tmp_path), "lacks test.txt")


def test_every_option_is_documented():
    for command in ("search", "derive", "train", "eval", "compare", "plot"):
        r = essdsl(command, "--help")
        assert r.returncode == 0
    text = essdsl("search", "--help").stdout
    for option in ("--data", "--order", "--resume", "--arch-lr", "--max-steps", "--device"):
        assert option in text
