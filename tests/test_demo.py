"""The README's main job, scaled down: search ess_joint on the built-in corpus,
then train the derived genotype from scratch; it must beat the unigram model
on validation, and the run prints both next to the true floor."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_demo_search_then_trained_genotype_beats_unigram(tmp_path):
    run_dir = tmp_path / "run"
    env = dict(os.environ, ESSDSL_FINAL_EPOCHS="2", COLUMNS="200")
    result = subprocess.run(
        [sys.executable, "-m", "essdsl", "search", str(ROOT / "spaces/ess_joint.space"), "--out", str(run_dir),
         "--epochs", "1", "--synthetic-tokens", "20000"],  # fmt: skip
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    output = result.stdout + result.stderr
    assert "true floor" in output and "unigram" in output
    run = json.loads((run_dir / "manifest.json").read_text())
    unigram, floor = run["corpus"]["unigram_ppl"], run["corpus"]["floor_ppl"]
    final = [json.loads(line) for line in (run_dir / "final" / "metrics.jsonl").read_text().splitlines() if line.strip()]
    derived = final[-1]["valid_ppl"]
    assert floor < derived < unigram, (floor, derived, unigram)
    assert "beats the unigram model" in output
    check = subprocess.run([sys.executable, "-m", "essdsl", "check", str(run_dir / "genotype.space")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
