"""Semantic diff: only changes in meaning are reported, each at the smallest path."""

from __future__ import annotations

from pathlib import Path

from essdsl.lang.check import load_graph, load_graph_text
from essdsl.lang.diff import Edit, diff_graphs, render_edits

ROOT = Path(__file__).resolve().parent.parent
DARTS = ROOT / "spaces" / "darts_rnn.space"

BASE = """space base
ops rnn_ops = {tanh, relu, zero}
defaults { select node_softmax }
cell {
  input x[t] : ninp
  state h[t-2..t-1] : nhid
  node s0 = highway(tanh, x[t], h[t-1], carry = h[t-1])
  node s1 = mix { from s0 ops rnn_ops }
  node s2 = mix { from s0..s1 ops rnn_ops }
  node s3 = mix { from s0..s2, h[t-2] ops rnn_ops }
  h[t] = mean(s1..s3)
}
"""


def graph(text: str):
    return load_graph_text(text)


def test_darts_versus_idarts_is_only_the_selection():
    edits = diff_graphs(load_graph(DARTS), load_graph(ROOT / "spaces" / "idarts_rnn.space"))
    assert edits == [Edit("update", f"node s{i}.select", "edge_softmax", "node_softmax") for i in range(1, 9)]
    assert render_edits(edits).splitlines()[0] == "~ node s1.select: edge_softmax -> node_softmax"
    assert render_edits(edits).splitlines()[-1] == "~ node s8.select: edge_softmax -> node_softmax"


def test_same_meaning_written_differently_has_no_edits():
    rewritten = """# reordered, defaults inlined, ranges spelled out, op set inlined
space other_name
cell {
  state h[t-2..t-1] : nhid
  input x : ninp
  node s3 = mix {
    from h[t-2] ops {zero, relu, tanh}
    from s2, s1, s0 ops {relu, tanh, zero}
    select node_softmax
  }
  node s1 = mix { from s0 ops {tanh, relu, zero} select node_softmax }
  node s2 = mix { from s1 ops {tanh, relu, zero} from s0 ops {zero, tanh, relu} select node_softmax transform highway }
  node s0 = highway(tanh, x, h[t-1], carry = h[t-1])
  h[t] = mean(s3, s1, s2)
}
"""
    assert diff_graphs(graph(BASE), graph(rewritten)) == []
    assert render_edits([]) == ""


def test_darts_against_its_formatted_self():
    from essdsl.lang.fmt import format_text

    text = DARTS.read_text(encoding="utf-8")
    assert diff_graphs(graph(text), graph(format_text(text))) == []


def test_inserted_node_is_reported():
    changed = BASE.replace("  h[t] = mean(s1..s3)", "  node s4 = mix { from s3 ops {tanh} }\n  h[t] = mean(s1..s4)")
    edits = diff_graphs(graph(BASE), graph(changed))
    assert edits == [
        Edit("update", "node h[t].expr", "mean(s1, s2, s3)", "mean(s1, s2, s3, s4)"),
        Edit("insert", "node s4", new="mix { from s3 ops {tanh}; transform highway; combine {sum}; select node_softmax; keep 1; norm none }"),
    ]
    assert render_edits(edits).splitlines()[1].startswith("+ node s4: mix {")


def test_removed_edge_is_reported():
    changed = BASE.replace("from s0..s2, h[t-2] ops rnn_ops", "from s1..s2, h[t-2] ops rnn_ops")
    edits = diff_graphs(graph(BASE), graph(changed))
    assert edits == [Edit("remove", "node s3.edge s0", old="{relu, tanh, zero}")]
    assert render_edits(edits) == "- node s3.edge s0: {relu, tanh, zero}"


def test_changed_op_set_is_reported_per_edge():
    changed = BASE.replace("ops rnn_ops = {tanh, relu, zero}", "ops rnn_ops = {tanh, sigmoid, zero}")
    edits = diff_graphs(graph(BASE), graph(changed))
    paths = [e.path for e in edits]
    assert paths == [
        "node s1.edge s0.ops",
        "node s2.edge s0.ops",
        "node s2.edge s1.ops",
        "node s3.edge h[t-2].ops",
        "node s3.edge s0.ops",
        "node s3.edge s1.ops",
        "node s3.edge s2.ops",
    ]
    assert all(e.kind == "update" and e.old == "{relu, tanh, zero}" and e.new == "{sigmoid, tanh, zero}" for e in edits)


def test_changed_window_and_size_are_reported():
    changed = BASE.replace("state h[t-2..t-1] : nhid", "state h[t-3..t-1] : 300").replace("input x[t] : ninp", "input x[t-1..t] : ninp")
    edits = diff_graphs(graph(BASE), graph(changed))
    assert edits == [
        Edit("update", "input x.window", "[t]", "[t-1..t]"),
        Edit("update", "state h.size", "nhid", "300"),
        Edit("update", "state h.window", "[t-2..t-1]", "[t-3..t-1]"),
    ]


def test_attribute_kind_and_output_changes():
    lstm = (ROOT / "genotypes" / "lstm.space").read_text(encoding="utf-8")
    as_space = lstm.replace("genotype lstm", "space lstm").replace("output h", "output c")
    edits = diff_graphs(graph(lstm), graph(as_space))
    assert edits == [Edit("update", "kind", "genotype", "space"), Edit("update", "output", "h", "c")]

    changed = BASE.replace("node s2 = mix { from s0..s1 ops rnn_ops }", "node s2 = mix { from s0..s1 ops rnn_ops keep 2 combine {sum, product} dim nhid }")
    edits = diff_graphs(graph(BASE), graph(changed))
    assert edits == [
        Edit("update", "node s2.combine", "{sum}", "{product, sum}"),
        Edit("insert", "node s2.dim", new="nhid"),
        Edit("update", "node s2.keep", 1, 2),
    ]


def test_fixed_expressions_compare_up_to_commuting_terms():
    gru = (ROOT / "genotypes" / "gru.space").read_text(encoding="utf-8")
    commuted = gru.replace("h[t] = n + z * (h[t-1] - n)", "h[t] = (h[t-1] - n) * z + n")
    assert diff_graphs(graph(gru), graph(commuted)) == []
    changed = gru.replace("h[t] = n + z * (h[t-1] - n)", "h[t] = n + z * (n - h[t-1])")
    edits = diff_graphs(graph(gru), graph(changed))
    assert [(e.kind, e.path) for e in edits] == [("update", "node h[t].expr")]
    assert edits[0].old == "(h[t-1] - n) * z + n"
    assert edits[0].new == "(n - h[t-1]) * z + n"


def test_node_kind_change_and_removal():
    changed = BASE.replace("node s1 = mix { from s0 ops rnn_ops }", "node s1 = tanh(s0)")
    edits = diff_graphs(graph(BASE), graph(changed))
    assert [(e.kind, e.path) for e in edits] == [("update", "node s1")]
    assert edits[0].new == "fixed: tanh(s0)"
    assert edits[0].old.startswith("mixed: mix { from s0 ops {relu, tanh, zero};")
    reverse = diff_graphs(graph(changed), graph(BASE))
    assert [(e.kind, e.path) for e in reverse] == [("update", "node s1")]
