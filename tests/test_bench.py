"""The benchmark harness (essdsl bench): round-robin timing, the rows and the
summary lines and JSON keys the README documents.  Sizes are tiny: this checks
what is measured and reported, never how fast anything is."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from essdsl.benchmark import summarize, time_steps

ROOT = Path(__file__).resolve().parent.parent


def test_time_steps_warms_up_then_times_round_robin():
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    medians = time_steps(steps, repeats=3)
    assert calls == ["a", "b", "c"] * 4  # one warm-up round, then 3 timed rounds, interleaved
    assert set(medians) == {"a", "b", "c"} and all(m >= 0 for m in medians.values())


def test_summary_ratios_come_from_the_rows():
    from essdsl.benchmark import Row

    rows = [Row("reference", 64, "fp32", 3.0), Row("official-darts", 64, "fp32", 2.0), Row("generated", 64, "fp32", 1.5),
            Row("generated+compile", 64, "fp32", 1.2), Row("generated+compile+bf16", 64, "bf16", 0.1),
            Row("gemm-floor", 64, "fp32", 0.9),
            Row("reference", 64, "fp32", 7.0, step="search-1st"), Row("generated+compile", 64, "fp32", 2.5, step="search-1st"),
            Row("gemm-floor", 64, "fp32", 1.5, step="search-1st"), Row("generated+compile", 64, "fp32", 0.5, step="search-2nd"),
            Row("gemm-floor", 64, "fp32", 0.4, step="search-2nd")]  # fmt: skip
    result = summarize(rows, [], "x", "cpu")
    assert result["speedup_vs_reference_b64"] == 3.0 / 1.2  # the fastest fp32 generated fwd+bwd row; bf16 is its own row
    assert result["speedup_vs_official_darts_b64"] == 2.0 / 1.2
    assert result["floor_fraction_b64"] == 0.9 / 1.2
    assert result["search_1st_speedup_vs_reference_b64"] == 7.0 / 2.5  # each search step against its own kind
    assert result["search_1st_floor_fraction_b64"] == 1.5 / 2.5
    assert result["search_2nd_speedup_vs_reference_b64"] is None and result["search_2nd_floor_fraction_b64"] == 0.4 / 0.5


def test_bench_cli_prints_every_row_and_writes_the_documented_json(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "essdsl", "bench", "spaces/darts_rnn.space", "--nhid", "16", "--vocab", "40", "--bptt", "4",
         "--batch", "64", "--repeats", "1", "--no-compile", "--json", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == f"wrote {out}"
    assert lines[-3].startswith("speedup vs reference: ") and lines[-3].endswith(" (B=64)")
    assert lines[-2].startswith("fraction of GEMM floor: ") and lines[-2].endswith(" (B=64)")
    assert "activations: estimate" in proc.stdout
    assert "search-1st step: " in proc.stdout and "search-2nd step: " in proc.stdout
    result = json.loads(out.read_text())
    impls = {(r["impl"], r["dtype"], r["step"]) for r in result["rows"]}
    assert impls == {("reference", "fp32", "fwd+bwd"), ("official-darts", "fp32", "fwd+bwd"), ("generated", "fp32", "fwd+bwd"),
                     ("generated+bf16", "bf16", "fwd+bwd"), ("gemm-floor", "fp32", "fwd+bwd")} | {
                     (impl, "fp32", step) for impl in ("reference", "generated", "gemm-floor")
                     for step in ("search-1st", "search-2nd")}  # fmt: skip
    for row in result["rows"]:
        assert set(row) >= {"impl", "batch", "dtype", "seconds_per_step"} and row["batch"] == 64
        assert row["seconds_per_step"] > 0
    rows = {(r["impl"], r["step"]): r["seconds_per_step"] for r in result["rows"]}
    assert result["speedup_vs_reference_b64"] == rows["reference", "fwd+bwd"] / rows["generated", "fwd+bwd"]
    assert result["floor_fraction_b64"] == rows["gemm-floor", "fwd+bwd"] / rows["generated", "fwd+bwd"]
    # GEMM work in forward passes' worth: fwd+bwd 3, first-order search step 2 + 3, second order 3 + 3 + 2 + 2 + 3
    gflop = {r["step"]: float(r["note"].split()[0]) for r in result["rows"] if r["impl"] == "gemm-floor"}
    assert gflop["search-1st"] / gflop["fwd+bwd"] == pytest.approx(5 / 3, rel=1e-2)
    assert gflop["search-2nd"] / gflop["fwd+bwd"] == pytest.approx(13 / 3, rel=1e-2)
    assert result["search_2nd_speedup_vs_reference_b64"] == rows["reference", "search-2nd"] / rows["generated", "search-2nd"]
    assert result["memory"][0]["activations_measured_bytes"] > 0


def test_the_wrapper_script_with_option_values_and_no_space(tmp_path):
    """The README's `python bench/supernet_step.py --batch 64 --json out.json`: option values
    (64, out.json) are not the space; the default space is benchmarked (tiny sizes here)."""
    out = tmp_path / "out.json"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "supernet_step.py"), "--batch", "4", "--json", str(out), "--nhid", "8",
         "--vocab", "50", "--bptt", "4", "--repeats", "1", "--no-reference", "--no-compile", "--no-search-steps"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "Missing argument" not in r.stderr
    assert "darts_rnn" in json.loads(out.read_text())["space"]
