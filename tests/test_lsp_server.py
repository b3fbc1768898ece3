"""``essdsl lsp`` driven as an editor drives it: a subprocess spoken to in JSON-RPC over stdio
(tests/lsp_client.py).  Expected positions are worked out here from the text itself
(UTF-16 code units, 0-based), not from essdsl's own position code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lsp_client import ROOT, LspClient

SPACES = ROOT / "spaces"
DARTS = (SPACES / "darts_rnn.space").read_text(encoding="utf-8")


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def find(text: str, needle: str, occurrence: int = 0, shift: int = 0) -> tuple[int, int]:
    """(line, UTF-16 character) of the ``occurrence``-th ``needle`` in ``text`` (+ ``shift`` characters)."""
    index = -1
    for _ in range(occurrence + 1):
        index = text.index(needle, index + 1)
    index += shift
    line = text.count("\n", 0, index)
    start = text.rfind("\n", 0, index) + 1
    return line, utf16(text[start:index])


def span(text: str, needle: str, occurrence: int = 0, shift: int = 0, length: int = 0) -> dict:
    line, character = find(text, needle, occurrence, shift)
    width = utf16(needle[shift : shift + length] if length else needle[shift:])
    return {"start": {"line": line, "character": character}, "end": {"line": line, "character": character + width}}


@pytest.fixture(scope="module")
def client():
    c = LspClient()
    yield c
    assert c.close() == 0


_documents = iter(range(10**6))


def open_doc(client: LspClient, text: str) -> str:
    uri = f"file:///work/doc{next(_documents)}.space"
    client.open(uri, text)
    return uri


# A file with errors after non-BMP characters on the same line: each emoji is two
# UTF-16 code units but one essdsl column.
BROKEN = (
    "space broken\n"
    'provenance { note = "é😀😀" }  ops o = {tanh, bogus}\n'
    "cell {\n"
    "  input x : ninp\n"
    "  state h[t-1] : nhid\n"
    "  state c : nhid\n"
    "  node s1 = mix { from s0, x ops o }\n"
    "  node s1 = tanh(x)\n"
    "  h[t] = h[t-5]\n"
    "}\n"
)


def test_capabilities_advertise_every_feature(client):
    caps = client.initialize_result["capabilities"]
    assert caps["positionEncoding"] == "utf-16"
    assert caps["textDocumentSync"]["change"] == 1  # full text on each change
    for feature in ("hoverProvider", "definitionProvider", "referencesProvider", "documentSymbolProvider", "documentFormattingProvider"):
        assert caps[feature], feature
    assert "{" in caps["completionProvider"]["triggerCharacters"]
    assert client.initialize_result["serverInfo"]["name"] == "essdsl"


def test_open_with_errors_publishes_them_at_exact_ranges(client):
    uri = open_doc(client, BROKEN)
    diags = client.diagnostics(uri, 1)
    by_code = {}
    for d in diags:
        by_code.setdefault(d["code"], []).append(d)
        assert d["source"] == "essdsl"
    assert by_code["unknown-op"][0]["range"] == span(BROKEN, "bogus")
    assert by_code["unknown-op"][0]["severity"] == 1
    assert by_code["undefined-name"][0]["range"] == span(BROKEN, "s0")
    assert by_code["outside-window"][0]["range"] == span(BROKEN, "h[t-5]")
    duplicate = by_code["duplicate-name"][0]
    assert duplicate["range"] == span(BROKEN, "s1", occurrence=1)
    # related: where the name was defined first
    related = duplicate["relatedInformation"]
    assert [r["location"]["range"] for r in related] == [span(BROKEN, "s1")]
    assert related[0]["location"]["uri"] == uri
    # a state never updated: reported at the cell, related to the state's declaration
    never = by_code["state-not-updated"][0]
    assert never["range"] == span(BROKEN, "cell")
    assert [r["location"]["range"] for r in never["relatedInformation"]] == [span(BROKEN, "c : nhid", length=1)]
    # outside-window is related to the declaration that sets the window
    assert [r["location"]["range"] for r in by_code["outside-window"][0]["relatedInformation"]] == [
        span(BROKEN, "h[t-1] : nhid", length=1)
    ]


def test_syntax_error_range_and_change_clears_it(client):
    text = "space s\ncell {\n  node s1 = tanh(x\n}\n"
    uri = open_doc(client, text)
    (diag,) = client.diagnostics(uri, 1)
    assert diag["code"] == "syntax"
    assert diag["range"]["start"] == {"line": 3, "character": 0}  # the '}' where ')' was expected
    client.change(uri, DARTS, 2)
    assert client.diagnostics(uri, 2) == []
    client.notify("textDocument/didClose", {"textDocument": {"uri": uri}})
    client.wait_for(lambda m: m["params"]["uri"] == uri and m["params"]["diagnostics"] == [] and "version" not in m["params"])


def test_warnings_keep_their_code_and_severity(client):
    text = DARTS.replace("{tanh, relu, sigmoid, identity, zero}", "{tanh, identity}")
    uri = open_doc(client, text)
    diags = client.diagnostics(uri, 1)
    assert diags and {d["code"] for d in diags} == {"collapse-risk"}
    assert {d["severity"] for d in diags} == {2}
    assert diags[0]["range"] == span(text, "s1 = mix", length=2)


def test_hover_on_a_mixed_node_says_what_show_and_stats_say(client):
    uri = open_doc(client, DARTS)
    line, character = find(DARTS, "s0..s2 ops", shift=4)  # the 's2' of s3's range
    result = client.at("textDocument/hover", uri, line, character)
    value = result["contents"]["value"]
    assert result["contents"]["kind"] == "markdown"
    assert result["range"] == span(DARTS, "s0..s2 ops", shift=4, length=2)
    # s2 chooses one of 2 edges (s0, s1) with 4 non-zero ops each: 8 choices;
    # its highway W is 300 × 600 = 180,000 parameters; arch weights 2 edges × 5 ops.
    assert "s2  [mixed, size 300]" in value
    assert "keep 1 of 2" in value and "edge 1: s1" in value
    assert "8 choices" in value and "10 architecture weights" in value and "180,000 parameters" in value


def test_hover_on_fixed_node_state_and_header(client):
    uri = open_doc(client, DARTS)
    fixed = client.at("textDocument/hover", uri, *find(DARTS, "s0 = highway"))["contents"]["value"]
    # [x, h] (600) × 2·300: 360,000 parameters
    assert "s0  [fixed, size 300] = highway(tanh, x[t], h[t-1], carry = h[t-1])" in fixed and "360,000 parameters" in fixed
    state = client.at("textDocument/hover", uri, *find(DARTS, "h[t-1]", occurrence=0))["contents"]["value"]
    assert "state h[t-1] : nhid" in state and "size 300" in state
    header = client.at("textDocument/hover", uri, *find(DARTS, "space darts_rnn", shift=6))["contents"]["value"]
    # DESIGN.md: 4^8 · 8! architectures in the DARTS space
    assert f"{4**8 * 40320:,}" in header


def test_hover_sizes_follow_the_command_line():
    c = LspClient(("--stdio", "--nhid", "850", "--ninp", "850"))  # --stdio: what VS Code's client may add
    try:
        uri = "file:///work/sized.space"
        c.open(uri, DARTS)
        value = c.at("textDocument/hover", uri, *find(DARTS, "s1 = mix"))["contents"]["value"]
        assert "size 850" in value and f"{850 * 1700:,} parameters" in value
    finally:
        assert c.close() == 0


def test_definition_of_names_ranges_and_op_sets(client):
    uri = open_doc(client, DARTS)

    def target(needle, occurrence=0, shift=0):
        return [loc["range"] for loc in client.at("textDocument/definition", uri, *find(DARTS, needle, occurrence, shift))]

    assert target("s0..s2", shift=4) == [span(DARTS, "s2 = mix", length=2)]
    assert target("s0..s2") == [span(DARTS, "s0 = highway", length=2)]
    # the '..' of a range: every member
    assert target("s0..s2", shift=3) == [span(DARTS, f"s{i} = ", length=2) for i in range(3)]
    assert target("rnn_ops }") == [span(DARTS, "rnn_ops = {", length=7)]
    assert target("h[t-1])") == [span(DARTS, "h[t-1] : nhid", length=1)]
    assert target("h[t] =") == [span(DARTS, "h[t] =", length=1)]  # an update defines h's new value
    assert client.at("textDocument/definition", uri, *find(DARTS, "highway(tanh")) is None  # a function, no definition


def test_references_of_a_node_include_ranges_it_is_inside(client):
    uri = open_doc(client, DARTS)
    line, character = find(DARTS, "s1 = mix")
    with_decl = client.at("textDocument/references", uri, line, character, context={"includeDeclaration": True})
    without = client.at("textDocument/references", uri, line, character, context={"includeDeclaration": False})
    ranges = [loc["range"] for loc in with_decl]
    # its definition, 's0..s1' (an end), the six ranges s0..s2 … s0..s7 it is inside, 'mean(s1..s8)'
    assert len(ranges) == 9 and len(without) == 8
    assert span(DARTS, "s1 = mix", length=2) in ranges
    assert span(DARTS, "s0..s1", shift=4) in ranges
    assert span(DARTS, "s0..s4") in ranges
    assert span(DARTS, "s1..s8", length=2) in ranges
    op_refs = client.at("textDocument/references", uri, *find(DARTS, "rnn_ops = {"), context={"includeDeclaration": False})
    assert len(op_refs) == 8  # s1 … s8


def labels(result) -> set[str]:
    items = result["items"] if isinstance(result, dict) else result
    return {item["label"] for item in items}


def test_completion_fits_the_context(client):
    text = "space c\nops o = {tanh, r\ncell {\n  state h : nhid\n  node a1 = tanh(h[t-1])\n  node m = mix { from a1 ops \n"
    uri = open_doc(client, text)
    in_set = labels(client.at("textDocument/completion", uri, *find(text, "r\n")))
    assert in_set == {"tanh", "relu", "sigmoid", "identity", "zero"}
    after_ops = labels(client.at("textDocument/completion", uri, *find(text, "ops \n", shift=4)))
    assert after_ops == {"o"}
    sources = labels(client.at("textDocument/completion", uri, *find(text, "a1 ops")))
    assert sources == {"a1", "m", "h", "pairs"}  # read off the text: it does not parse yet
    uri2 = open_doc(client, DARTS.replace("  h[t] = mean(s1..s8)", "  node s9 = mix { transform p\n  h[t] = mean(s1..s8)"))
    text2 = DARTS.replace("  h[t] = mean(s1..s8)", "  node s9 = mix { transform p\n  h[t] = mean(s1..s8)")
    assert labels(client.at("textDocument/completion", uri2, *find(text2, "transform p", shift=11))) == {"highway", "project"}
    general = labels(client.at("textDocument/completion", uri2, *find(text2, "  h[t] = mean")))
    assert {"node", "mix", "from", "keep", "combine", "linear", "s0", "s8", "rnn_ops", "h", "x", "tanh"} <= general


def test_formatting_returns_fmt_output_and_nothing_for_broken_text(client):
    from essdsl.lang.fmt import format_text

    messy = "space   m\nops o={tanh,zero}\ncell{ input x:ninp  state h:nhid # the state\n node s1=mix{from x ops o}\n h[t]=s1 }\n"
    uri = open_doc(client, messy)
    params = {"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": True}}
    (edit,) = client.request("textDocument/formatting", params)
    assert edit["newText"] == format_text(messy)
    assert edit["range"] == {"start": {"line": 0, "character": 0}, "end": {"line": 5, "character": 0}}
    client.change(uri, format_text(messy), 2)
    assert client.request("textDocument/formatting", params) == []
    client.change(uri, "space m\ncell {", 3)
    assert client.request("textDocument/formatting", params) is None


def test_document_symbols_list_op_sets_streams_and_nodes(client):
    text = (SPACES / "ess_joint.space").read_text(encoding="utf-8")
    uri = open_doc(client, text)
    symbols = client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
    names = [s["name"] for s in symbols]
    assert names == ["rnn_ops", "inter_ops", "x", "h", "hhat", "xhat"] + [f"s{i}" for i in range(9)] + ["h[t]"]
    by_name = {s["name"]: s for s in symbols}
    assert by_name["hhat"]["selectionRange"] == span(text, "hhat = mix", length=4)
    assert by_name["hhat"]["range"]["end"]["line"] == find(text, "node xhat")[0] - 1  # the whole mix { … } block
    assert by_name["rnn_ops"]["kind"] == 10  # Enum
    # while the file does not parse, the outline still lists what the text defines
    client.change(uri, text.replace("h[t] = mean(s1..s8)", "h[t] = mean(s1.."), 2)
    broken = client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}})
    assert [s["name"] for s in broken] == names[:-1]


def test_requests_on_text_that_does_not_parse_answer_without_error(client):
    text = "space s\nops o = {tanh}\ncell {\n  node s1 = mix { from s0 ops o\n"
    uri = open_doc(client, text)
    assert client.diagnostics(uri, 1)[0]["code"] == "syntax"
    for line in range(4):
        for character in (0, 3, 8, 30):
            client.at("textDocument/hover", uri, line, character)
            client.at("textDocument/definition", uri, line, character)
            client.at("textDocument/completion", uri, line, character)
    # positions past the end of the text are clamped, not errors
    assert client.at("textDocument/hover", uri, 99, 99) is None


def test_lsp_without_pygls_says_how_to_install_it():
    code = "import sys; sys.modules['pygls'] = None; from essdsl.cli import main; sys.argv = ['essdsl', 'lsp']; main()"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "pip install 'essdsl[lsp]'" in result.stderr and "Traceback" not in result.stderr


# ---------------------------------------------------------------- in-process: position rules
def as_dict(r) -> dict:
    return {"start": {"line": r.start.line, "character": r.start.character}, "end": {"line": r.end.line, "character": r.end.character}}


def test_hover_in_a_file_with_errors_shows_the_statement_and_op_set_users():
    from lsprotocol import types

    from essdsl.lsp.analysis import analyze
    from essdsl.lsp.features import hover

    analysis = analyze(BROKEN)
    value = hover(analysis, types.Position(**dict(zip(("line", "character"), find(BROKEN, "s1 = mix")))))
    assert value.contents.value.startswith("```space\nnode s1 = mix { from s0, x ops o }\n```")
    darts = analyze(DARTS)
    value = hover(darts, types.Position(**dict(zip(("line", "character"), find(DARTS, "rnn_ops }"))))).contents.value
    assert "ops rnn_ops = {tanh, relu, sigmoid, identity, zero}" in value
    assert "used by 8 nodes: s1, s2, s3, s4, s5, s6, s7, s8" in value


def test_line_breaks_count_as_lsp_counts_them():
    """LSP breaks lines at \\n, \\r\\n and a lone \\r; a diagnostic lands on the same line and column."""
    from essdsl.lsp.analysis import analyze

    for newline in ("\n", "\r\n", "\r"):
        text = newline.join(["space s", "cell {", "  state h : nhid", "  h[t] = tanh(q)", "}", ""])
        (diag,) = analyze(text).lsp_diagnostics("u")
        assert (diag.range.start.line, diag.range.start.character, diag.range.end.character) == (3, 14, 15), repr(newline)


def test_utf8_and_utf32_position_encodings():
    from essdsl.lsp.analysis import analyze, unit_counter

    text = 'space s\nprovenance { a = "é😀" }  ops o = {bogus}\ncell { state h : nhid  h[t] = h[t-1] }\n'
    prefix = text.split("\n")[1].split("bogus")[0]
    for encoding, width in (("utf-8", len(prefix.encode("utf-8"))), ("utf-32", len(prefix)), ("utf-16", utf16(prefix))):
        (diag,) = analyze(text, units=unit_counter(encoding)).lsp_diagnostics("u")
        assert diag.range.start.character == width, encoding
        position = diag.range.start
        assert analyze(text, units=unit_counter(encoding)).from_position(position) == (2, len(prefix) + 1)


def test_a_cycle_relates_every_node_of_its_ring():
    from essdsl.lsp.analysis import analyze

    text = "space s\ncell {\n  state h : nhid\n  node a = tanh(c)\n  node b = tanh(a)\n  node c = tanh(b)\n  h[t] = c\n}\n"
    (diag,) = [d for d in analyze(text).lsp_diagnostics("u") if d.code == "cycle"]
    assert as_dict(diag.range) == span(text, "a = tanh", length=1)
    assert [as_dict(r.location.range) for r in diag.related_information] == [span(text, "b = tanh", length=1), span(text, "c = tanh", length=1)]
