"""A growing search as a user runs it: ``essdsl search`` of a space with a grow block grows
on schedule, says so, records each growth in metrics.jsonl, derives the genotype at the
grown size (``essdsl derive`` gives the same) and ``essdsl plot`` marks the growth."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["--ninp", "12", "--nhid", "12", "--batch-size", "8", "--bptt", "8", "--threads", "1", "--synthetic-tokens", "1500", "--lr", "5"]


def essdsl(*args):
    result = subprocess.run([sys.executable, "-m", "essdsl", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env={**os.environ, "COLUMNS": "120", "ESSDSL_FINAL_EPOCHS": "0"})  # fmt: skip
    assert "Traceback" not in result.stderr, result.stderr
    return result


@pytest.mark.slow
def test_search_grows_records_derives_and_plots(tmp_path):
    space = tmp_path / "grow.space"
    space.write_text((ROOT / "spaces" / "two_input_rnn_grow.space").read_text().replace("every 2 epochs", "every 1 epochs").replace("mode then_prune", "mode interleaved"))
    run = tmp_path / "run"
    result = essdsl("search", space, *SMALL, "--epochs", "2", "--out", run)
    assert result.returncode == 0, result.stderr
    assert "grew s: +s3 (2 -> 3 nodes) at epoch 1" in result.stdout + result.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = [e for r in records for e in r.get("growth", [])]
    assert [(e["epoch"], e["member"], sorted(e["pruned"])) for e in events] == [(1, "s3", ["s1", "s2"]), (2, "s4", ["s3"])]
    assert all(abs(e["loss_after"] - e["loss_before"]) <= 1e-5 * abs(e["loss_before"]) for e in events)
    genotype = (run / "genotype.space").read_text()
    assert "node s4 = mix" in genotype and essdsl("check", run / "genotype.space").returncode == 0
    again = essdsl("derive", run, "-o", tmp_path / "again.space")
    assert again.returncode == 0, again.stderr
    strip = lambda text: [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert strip((tmp_path / "again.space").read_text()) == strip(genotype)
    plotted = essdsl("plot", run)
    assert plotted.returncode == 0 and (run / "plots" / "perplexity.png").stat().st_size > 0
