"""The language server while someone types: every intermediate text gives diagnostics
and no request fails.

In-process over many prefixes of the shipped files (every prefix of the smallest
file, every 5th of the others, to keep CI time small; ESSDSL_TYPING_STEP=1 types
every prefix of every file), and over JSON-RPC for a sample of
them, one change at a time and as a burst sent without waiting.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lsprotocol import types

from essdsl.lsp import features
from essdsl.lsp.analysis import analyze, unit_counter
from lsp_client import ROOT, LspClient

SHIPPED = sorted((ROOT / "spaces").glob("*.space")) + sorted((ROOT / "genotypes").glob("*.space"))
UTF16 = unit_counter(types.PositionEncodingKind.Utf16)


def assert_well_formed(text: str) -> None:
    """Diagnostics for ``text`` that an editor can show, and every request answered."""
    analysis = analyze(text, "typed.space", units=UTF16)
    diagnostics = analysis.lsp_diagnostics("file:///typed.space")
    lines = text.replace("\r\n", "\n").split("\n")
    if not analysis.ok:
        assert any(d.severity == types.DiagnosticSeverity.Error for d in diagnostics), repr(text[-40:])
    for d in diagnostics:
        start, end = d.range.start, d.range.end
        assert (start.line, start.character) <= (end.line, end.character)
        for p in (start, end):
            assert 0 <= p.line < len(lines) and 0 <= p.character <= UTF16(lines[p.line]), (d, repr(text[-40:]))
    cursor = types.Position(line=len(lines) - 1, character=UTF16(lines[-1]))
    middle = types.Position(line=len(lines) // 2, character=4)
    for position in (cursor, middle):
        features.hover(analysis, position)
        features.definition(analysis, "file:///typed.space", position)
        features.references(analysis, "file:///typed.space", position, True)
        assert isinstance(features.completion(analysis, position).items, list)
    features.document_symbols(analysis)
    features.formatting(analysis, text)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_typed_prefix_gives_diagnostics_in_process(path: Path):
    text = path.read_text(encoding="utf-8")
    step = 1 if path.name == "gru.space" else int(os.environ.get("ESSDSL_TYPING_STEP", "5"))
    for end in list(range(0, len(text), step)) + [len(text)]:
        assert_well_formed(text[:end])
    assert analyze(text, units=UTF16).lsp_diagnostics("u") == []


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_random_edits_of_shipped_files_never_break_a_request(data):
    """Deleting or duplicating a random stretch (what undo, cut and paste do) is fine too."""
    text = SHIPPED[data.draw(st.integers(0, len(SHIPPED) - 1))].read_text(encoding="utf-8")
    a = data.draw(st.integers(0, len(text)))
    b = data.draw(st.integers(a, min(len(text), a + 60)))
    edited = text[:a] + text[b:] if data.draw(st.booleans()) else text[:b] + text[a:]
    assert_well_formed(edited)


def test_typing_over_json_rpc_each_change_and_a_burst():
    text = (ROOT / "spaces" / "ess_joint.space").read_text(encoding="utf-8")
    client = LspClient()
    try:
        uri = "file:///work/typed.space"
        client.open(uri, "", version=1)
        assert client.diagnostics(uri, 1)[0]["code"] == "empty"
        version = 1
        # one change at a time: each version gets its own diagnostics
        for end in range(0, len(text), len(text) // 25):
            version += 1
            client.change(uri, text[:end], version)
            published = client.diagnostics(uri, version)
            assert published, f"no diagnostics for the prefix ending {text[max(0, end - 30):end]!r}"
            client.at("textDocument/hover", uri, text[:end].count("\n"), 2)
            client.at("textDocument/completion", uri, text[:end].count("\n"), 0)
        # a burst, one character at a time without waiting: the server keeps up and
        # publishes the last version (intermediate ones may be skipped)
        start = text.index("node s0")
        for end in range(start, start + 150):
            version += 1
            client.change(uri, text[:end], version)
        version += 1
        client.change(uri, text, version)
        assert client.diagnostics(uri, version) == []
        assert client.at("textDocument/hover", uri, 0, 0) is None  # in the first comment: nothing to say
        line = text[: text.index("node s8")].count("\n")
        assert "s8  [mixed, size 300]" in client.at("textDocument/hover", uri, line, 7)["contents"]["value"]
    finally:
        assert client.close() == 0
