"""The TextMate grammar (editors/space.tmLanguage.json) scopes the shipped files as the
parser reads them, and the VS Code folder wires it up.

A mini TextMate matcher tokenizes each line: at every position it takes the
pattern that matches earliest (the first one listed on a tie), as TextMate
engines do for ``match`` rules.  The reference is the project's own Lark grammar
run with every token kept: each keyword token must get a keyword scope, each
name a non-keyword one, numbers and strings theirs, and every comment character
(from the parser's comment positions) a comment scope.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from lark import Lark, Token

from essdsl.lang.parse import grammar_text, parse_space

ROOT = Path(__file__).resolve().parent.parent
EDITORS = ROOT / "editors"
GRAMMAR = json.loads((EDITORS / "space.tmLanguage.json").read_text(encoding="utf-8"))
SHIPPED = sorted((ROOT / "spaces").glob("*.space")) + sorted((ROOT / "genotypes").glob("*.space"))


def _rules(node: dict, repository: dict) -> list[dict]:
    """The grammar's ``match`` rules in the order TextMate tries them (includes expanded)."""
    if "include" in node:
        return _rules(repository[node["include"].lstrip("#")], repository)
    if "patterns" in node:
        return [rule for child in node["patterns"] for rule in _rules(child, repository)]
    assert "match" in node, f"only single-line match rules are used: {node}"
    return [node]


RULES = [(re.compile(rule["match"]), rule) for rule in _rules(GRAMMAR, GRAMMAR["repository"])]


def tokenize_line(line: str) -> list[str]:
    """The scope of every character of ``line`` ('' where no rule matched)."""
    scopes = [""] * len(line)
    position = 0
    while position < len(line):
        best = None
        for regex, rule in RULES:
            m = regex.search(line, position)
            if m and (best is None or m.start() < best[0].start()):
                best = (m, rule)
        if best is None:
            break
        m, rule = best
        for i in range(m.start(), m.end()):
            scopes[i] = rule.get("name", "")
        for group, capture in rule.get("captures", {}).items():
            start, end = m.span(int(group))
            for i in range(max(start, 0), end):
                scopes[i] = capture["name"]
        position = m.end() if m.end() > position else position + 1
    return scopes


def tokenize(text: str) -> list[list[str]]:
    return [tokenize_line(line) for line in text.split("\n")]


def lark_tokens(text: str) -> list[Token]:
    parser = Lark(grammar_text(), parser="lalr", lexer="contextual", keep_all_tokens=True, propagate_positions=True)
    return [t for t in parser.parse(text).scan_values(lambda v: isinstance(v, Token))]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_grammar_scopes_agree_with_the_parser(path: Path):
    text = path.read_text(encoding="utf-8")
    scopes = tokenize(text)
    lines = text.split("\n")
    keywords_seen = 0
    for token in lark_tokens(text):
        row, col = token.line - 1, token.column - 1
        token_scopes = set(scopes[row][col : col + len(token)])
        assert len(token_scopes) == 1, f"{path.name}:{token.line}:{token.column}: {token!r} split into {token_scopes}"
        scope = token_scopes.pop()
        where = f"{path.name}:{token.line}:{token.column}: {token!r} has scope {scope!r}"
        if re.fullmatch(r"[a-z_]+", token) and token.type == token.upper():  # a keyword of the grammar
            assert scope.startswith("keyword."), where
            keywords_seen += 1
        elif token.type == "NAME":
            assert scope and not scope.startswith(("keyword.", "comment.", "string.")), where
        elif token.type in ("INT", "SIGNED_NUMBER"):
            assert scope.startswith("constant.numeric."), where
        elif token.type == "STRING":
            assert scope.startswith("string."), where
        else:
            assert scope.startswith(("punctuation.", "keyword.operator.")), where
    assert keywords_seen > 10
    comments = parse_space(text).comments
    assert comments
    for comment in comments:
        row, col = comment.span.line - 1, comment.span.column - 1
        assert set(scopes[row][col : col + len(comment.text)]) == {"comment.line.number-sign.space"}, comment.text
    for row, line in enumerate(lines):
        for col, char in enumerate(line):
            assert char.isspace() or scopes[row][col], f"{path.name}:{row + 1}:{col + 1}: {char!r} has no scope"


def test_definitions_get_entity_scopes():
    text = "space demo\nops o = {tanh, zero}\ncell {\n  state h : nhid\n  node s1 = mix { from h[t-1] ops o  dim 300 }\n  h[t] = linear(s1, dim = nhid)\n}"
    scopes = tokenize(text)

    def scope_of(needle, occurrence=0):
        index = -1
        for _ in range(occurrence + 1):
            index = text.index(needle, index + 1)
        row = text.count("\n", 0, index)
        return scopes[row][index - (text.rfind("\n", 0, index) + 1)]

    assert scope_of("demo") == "entity.name.section.space"
    assert scope_of("o =") == "entity.name.type.op-set.space"
    assert scope_of("s1") == "entity.name.function.node.space"
    assert scope_of("h :") == "variable.other.declaration.space"
    assert scope_of("h[t] =") == "variable.other.state.update.space"
    assert scope_of("dim 300") == "keyword.other.attribute.space"
    assert scope_of("dim = nhid") == "variable.parameter.space"  # an argument name, not the attribute
    assert scope_of("t-1") == "keyword.other.time.space"
    assert scope_of("o ", 1) == "variable.other.space"  # the op set used


def test_vscode_extension_wires_the_same_grammar_and_the_server():
    folder = EDITORS / "vscode"
    manifest = json.loads((folder / "package.json").read_text(encoding="utf-8"))
    (language,) = manifest["contributes"]["languages"]
    (grammar,) = manifest["contributes"]["grammars"]
    assert language["extensions"] == [".space"]
    assert grammar["language"] == language["id"] and grammar["scopeName"] == GRAMMAR["scopeName"]
    # the extension ships its own copy (an extension cannot reach outside its folder): the same file
    assert (folder / grammar["path"]).read_bytes() == (EDITORS / "space.tmLanguage.json").read_bytes()
    configuration = json.loads((folder / language["configuration"]).read_text(encoding="utf-8"))
    assert configuration["comments"]["lineComment"] == "#"
    assert ["{", "}"] in configuration["brackets"]
    main = (folder / manifest["main"]).read_text(encoding="utf-8")
    assert "vscode-languageclient/node" in main and "vscode-languageclient" in manifest["dependencies"]
    settings = manifest["contributes"]["configuration"]["properties"]
    assert settings["essdsl.server.command"]["default"] == "essdsl"
    assert settings["essdsl.server.args"]["default"] == ["lsp"]
