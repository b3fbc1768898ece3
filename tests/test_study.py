"""Studies: the study file, the plan of processes, and `essdsl study run|report` end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from essdsl.study import StudyError, load_study, plan

ROOT = Path(__file__).resolve().parent.parent
LSTM = ROOT / "genotypes" / "lstm.space"
DARTS = ROOT / "spaces" / "darts_rnn.space"
TINY_MODEL = """
[model]
ninp = 8
nhid = 8
batch_size = 8
bptt = 8
synthetic_tokens = 2000
"""


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "study.toml"
    path.write_text(body)
    return path


def _study_text(strategies: str, seeds="[0]", search_steps=6, train_steps=3, spaces=f'[[space]]\npath = "{DARTS}"\nlabel = "DARTS"\n') -> str:
    return f"seeds = {seeds}\n[budget]\nsearch_steps = {search_steps}\ntrain_steps = {train_steps}\n{TINY_MODEL}\n{spaces}\n{strategies}"


DARTS_STRATEGY = '[[strategy]]\nkind = "darts"\norder = "first"\n'
RANDOM_3 = '[[strategy]]\nkind = "random"\nsamples = 3\n'
LSTM_STRATEGY = f'[[strategy]]\nkind = "fixed"\ngenotype = "{LSTM}"\nlabel = "LSTM"\n'


def test_budgets_must_be_equal_and_errors_name_the_file(tmp_path):
    bad = _write(tmp_path, _study_text(DARTS_STRATEGY + '[[strategy]]\nkind = "random"\nsamples = 4\n'))
    with pytest.raises(StudyError, match=r"samples = 4 spends 4 × 3 = 12 steps but darts spends search_steps \+ train_steps = 9; .*samples = 3"):
        load_study(bad)
    typo = _write(tmp_path, _study_text(DARTS_STRATEGY).replace("train_steps", "train_step"))
    with pytest.raises(StudyError, match=str(typo) + r": budget.train_steps: Field required; budget.train_step: Extra inputs"):
        load_study(typo)
    missing = _write(tmp_path, _study_text(LSTM_STRATEGY.replace(str(LSTM), "nope.space")))
    with pytest.raises(StudyError, match="genotype nope.space does not exist"):
        load_study(missing)
    broken = _write(tmp_path, "seeds = [0\n")
    with pytest.raises(StudyError, match="not valid TOML"):
        load_study(broken)


def test_plan_gives_every_strategy_the_same_steps(tmp_path):
    study = load_study(_write(tmp_path, _study_text(DARTS_STRATEGY + RANDOM_3 + LSTM_STRATEGY, seeds="[0, 1]")), tmp_path / "out")
    units, jobs = plan(study)
    assert [(u.space, u.strategy, u.seed) for u in units] == [
        (space, strategy, seed) for seed in (0, 1) for space, strategy in (("DARTS", "darts-first"), ("DARTS", "random-3"), ("LSTM", "LSTM"))
    ]

    def steps_of(step):
        return int(step.fresh[step.fresh.index("--max-steps") + 1]) if "--max-steps" in step.fresh else 0

    spent: dict = {}
    for job in jobs:
        unit = next(u for u in units if job[0].folder.is_relative_to(u.folder))
        spent[(unit.strategy, unit.seed)] = spent.get((unit.strategy, unit.seed), 0) + sum(steps_of(s) for s in job)
        assert job[-1].kind == "eval"
    random_job = next(job for job in jobs if job[-1].candidates)
    assert [s.kind for s in random_job] == ["train"] * 3 + ["eval"]  # only the chosen sample is tested
    assert spent[("darts-first", 0)] == spent[("random-3", 0)] == 6 + 3
    assert spent[("LSTM", 1)] == 3  # nothing to choose: only the training
    # the random unit trains the genotypes `essdsl sample SPACE -n 3 --seed SEED` writes
    samples = sorted((tmp_path / "out" / "DARTS" / "random-3" / "seed1" / "samples").iterdir())
    assert len(samples) == 3 and "seed = 1" in samples[0].read_text()


def _log(folder: Path) -> list[dict]:
    path = folder / "study-log.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _essdsl(*args, cwd=ROOT, timeout=600):
    result = subprocess.run([sys.executable, "-m", "essdsl", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def _kill_after_first_done(args: list, folder: Path) -> None:
    """Start `essdsl study run`, SIGKILL its whole process group once one step has finished."""
    proc = subprocess.Popen([sys.executable, "-m", "essdsl", *map(str, args)], cwd=ROOT, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if any(e["event"] == "done" for e in _log(folder)):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the study finished before it could be killed; make it longer"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


def test_study_killed_midway_finishes_without_redoing_finished_runs(tmp_path):
    study_file = _write(tmp_path, _study_text(LSTM_STRATEGY, seeds="[0, 1]", spaces=""))
    out = tmp_path / "out"
    _kill_after_first_done(["study", "run", study_file, "--out", out, "--jobs", "1"], out)
    finished = {(e["kind"], e["folder"]) for e in _log(out) if e["event"] == "done"}
    assert finished

    def marker(kind, folder):
        return Path(folder) / ("test.json" if kind == "eval" else "study-done.json")

    stamps = {step: marker(*step).stat().st_mtime_ns for step in finished}
    before = len(_log(out))
    again = _essdsl("study", "run", study_file, "--out", out, "--jobs", "2")
    assert again.returncode == 0, again.stderr
    later = _log(out)[before:]
    assert not [e for e in later if e["event"] == "start" and (e["kind"], e["folder"]) in finished]
    assert {(e["kind"], e["folder"]) for e in later if e["event"] == "skip"} >= finished
    assert {step: marker(*step).stat().st_mtime_ns for step in finished} == stamps
    assert all((out / "LSTM" / "LSTM" / f"seed{s}" / "final" / "test.json").exists() for s in (0, 1))
    # a third run does nothing at all
    third = _essdsl("study", "run", study_file, "--out", out)
    assert third.returncode == 0 and "0 steps run, 4 already done" in third.stderr

    report = _essdsl("study", "report", study_file, "--out", out)
    assert report.returncode == 0, report.stderr
    assert "| LSTM | LSTM | 2/2 |" in report.stdout and " ± " in report.stdout
    changed = study_file.read_text().replace("train_steps = 3", "train_steps = 4")
    study_file.write_text(changed)
    refused = _essdsl("study", "run", study_file, "--out", out)
    assert refused.returncode == 1 and "other settings (budget changed" in refused.stderr
    for name in ("table.md", "table.csv", "runs.csv", "metric.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "metric.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = (out / "runs.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[0].startswith("space,strategy,seed,test_ppl")


def test_cli_study_errors_are_one_line(tmp_path):
    bad = _write(tmp_path, "seeds = []\n")
    result = _essdsl("study", "run", bad)
    assert result.returncode == 1 and result.stderr.startswith(f"essdsl: error: {bad}:")
    empty = _write(tmp_path, _study_text(LSTM_STRATEGY, spaces=""))
    result = _essdsl("study", "report", empty, "--out", tmp_path / "none")
    assert result.returncode == 1 and "run 'essdsl study run" in result.stderr


@pytest.mark.slow
def test_study_with_every_strategy_interrupted_and_resumed(tmp_path):
    # SIGINT (Ctrl-C) reaches the whole process group while the search runs: the
    # search saves a checkpoint and the next `study run` continues it with --resume.
    study_file = _write(tmp_path, _study_text(DARTS_STRATEGY + RANDOM_3 + LSTM_STRATEGY, search_steps=200, train_steps=100))
    out = tmp_path / "out"
    search = out / "DARTS" / "darts-first" / "seed0" / "search"
    proc = subprocess.Popen([sys.executable, "-m", "essdsl", "study", "run", str(study_file), "--out", str(out)], cwd=ROOT,
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 300
    # the first epoch's checkpoint: the search is inside its training loop, with ~6 epochs to go
    while not (search / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130 and "again to resume" in err, err
    assert (search / "checkpoint.pt").exists() and not (search / "study-done.json").exists()

    result = _essdsl("study", "run", study_file, "--out", out, "--jobs", "2")
    assert result.returncode == 0, result.stderr
    starts = [e for e in _log(out) if e["event"] == "start" and e["folder"] == str(search)]
    assert [e["resumed"] for e in starts] == [False, True]
    report = _essdsl("study", "report", study_file, "--out", out)
    assert report.returncode == 0, report.stderr
    table = (out / "table.md").read_text()
    for row in ("| DARTS | darts-first | 1/1 |", "| DARTS | random-3 | 1/1 |", "| LSTM | LSTM | 1/1 |"):
        assert row in table
    assert "## Genotype diffs of each group's best" in table
    runs = (out / "runs.csv").read_text().splitlines()[1:]
    random_row = next(r for r in runs if ",random-3," in r)
    # the random unit reports the sample with the lowest validation perplexity
    valids = [json.loads((out / "DARTS" / "random-3" / "seed0" / f"sample{i:03d}" / "metrics.jsonl").read_text().splitlines()[-1])["valid_ppl"] for i in range(3)]
    assert f"sample{valids.index(min(valids)):03d}" in random_row


@pytest.mark.parametrize("name", ["spaces.toml", "spaces_ptb.toml"])
def test_shipped_studies_load_with_equal_budgets(name, tmp_path):
    if name == "spaces_ptb.toml" and not (ROOT.parent / "shared" / "data" / "ptb").is_dir():
        pytest.skip("../shared/data/ptb is not present beside this checkout")
    study = load_study(ROOT / "studies" / name, tmp_path)
    units, jobs = plan(study)
    kinds = {u.kind for u in units}
    assert kinds == {"darts", "random", "fixed"}
    assert {u.space for u in units} >= {"DARTS", "I-DARTS", "ESS", "LSTM"}
    assert len({u.seed for u in units}) >= 2
