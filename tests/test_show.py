"""essdsl.lang.show: the text description and the Graphviz dot of a cell."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from essdsl.lang.check import load_graph, load_graph_text
from essdsl.lang.graph import MixedSpec, Stream
from essdsl.lang.show import describe, dot_quote, expr_text, pair_node_id, to_dot

ROOT = Path(__file__).resolve().parent.parent
FILES = sorted((ROOT / "spaces").glob("*.space")) + sorted((ROOT / "genotypes").glob("*.space"))

QUOTED = r'"((?:[^"\\]|\\.)*)"'
STATEMENT_NODE = re.compile(rf"^\s*{QUOTED}\s*\[(.*)\];$")
STATEMENT_EDGE = re.compile(rf"^\s*{QUOTED}\s*->\s*{QUOTED}\s*(?:\[(.*)\])?;$")


def unquote(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), text)


def parse_dot(text: str) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
    """A small reader for the dot subset to_dot writes: node and edge statements, one per line."""
    lines = text.splitlines()
    assert lines[0].startswith("digraph ") and lines[0].endswith("{")
    assert lines[-1] == "}"
    nodes: dict[str, str] = {}
    edges: list[tuple[str, str, str]] = []
    for line in lines[1:-1]:
        # Every quote is either escaped or paired: strip escapes, count the rest.
        assert line.replace('\\"', "").count('"') % 2 == 0, line
        edge = STATEMENT_EDGE.match(line)
        if edge:
            edges.append((unquote(edge.group(1)), unquote(edge.group(2)), edge.group(3) or ""))
            continue
        node = STATEMENT_NODE.match(line)
        if node:
            nodes[unquote(node.group(1))] = node.group(2)
            continue
        assert re.match(r"^\s*(rankdir|label|node|edge)\b", line), f"unexpected dot line: {line}"
    return nodes, edges


def test_dot_quote_escapes_quotes_backslashes_and_newlines():
    assert dot_quote('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    assert unquote(dot_quote('x "y" \\ z')[1:-1]) == 'x "y" \\ z'


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_dot_has_every_node_and_every_dependency(path):
    graph = load_graph(path)
    nodes, edges = parse_dot(to_dot(graph))
    for key in graph.dag.nodes:
        assert key in nodes, f"{key} missing from the dot"
    drawn = {(a, b) for a, b, _ in edges}
    expected = set()
    for key in graph.computed():
        spec = graph.spec(key)
        if isinstance(spec, MixedSpec):
            for edge in spec.edges:
                if len(edge.sources) == 1:
                    expected.add((edge.sources[0], key))
                else:
                    point = pair_node_id(key, edge.label)
                    expected.add((point, key))
                    expected.update((s, point) for s in edge.sources)
        else:
            expected.update((p, key) for p in graph.dag.predecessors(key))
    assert drawn == expected
    for key in graph.dag.nodes:
        spec = graph.spec(key)
        attrs = nodes[key]
        if isinstance(spec, MixedSpec):
            assert "shape=doublecircle" in attrs
        elif isinstance(spec, Stream):
            assert "shape=box" in attrs
            assert ("dashed" in attrs) == (spec.kind == "past"), attrs
        else:
            assert "shape=ellipse" in attrs


def test_candidate_edges_are_dashed_and_labelled_with_their_ops():
    graph = load_graph(ROOT / "spaces" / "ess_joint.space")
    _, edges = parse_dot(to_dot(graph))
    by_pair = {(a, b): attrs for a, b, attrs in edges}
    attrs = by_pair[("h[t-1]", "hhat")]
    assert "style=dashed" in attrs and 'label="{identity, tanh, sigmoid, zero}"' in attrs
    pair = pair_node_id("xhat", "h[t-1]*x[t]")
    assert "style=dashed" in by_pair[(pair, "xhat")] and "{identity, tanh}" in by_pair[(pair, "xhat")]
    assert ("xhat", "s0") in by_pair and "dashed" not in by_pair[("xhat", "s0")]


def test_describe_lists_streams_nodes_in_order_and_output():
    graph = load_graph(ROOT / "genotypes" / "lstm.space")
    text = describe(graph)
    assert text.startswith("genotype lstm")
    assert "x[t]" in text and "h[t-1]" in text and "c[t-1]" in text
    positions = [text.index(f"  {key}  [") for key in graph.computed()]
    assert positions == sorted(positions), "nodes are not listed in topological order"
    assert "c[t]  [update, size 300] = f * c[t-1] + i * g" in text
    assert "h[t]  [update, size 300] = o * tanh(c[t])" in text
    assert "i_w0 600×300, i_b0 300" in text
    assert text.rstrip().endswith("output: h (fed to the decoder)")


def test_describe_shows_candidate_edges_attributes_and_arch_tensors():
    text = describe(load_graph(ROOT / "spaces" / "ess_joint.space"))
    assert "transform project, combine {sum, product}, select edge_softmax, keep 2 of 3, norm batchnorm" in text
    assert "edge 2: Hadamard pair h[t-1]*x[t]" in text
    assert "xhat_ops 3×4, xhat_combine 2" in text
    assert "s8_w 300×600, s8_ops 8×5" in text


def test_expr_text_keeps_signs_and_grouping():
    graph = load_graph_text(
        "genotype g\ncell {\n  input x[t] : ninp\n  state h[t-1] : nhid\n"
        "  node a = sigmoid(linear(x[t], h[t-1]))\n"
        "  h[t] = a * (h[t-1] - tanh(project(x[t], dim = nhid))) + mean(x[t], h[t-1])\n}\n"
    )
    assert expr_text(graph.spec("h[t]").expr) == "a * (h[t-1] - tanh(project(x[t], dim = nhid))) + mean(x[t], h[t-1])"
