"""Hostile input to the run commands: options out of range, bad data folders,
dangerous output paths, corrupted or tampered run files, faults while writing.
Every case must end with a clear message and exit 1 or 2, never a traceback,
and leave no file half-written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from essdsl.options import RANGES, option_problems

ROOT = Path(__file__).resolve().parents[1]
SPACE = "spaces/darts_rnn.space"


def essdsl(*args, cwd=None, timeout=300, env=None):
    return subprocess.run(
        [sys.executable, "-m", "essdsl", *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
    )


def assert_clean_failure(result, fragment, code=None):
    assert result.returncode != 0, result.stdout
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    assert fragment in result.stderr, result.stderr


# ----------------------------------------------------------------- options
@pytest.mark.parametrize(
    "args, fragment",
    [
        (["search", SPACE, "--nhid", "-5"], "--nhid must be a positive integer"),
        (["search", SPACE, "--nhid", "100000000"], "--nhid must be a positive integer (at most"),
        (["search", SPACE, "--batch-size", "100000"], "--batch-size must be"),
        (["search", SPACE, "--synthetic-tokens", "100000000000"], "--synthetic-tokens must be"),
        (["search", SPACE, "--seed", "-1"], "--seed must be"),
        (["search", SPACE, "--lr", "-1"], "--lr must be a finite number greater than 0"),
        (["search", SPACE, "--lr", "nan"], "--lr must be a finite number"),
        (["search", SPACE, "--lr", "inf"], "--lr must be a finite number"),
        (["search", SPACE, "--wd", "nan"], "--wd must be a finite number"),
        (["search", SPACE, "--arch-lr", "nan"], "--arch-lr must be"),
        (["search", SPACE, "--dropoutx", "2"], "--dropoutx must be a probability in [0, 1)"),
        (["search", SPACE, "--dropout", "1.0"], "--dropout must be a probability"),
        (["search", SPACE, "--dropouth", "-0.5"], "--dropouth must be a probability"),
        (["search", SPACE, "--clip", "-1"], "--clip must be"),
        (["search", SPACE, "--bptt", "0"], "--bptt must be"),
        (["search", SPACE, "--final-epochs", "-1"], "--final-epochs must be"),
        (["search", SPACE, "--data", "/nonexistent", "--synthetic-tokens", "5000"], "cannot be combined with --data"),
        (["train", "genotypes/darts_v1.space", "--ninp", "0"], "--ninp must be a positive integer"),
        (["eval", "/nonexistent/model.pt", "--batch-size", "0"], "--batch-size must be"),
        (["compile", SPACE, "--vocab", "-3"], "--vocab must be"),
        (["check", SPACE, "--nhid", "100000"], "--nhid must be"),
    ],
)
def test_out_of_range_options_are_usage_errors(args, fragment):
    assert_clean_failure(essdsl(*args), fragment, code=2)


def test_every_numeric_range_rejects_nan_and_its_bounds():
    for name, limits in RANGES.items():
        low = limits.low - 1 if limits.kind is int else (limits.low if limits.low_open else limits.low - 1e-9)
        assert option_problems({name: limits.kind(low)}), name
        assert not option_problems({name: limits.kind(limits.low + (1 if limits.low_open else 0))}), name
        if limits.high != float("inf"):
            above = limits.high + 1 if limits.kind is int else limits.high
            assert option_problems({name: limits.kind(above)}), name
        if limits.kind is float:
            assert option_problems({name: float("nan")}) and option_problems({name: float("-inf")}), name


def test_a_valid_split_of_one_word_names_the_file(tmp_path):
    (tmp_path / "train.txt").write_text("a b c d e f g\n" * 200)
    (tmp_path / "test.txt").write_text("a b c d e f g\n" * 20)
    (tmp_path / "valid.txt").write_text("word\n")
    r = essdsl("search", SPACE, "--data", tmp_path, "--nhid", "8", "--ninp", "8", "--batch-size", "4")
    assert_clean_failure(r, f"{tmp_path}/valid.txt: error: 2 tokens are too few for batch size", code=1)
