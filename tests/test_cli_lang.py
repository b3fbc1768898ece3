"""The language commands run as a user runs them: ``python -m essdsl …`` in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
DARTS = ROOT / "spaces" / "darts_rnn.space"
IDARTS = ROOT / "spaces" / "idarts_rnn.space"
ESS = ROOT / "spaces" / "ess_joint.space"


def essdsl(*args, cwd=None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "essdsl", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=120,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout
    return result


BAD_SPACE = """space bad
cell {
  input x[t] : ninp
  state h[t-1] : nhid
  node s1 = mix { from s0 ops {tanh} }
  h[t] = s1
}
"""

SYNTAX_ERROR = "space broken\ncell {\n  node = tanh(x)\n}\n"


def test_check_ok_and_bad_exit_codes_with_file_line_col(tmp_path):
    ok = essdsl("check", DARTS)
    assert ok.returncode == 0 and "ok" in ok.stdout
    bad = tmp_path / "bad.space"
    bad.write_text(BAD_SPACE)
    result = essdsl("check", bad)
    assert result.returncode == 1
    assert f"{bad}:5:24: error: undefined name 's0'" in result.stderr
    assert "^" in result.stderr  # the caret under the name


def test_missing_file_is_a_clear_message_for_every_command(tmp_path):
    missing = tmp_path / "nope.space"
    for command in (["check"], ["fmt"], ["show"], ["stats"]):
        result = essdsl(*command, missing)
        assert result.returncode != 0
        assert f"{missing}: error: no such file" in result.stderr
    result = essdsl("diff", missing, DARTS)
    assert result.returncode == 2 and "no such file" in result.stderr


def test_fmt_prints_checks_and_writes_atomically(tmp_path):
    messy = tmp_path / "messy.space"
    messy.write_text("space   messy\ncell{input x[t]:ninp\nstate h[t-1] : nhid # the state\nh[t]=tanh(linear(x[t],h[t-1]))}\n")
    before = messy.read_text()
    printed = essdsl("fmt", messy)
    assert printed.returncode == 0
    assert printed.stdout != before and "# the state" in printed.stdout
    assert messy.read_text() == before  # printing writes nothing

    check = essdsl("fmt", "--check", messy)
    assert check.returncode == 1 and f"{messy}: would be reformatted" in check.stdout
    assert messy.read_text() == before

    write = essdsl("fmt", "--write", messy)
    assert write.returncode == 0
    assert messy.read_text() == printed.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messy.space"]  # no temp file left
    again = essdsl("fmt", "--check", messy)
    assert again.returncode == 0 and again.stdout == ""


def test_fmt_never_writes_a_file_with_errors(tmp_path):
    broken = tmp_path / "broken.space"
    broken.write_text(SYNTAX_ERROR)
    result = essdsl("fmt", "--write", broken)
    assert result.returncode == 1
    assert f"{broken}:3:" in result.stderr and "error" in result.stderr
    assert broken.read_text() == SYNTAX_ERROR
    both = essdsl("fmt", "--check", "--write", broken)
    assert both.returncode != 0 and "exclude" in both.stderr


def test_show_dot_to_a_file_and_text(tmp_path):
    out = tmp_path / "darts.dot"
    result = essdsl("show", DARTS, "--format", "dot", "-o", out)
    assert result.returncode == 0
    dot = out.read_text()
    assert dot.startswith('digraph "darts_rnn" {') and dot.rstrip().endswith("}")
    assert '"s0" -> "s8" [style=dashed' in dot
    text = essdsl("show", ESS)
    assert text.returncode == 0 and "hhat  [mixed, size 300]" in text.stdout
    bad = essdsl("show", DARTS, "--format", "svg")
    assert bad.returncode != 0 and "--format" in bad.stderr


def test_stats_json_values():
    result = essdsl("stats", ROOT / "genotypes" / "darts_v2.space", "--ninp", 850, "--nhid", 850, "--json")
    assert result.returncode == 0
    data = json.loads(result.stdout)
    assert data["params"]["supernet"] == 22_960_000
    assert data["sizes"] == {"ninp": 850, "nhid": 850, "vocab": 10000}
    space = json.loads(essdsl("stats", DARTS, "--vocab", 33278, "--ninp", 700, "--nhid", 700, "--json").stdout)
    assert space["architectures"] == 2_642_411_520
    assert space["params"]["derived_max"] == 33_127_878
    table = essdsl("stats", ESS)
    assert table.returncode == 0 and "architectures" in table.stdout and "h[t]" in table.stdout
    bad = essdsl("stats", DARTS, "--vocab", 0)
    assert bad.returncode != 0 and "--vocab must be a positive integer" in bad.stderr


def test_diff_darts_idarts_shows_only_select_changes():
    result = essdsl("diff", DARTS, IDARTS)
    assert result.returncode == 1
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 8
    assert all(".select: edge_softmax -> node_softmax" in line for line in lines)
    same = essdsl("diff", DARTS, DARTS)
    assert same.returncode == 0 and same.stdout == ""


def test_diff_of_a_file_with_errors_exits_2(tmp_path):
    bad = tmp_path / "bad.space"
    bad.write_text(BAD_SPACE)
    result = essdsl("diff", DARTS, bad)
    assert result.returncode == 2 and f"{bad}:5:24: error" in result.stderr


def test_help_of_each_language_command_has_examples():
    for command in ("check", "fmt", "show", "stats", "diff"):
        result = essdsl(command, "--help")
        assert result.returncode == 0 and "Examples" in result.stdout, command


def test_language_commands_do_not_import_torch(tmp_path):
    """Run every language command in one interpreter and look at sys.modules afterwards."""
    formatted = tmp_path / "f.space"
    formatted.write_text(DARTS.read_text())
    script = f"""
import sys
from essdsl.cli import main
commands = [
    ["check", {str(DARTS)!r}],
    ["fmt", "--check", {str(formatted)!r}],
    ["show", {str(ESS)!r}, "--format", "dot"],
    ["stats", {str(ESS)!r}, "--json"],
    ["diff", {str(DARTS)!r}, {str(IDARTS)!r}],
]
for argv in commands:
    sys.argv = ["essdsl", *argv]
    try:
        main()
    except SystemExit:
        pass
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.") or m.startswith("essdsl.compile"))
print("LOADED", loaded, file=sys.stderr)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    assert "LOADED []" in result.stderr, result.stderr


def test_unwritable_grammar_cache_still_works(tmp_path):
    env = dict(os.environ, ESSDSL_CACHE=str(tmp_path / "file-not-dir"))
    (tmp_path / "file-not-dir").write_text("a file where the cache folder should be")
    result = subprocess.run(
        [sys.executable, "-m", "essdsl", "check", str(DARTS)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
