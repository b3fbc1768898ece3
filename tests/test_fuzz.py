"""Fuzzing the front end: whatever the input, ``check_text`` returns a Report and never raises.

Three sources of input: random bytes, random text, and random character- or
token-level mutations of the shipped spaces and genotypes (which reach far
deeper into the resolver and checker than random text does).  Every error
diagnostic for non-empty text must point at a line, so the CLI can show it.

The last tests run a bounded, seeded slice of ``bench/fuzz_lang.py`` (the long
fuzz: 100,000 inputs, see the README): mutants aimed at the language's limits
through check, fmt, show, stats and diff, and a few compiled.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from essdsl.lang.check import check_text
from essdsl.errors import Report

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "spaces").glob("*.space")) + sorted((ROOT / "genotypes").glob("*.space"))
SHIPPED_TEXTS = [p.read_text(encoding="utf-8") for p in SHIPPED]

# The language pieces mutations splice in (so that many mutants still parse) and the
# tokenizer, shared with the long fuzz in bench/.
sys.path.insert(0, str(ROOT / "bench"))
import fuzz_lang  # noqa: E402
from fuzz_lang import TOKENS  # noqa: E402

FUZZ_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def assert_reported(source) -> None:
    graph, report = check_text(source, "<fuzz>")
    assert isinstance(report, Report)
    report.render()  # rendering with the source line and caret must not fail either
    text = source.decode("utf-8", errors="replace") if isinstance(source, bytes) else source
    if text.strip():
        for diagnostic in report.diagnostics:
            if diagnostic.severity == "error":
                assert diagnostic.line >= 1, f"error without a line: {diagnostic}"
    if not report.ok:
        return
    assert graph is not None


@FUZZ_SETTINGS
@given(st.binary(max_size=400))
def test_random_bytes_never_raise(data):
    assert_reported(data)


@FUZZ_SETTINGS
@given(st.text(max_size=300))
def test_random_text_never_raises(text):
    assert_reported(text)


@FUZZ_SETTINGS
@given(st.lists(st.sampled_from(TOKENS), max_size=60).map(" ".join))
def test_random_token_soup_never_raises(text):
    assert_reported(text)


class DrawnChoices:
    """The part of random.Random that bench/fuzz_lang.py's mutations use, drawn from
    hypothesis instead, so that the same mutations shrink to a minimal failing input."""

    def __init__(self, data: st.DataObject):
        self.data = data

    def randint(self, low: int, high: int) -> int:
        return self.data.draw(st.integers(low, high))

    def randrange(self, stop: int) -> int:
        return self.data.draw(st.integers(0, stop - 1))

    def choice(self, options):
        return self.data.draw(st.sampled_from(options))

    def random(self) -> float:
        return self.data.draw(st.floats(0.0, 1.0, exclude_max=True))


def _mutate_characters(data: st.DataObject, text: str) -> str:
    return fuzz_lang.mutate_characters(DrawnChoices(data), text)


def _mutate_tokens(data: st.DataObject, text: str) -> str:
    return fuzz_lang.mutate_tokens(DrawnChoices(data), text)


@FUZZ_SETTINGS
@given(st.data())
def test_character_mutations_of_shipped_files_never_raise(data):
    text = data.draw(st.sampled_from(SHIPPED_TEXTS), label="file")
    assert_reported(_mutate_characters(data, text))


@FUZZ_SETTINGS
@given(st.data())
def test_token_mutations_of_shipped_files_never_raise(data):
    text = data.draw(st.sampled_from(SHIPPED_TEXTS), label="file")
    assert_reported(_mutate_tokens(data, text))


@FUZZ_SETTINGS
@given(st.data())
def test_mutated_bytes_of_shipped_files_never_raise(data):
    raw = bytearray(data.draw(st.sampled_from(SHIPPED_TEXTS), label="file").encode("utf-8"))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw) - 1))
        raw[position] = data.draw(st.integers(0, 255))
    assert_reported(bytes(raw))


def test_shipped_files_check_clean():
    for path, text in zip(SHIPPED, SHIPPED_TEXTS):
        _, report = check_text(text, str(path))
        assert report.ok, report.render()


def test_deep_nesting_is_a_diagnostic_not_a_crash():
    depth = 3000
    text = "space deep\ncell {\n  input x : ninp\n  state h[t-1] : nhid\n  h[t] = " + "tanh(" * depth + "x" + ")" * depth + "\n}\n"
    _, report = check_text(text)
    assert not report.ok
    assert all(d.line >= 1 for d in report.diagnostics)



def test_seeded_mutants_pass_through_every_language_stage():
    """~10 s: 1,200 mutants (a third aimed at a limit) through check/fmt/show/stats/diff."""
    summary = fuzz_lang.run(inputs=1200, seed=12, compile_every=0, findings_dir=None, progress_every=0)
    assert summary["findings"] == 0, "see the FINDING lines above"
    assert summary["checked_clean"] > 50  # the mutants reach past the parser into the checker


def test_a_few_clean_mutants_compile_and_match_the_reference():
    rng = random.Random(5)
    compiled = 0
    for _ in range(400):
        base, source = fuzz_lang.mutant(rng)
        if isinstance(source, str) and fuzz_lang.exercise(source, base, compile_model=True):
            compiled += 1
            if compiled == 3:
                break
    assert compiled == 3
