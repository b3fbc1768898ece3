"""The allowed range of every numeric command-line option, in one table.

Every command calls :func:`check_options` with its arguments before it reads a
file or builds a model, so a value outside its range (a negative size, a NaN
learning rate, a dropout of 1, a batch larger than any corpus could fill) is a
usage error (exit 2) that names the option, never a traceback later on.  The
maxima are deliberately generous: they only exclude values that cannot work on
any machine (allocating the model or the corpus would fail) or that are typos.

:func:`check_corpus_fits` is the one check that needs the data: every split must
hold at least two rows of the batch it is cut into.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional

from essdsl.lang.limits import max_size

# The largest embedding or hidden size an option may ask for: the language's own size
# limit (state h : N), so that --nhid and a size written in the file agree;
# ESSDSL_MAX_SIZE raises both (essdsl/lang/limits.py).
MAX_SIZE = max_size()
MAX_BATCH = 4096
MAX_BPTT = 1000
MAX_SYNTHETIC_TOKENS = 10_000_000  # the Markov sampler runs ~1 s per 300,000 tokens
MIN_SYNTHETIC_TOKENS = 1000
MAX_VOCAB = 2_000_000
MAX_SEED = 2**32 - 1  # numpy's seeds are unsigned 32-bit


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``low < value`` when ``low_open``, ``value < high`` when ``high_open``)."""

    kind: type  # int or float
    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def accepts(self, value) -> bool:
        if self.kind is float and not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self) -> str:
        if self.kind is int:
            if self.low == 1:
                return "a positive integer" + (f" (at most {int(self.high)})" if self.high != math.inf else "")
            if self.high == math.inf:
                return f"an integer of at least {int(self.low)}"
            return f"an integer from {int(self.low)} to {int(self.high)}"
        if (self.low, self.high, self.low_open, self.high_open) == (0, 1, False, True):
            return "a probability in [0, 1)"
        lower = f"greater than {self.low:g}" if self.low_open else f"of at least {self.low:g}"
        if self.high == math.inf:
            return f"a finite number {lower}"
        return f"a finite number {lower} and at most {self.high:g}"


def _positive_int(high: float) -> Range:
    return Range(int, 1, high)


PROBABILITY = Range(float, 0, 1, high_open=True)
NON_NEGATIVE = Range(float, 0)
POSITIVE = Range(float, 0, low_open=True)

# Option (the parameter name of the command function) -> its range.  The same
# name means the same thing in every command.
RANGES: dict[str, Range] = {
    "ninp": _positive_int(MAX_SIZE),
    "nhid": _positive_int(MAX_SIZE),
    "vocab": _positive_int(MAX_VOCAB),
    "epochs": _positive_int(100_000),
    "final_epochs": Range(int, 0, 100_000),
    "max_steps": _positive_int(10**9),
    "batch_size": _positive_int(MAX_BATCH),
    "eval_batch_size": _positive_int(MAX_BATCH),
    "batch": _positive_int(MAX_BATCH),
    "search_batch": _positive_int(MAX_BATCH),
    "bf16_batch": _positive_int(MAX_BATCH),
    "bptt": _positive_int(MAX_BPTT),
    "seed": Range(int, 0, MAX_SEED),
    "threads": _positive_int(1024),
    "repeats": _positive_int(10_000),
    "bf16_steps": Range(int, 0, 100_000),
    "synthetic_tokens": Range(int, MIN_SYNTHETIC_TOKENS, MAX_SYNTHETIC_TOKENS),
    "lr": POSITIVE,
    "arch_lr": NON_NEGATIVE,  # 0 freezes the architecture: a deliberate control run
    "wd": NON_NEGATIVE,
    "arch_wd": NON_NEGATIVE,
    "clip": POSITIVE,
    "dropout": PROBABILITY,
    "dropouth": PROBABILITY,
    "dropoutx": PROBABILITY,
    "dropouti": PROBABILITY,
    "dropoute": PROBABILITY,
}


def option_name(parameter: str) -> str:
    return "--" + parameter.rstrip("_").replace("_", "-")


def option_problems(values: Mapping[str, object], name_of=option_name) -> list[str]:
    """Every value in ``values`` (parameter name -> value) outside its range, as messages
    naming each by ``name_of(parameter)`` (the CLI's flag by default)."""
    problems = []
    for name, value in values.items():
        limits = RANGES.get(name)
        if limits is None or value is None or isinstance(value, bool):
            continue
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if not isinstance(item, (int, float)) or not limits.accepts(item):
                problems.append(f"{name_of(name)} must be {limits.describe()}, got {item}")
    if values.get("data") is not None and values.get("synthetic_tokens") is not None:
        problems.append("--synthetic-tokens sets the size of the built-in corpus; it cannot be combined with --data")
    return problems


def check_options(values: Mapping[str, object]) -> None:
    """Exit 2 (usage error) with one line per bad option; call first thing in a command with ``locals()``."""
    from essdsl.cli.common import fail

    problems = option_problems(values)
    if problems:
        fail("\nessdsl: error: ".join(problems), 2)


def corpus_problems(corpus, batches: Iterable[tuple[str, int]]) -> list[str]:
    """``(split, batch size)`` pairs the corpus is too short for: a split cut into
    ``B`` columns needs at least ``2 B`` tokens (two rows)."""
    problems = []
    for split, batch_size in batches:
        tokens = len(corpus.split(split))
        if tokens < 2 * batch_size:
            where = f"{corpus.source}/{split}.txt" if not corpus.source.startswith("synthetic(") else f"the synthetic {split} split"
            problems.append(
                f"{where}: error: {tokens:,} tokens are too few for batch size {batch_size} "
                f"(at least {2 * batch_size:,} needed); use a smaller batch size or more data"
            )
    return problems


def run_batches(cfg) -> list[tuple[str, int]]:
    """The ``(split, batch size)`` cuts a search or training run with ``cfg`` makes."""
    batches = [("train", cfg.batch_size), ("valid", cfg.eval_batch_size)]
    if cfg.search:  # the architecture step reads valid at the training batch size
        batches.append(("valid", cfg.batch_size))
    return batches


def check_corpus_fits(corpus, batches: Iterable[tuple[str, int]]) -> None:
    """Exit 1, naming the split's file, when ``corpus`` cannot fill two rows of a
    ``(split, batch size)`` it is about to be cut into (before a run starts)."""
    import sys

    import typer

    problems = corpus_problems(corpus, batches)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        raise typer.Exit(1)


__all__ = ["MAX_SIZE", "RANGES", "Range", "check_corpus_fits", "check_options", "corpus_problems", "option_problems", "run_batches"]
