"""Golden diagnostics: one small bad file per diagnostic code.

Each ``tests/golden/CODE[-N].space`` starts with one or more lines
``# expect: LINE:COL: SEVERITY: MESSAGE-SUBSTRING``.  Checking the file must
produce exactly those errors (every error expected, each at its exact
position), plus any expected warnings; the first expectation must carry the
code the file is named after.  A final test reads the parser, resolver and
checker sources and fails when a diagnostic code has no golden file.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from essdsl.lang.check import check_file

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
GOLDEN_FILES = sorted(GOLDEN.glob("*.space"))
EXPECT = re.compile(r"# expect: (\d+):(\d+): (error|warning|note): (.+)")

# Values of ``f"bad-{a.name}"`` in graph.py: the attributes validated against a fixed list.
ATTRIBUTE_CODES = {"bad-transform", "bad-select", "bad-norm"}
# Codes that need something other than a file's contents; each is tested below.
NOT_FILE_CODES = {"io"}


def golden_code(path: Path) -> str:
    return re.sub(r"-\d+$", "", path.stem)


def expectations(path: Path) -> list[tuple[int, int, str, str]]:
    found = []
    for raw in path.read_bytes().split(b"\n"):
        line = raw.decode("utf-8", errors="replace")
        match = EXPECT.fullmatch(line.rstrip())
        if not match:
            break
        found.append((int(match.group(1)), int(match.group(2)), match.group(3), match.group(4)))
    return found


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.name)
def test_golden_file(path: Path):
    expected = expectations(path)
    assert expected, f"{path.name} has no '# expect:' first line"
    _, report = check_file(path)
    remaining = list(report.diagnostics)
    for index, (line, column, severity, substring) in enumerate(expected):
        match = next(
            (
                d
                for d in remaining
                if d.line == line and d.column == column and d.severity == severity and substring in d.message
            ),
            None,
        )
        assert match is not None, (
            f"{path.name}: no {severity} at {line}:{column} containing {substring!r}; got:\n{report.render()}"
        )
        if index == 0:
            assert match.code == golden_code(path), f"{path.name}: expected code {golden_code(path)}, got {match.code}"
        remaining.remove(match)
    unexpected = [d for d in remaining if d.severity == "error"]
    assert not unexpected, f"{path.name}: unexpected errors {unexpected}"


def _call_name(node: ast.Call) -> str:
    func = node.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def source_codes() -> set[str]:
    """Every diagnostic code the front end can emit, read from its source."""
    codes: set[str] = set()
    for path in sorted((ROOT / "essdsl" / "lang").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            called = _call_name(node)
            code_node = None
            for keyword in node.keywords:
                if keyword.arg == "code":
                    code_node = keyword.value
            if code_node is None and called in ("err", "error", "warning") and len(node.args) >= 3:
                code_node = node.args[2]
            if code_node is None or isinstance(code_node, ast.Name):
                continue  # no code, or a helper passing its own ``code`` parameter on
            if isinstance(code_node, ast.Constant) and isinstance(code_node.value, str):
                codes.add(code_node.value)
            elif isinstance(code_node, ast.JoinedStr) and ast.unparse(code_node) == "f'bad-{a.name}'":
                codes |= ATTRIBUTE_CODES
            else:
                raise AssertionError(f"{name}: a diagnostic code this test cannot read: {ast.unparse(code_node)}")
    return codes


def test_every_diagnostic_code_has_a_golden_file():
    codes = source_codes()
    assert {"syntax", "cycle", "undefined-name", "flat-softmax"} <= codes  # the reader works
    covered = {golden_code(p) for p in GOLDEN_FILES} | NOT_FILE_CODES
    missing = sorted(codes - covered)
    assert not missing, f"diagnostic codes without a golden file in tests/golden: {missing}"
    stale = sorted({golden_code(p) for p in GOLDEN_FILES} - codes)
    assert not stale, f"golden files for codes the source no longer emits: {stale}"


def test_io_code_for_missing_file_and_directory(tmp_path: Path):
    _, report = check_file(tmp_path / "missing.space")
    assert [d.code for d in report.diagnostics] == ["io"]
    assert "no such file" in report.diagnostics[0].message
    _, report = check_file(tmp_path)
    assert [d.code for d in report.diagnostics] == ["io"]
    assert "directory" in report.diagnostics[0].message


def _essdsl(*args):
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "essdsl", *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "COLUMNS": "120"},
    )  # fmt: skip


BOM = b"\xef\xbb\xbf"


def test_utf8_byte_order_mark_is_accepted_by_every_command(tmp_path: Path):
    canonical = (ROOT / "genotypes" / "gru.space").read_bytes()
    with_bom = tmp_path / "gru.space"
    with_bom.write_bytes(BOM + canonical)
    for command in (["check"], ["fmt", "--check"], ["show"], ["stats"], ["diff", ROOT / "genotypes" / "gru.space"]):
        result = _essdsl(command[0], with_bom, *command[1:])
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr
    compiled = _essdsl("compile", with_bom, "--ninp", 8, "--nhid", 8, "-o", tmp_path / "gru.pt")
    assert compiled.returncode == 0, compiled.stderr
    # fmt keeps the mark (it is the editor's, not layout) and formats what follows it
    messy = tmp_path / "messy.space"
    messy.write_bytes(BOM + canonical.replace(b"\n\ncell", b"\ncell"))
    assert _essdsl("fmt", "--write", messy).returncode == 0
    assert messy.read_bytes() == BOM + canonical


def test_positions_after_a_byte_order_mark_count_from_the_text(tmp_path: Path):
    bad = tmp_path / "bad.space"
    bad.write_bytes(BOM + b"space bad cell { input x : ninp state h : nhid h[t] = tanh(linear(x[t], q)) }\n")
    _, report = check_file(bad)
    [diagnostic] = report.diagnostics
    assert (diagnostic.line, diagnostic.column, diagnostic.code) == (1, 73, "undefined-name")
    assert "\ufeff" not in report.render()
