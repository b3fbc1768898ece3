"""Diagnostics on hostile text (issue 12 D10): one definition of a line for the
parser, the excerpt and fmt; bounded output however many problems a file has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from essdsl.lang import limits
from essdsl.lang.check import check_text
from essdsl.lang.fmt import format_text
from essdsl.lang.parse import source_lines

ROOT = Path(__file__).resolve().parent.parent
# Characters str.splitlines() breaks at but the parser does not ("\r\n" is one break for both).
LOOKALIKES = ["\f", "\r", "\v", "\x1c", "\x85", "\u2028", "\u2029"]


def body(separator: str) -> str:
    """The separator inside a comment, and (where the grammar calls it blank) between tokens."""
    between = separator if separator in " \t\f\r" else ""
    return (
        f"space a\n# one{separator}comment line\ncell {{\n  input x : ninp\n"
        f"  state h[t-1] : nhid{between}\n"
        "  h[t] = tanh(undefined_name)\n}\n"
    )


@pytest.mark.parametrize("separator", LOOKALIKES, ids=[repr(c) for c in LOOKALIKES])
def test_the_excerpt_shows_the_line_the_parser_means(separator):
    text = body(separator)
    _, report = check_text(text, "<lines>")
    [error] = [d for d in report.diagnostics if d.code == "undefined-name"]
    assert (error.line, error.column) == (6, 15)
    rendered = error.render("<lines>", text).split("\n")
    assert rendered[1] == "    h[t] = tanh(undefined_name)"
    assert rendered[2] == "  " + " " * 14 + "^" + "~" * (len("undefined_name") - 1)


@pytest.mark.parametrize("separator", LOOKALIKES, ids=[repr(c) for c in LOOKALIKES])
def test_fmt_counts_lines_like_the_parser(separator):
    text = body(separator).replace("undefined_name", "x")
    formatted = format_text(text)
    assert format_text(formatted) == formatted
    assert check_text(formatted)[1].ok
    assert len(source_lines(text)) == text.count("\n") + 1


def test_crlf_files_show_lines_without_the_carriage_return():
    text = body("").replace("\n", "\r\n")
    _, report = check_text(text, "<crlf>")
    rendered = report.render()
    assert "\r" not in rendered and "    h[t] = tanh(undefined_name)\n" in rendered


def test_a_long_line_is_cut_around_the_column():
    text = "space a\ncell {\n  input x : ninp\n  state h[t-1] : nhid\n  h[t] = " + " + ".join(["x"] * 90) + " + nope\n}\n"
    _, report = check_text(text, "<long>")
    source_line, caret = report.render().split("\n")[1:3]
    assert len(source_line) <= limits.MAX_EXCERPT + 10
    assert source_line[caret.index("^") : caret.index("^") + 4] == "nope"


def test_thirty_thousand_repeats_print_a_bounded_report():
    """30,000 duplicate ops once printed 8.1 GB: each of 30,000 diagnostics quoted the whole line."""
    text = "space a\nops o = {" + ", ".join(["tanh"] * 30_000) + "}\ncell {\n  input x : ninp\n  state h[t-1] : nhid\n  h[t] = tanh(linear(x, h[t-1]))\n}\n"
    path = Path(__file__).parent / "golden" / "duplicate-op.space"  # any file: the text comes from stdin below
    assert path.exists()
    result = subprocess.run(
        [sys.executable, "-c", "import sys; from essdsl.cli.common import print_report; from essdsl.lang.check import check_text;"
         "print_report(check_text(sys.stdin.read(), 'many.space')[1])"],
        input=text, capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert len(result.stderr) < 50_000, len(result.stderr)
    assert result.stderr.count(": error: op 'tanh' listed twice") == limits.MAX_DIAGNOSTICS
    assert f"many.space: note: {29_999 - limits.MAX_DIAGNOSTICS} more diagnostics not shown" in result.stderr


def test_the_cli_caps_diagnostics_too(tmp_path):
    path = tmp_path / "many.space"
    path.write_text("space a\nops o = {" + ", ".join(["tanh"] * 3_000) + "}\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "essdsl", "check", str(path)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "more diagnostics not shown" in result.stderr and len(result.stderr) < 50_000
