"""``torchrun --nproc_per_node=2 -m essdsl search …`` as a user runs it (gloo on CPU):
one genotype equal to the one-process run's, rank 0 alone writing and printing, a
stop on any rank or a killed rank leaving an intact checkpoint that resumes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dist_launch import free_port

ROOT = Path(__file__).resolve().parents[1]
SEARCH = ["search", "spaces/darts_rnn.space", "--nhid", "8", "--ninp", "8", "--batch-size", "8", "--synthetic-tokens", "1200",
          "--epochs", "2", "--lr", "5", "--arch-lr", "0.03"]  # fmt: skip
ENV = {**os.environ, "ESSDSL_FINAL_EPOCHS": "0", "ESSDSL_COMPILE": "0", "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.slow  # each test starts torchrun and 2 ranks: seconds, not milliseconds


def torchrun(args, **popen):
    """``torchrun --nproc_per_node=2 -m essdsl args…`` from the repository root."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}", "-m", "essdsl", *args]
    return subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def single(args):
    return subprocess.run([sys.executable, "-m", "essdsl", *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)


def structure(genotype: Path) -> str:
    """The genotype without its provenance (run name, rounded weights, valid ppl)."""
    text = genotype.read_text()
    start = text.index("provenance {")
    return text[:start] + text[text.index("}", start) + 1 :]


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def ranks_of(launcher: subprocess.Popen, timeout: float = 60) -> dict:
    """rank -> pid of torchrun's worker processes (read from their environment)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for child in Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split():
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            rank = [e for e in env if e.startswith(b"RANK=")]
            if rank:
                found[int(rank[0][5:])] = int(child)
        if len(found) == 2:
            return found
        time.sleep(0.2)
    raise AssertionError("torchrun's workers did not start")


def wait_for(path: Path, launcher, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert launcher.poll() is None, launcher.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("single") / "run"
    done = single([*SEARCH, "--out", str(run)])
    assert done.returncode == 0, done.stderr
    return run, done


def test_torchrun_search_equals_the_one_process_search(tmp_path, one_process_run):
    reference, reference_done = one_process_run
    run = tmp_path / "run"
    launcher = torchrun([*SEARCH, "--out", str(run)])
    stdout, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr
    assert stdout.count("genotype darts_rnn") == 1  # rank 0 printed it; rank 1 printed nothing
    assert stderr.count("searching spaces/darts_rnn.space") == 1
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint.pt", "genotype.space", "manifest.json", "metrics.jsonl"]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["launch"] == {"world_size": 2, "backend": "gloo"}
    assert json.loads((reference / "manifest.json").read_text())["launch"] == {"world_size": 1, "backend": "none"}
    assert structure(run / "genotype.space") == structure(reference / "genotype.space")
    for ours, theirs in zip(metrics(run), metrics(reference), strict=True):
        assert ours["step"] == theirs["step"]
        assert abs(ours["train_loss"] - theirs["train_loss"]) < 1e-4 and abs(ours["valid_loss"] - theirs["valid_loss"]) < 1e-4


def test_a_killed_rank_stops_every_rank_and_the_checkpoint_resumes(tmp_path, one_process_run):
    reference, _ = one_process_run
    run = tmp_path / "run"
    launcher = torchrun([*SEARCH, "--out", str(run)])
    ranks = ranks_of(launcher)
    wait_for(run / "metrics.jsonl", launcher)  # epoch 1 ended and was checkpointed
    time.sleep(0.5)  # somewhere in epoch 2
    os.kill(ranks[1], signal.SIGKILL)
    killed = time.monotonic()
    _, stderr = launcher.communicate(timeout=120)
    exited = time.monotonic() - killed
    assert launcher.returncode != 0
    for pid in ranks.values():  # no rank left behind
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert exited < 60, exited
    # the checkpoint of epoch 1 is intact (checksum verified on load) and the run resumes to the end
    launcher = torchrun([*SEARCH[:2], "--resume", str(run)])
    stdout, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr
    assert [m["epoch"] for m in metrics(run)] == [1, 2]
    assert structure(run / "genotype.space") == structure(reference / "genotype.space")


def test_sigterm_on_one_rank_stops_both_with_a_checkpoint_and_another_world_size_is_refused(tmp_path, one_process_run):
    reference, _ = one_process_run
    run = tmp_path / "run"
    launcher = torchrun([*SEARCH, "--out", str(run)])
    ranks = ranks_of(launcher)
    wait_for(run / "metrics.jsonl", launcher)
    os.kill(ranks[1], signal.SIGTERM)  # one rank only: e.g. a scheduler preempting one node
    stdout, stderr = launcher.communicate(timeout=120)
    assert "interrupted at epoch 2" in stderr and "resume with: essdsl search" in stderr
    assert "genotype darts_rnn" not in stdout
    done = single([*SEARCH[:2], "--resume", str(run)])  # one process: refused, nothing changed
    assert done.returncode == 1 and "refusing to resume: this run was started on 2 processes" in done.stderr
    launcher = torchrun([*SEARCH[:2], "--resume", str(run)])
    stdout, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr
    assert structure(run / "genotype.space") == structure(reference / "genotype.space")
    for ours, theirs in zip(metrics(run), metrics(reference), strict=True):
        assert abs(ours["valid_loss"] - theirs["valid_loss"]) < 1e-4


def test_torchrun_train_equals_the_one_process_training(tmp_path):
    args = ["train", "genotypes/darts_v2.space", "--nhid", "8", "--ninp", "8", "--batch-size", "8", "--synthetic-tokens", "1200",
            "--epochs", "1", "--lr", "5"]  # fmt: skip
    done = single([*args, "--out", str(tmp_path / "one")])
    assert done.returncode == 0, done.stderr
    launcher = torchrun([*args, "--out", str(tmp_path / "two")])
    _, stderr = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, stderr
    assert stderr.count("model written to") == 1
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["launch"]["world_size"] == 2
    (ours,), (theirs,) = metrics(tmp_path / "two"), metrics(tmp_path / "one")
    assert ours["step"] == theirs["step"] and abs(ours["valid_loss"] - theirs["valid_loss"]) < 1e-4
