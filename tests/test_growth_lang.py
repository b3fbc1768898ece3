"""The grow block in the language: parse, expand, check, fmt, show, stats and diff.
(Its diagnostics have golden files: tests/golden/bad-grow*, grow-name*, grow-reader*, grow-max.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from essdsl.lang.check import check_text, load_graph, load_graph_space
from essdsl.lang.diff import diff_graphs, render_edits
from essdsl.lang.fmt import format_text
from essdsl.lang.growth import GrowPlan, expand, growth_of, growth_plan, PrunedMember
from essdsl.lang.ir import strip_spans
from essdsl.lang.parse import parse_space
from essdsl.lang.show import describe
from essdsl.lang.stats import stats_dict

ROOT = Path(__file__).resolve().parents[1]
GROW = ROOT / "spaces" / "two_input_rnn_grow.space"
FIXED = ROOT / "spaces" / "two_input_rnn.space"
SIZES = {"ninp": 16, "nhid": 16}


@pytest.fixture(scope="module")
def grow_space():
    return parse_space(GROW.read_text(), str(GROW))


def test_plan_of_the_shipped_growing_space(grow_space):
    plan, diags = growth_plan(grow_space)
    assert diags == []
    assert plan == GrowPlan(family="s", start=2, max=6, trigger="every", period=2, unit="epochs", mode="then_prune")


def test_grown_to_four_nodes_means_the_fixed_two_input_space(grow_space):
    """An independent statement of the same cell: two_input_rnn.space writes s1..s4 out by hand."""
    grown = load_graph_space(expand(grow_space, 4), SIZES)
    fixed = load_graph(FIXED, SIZES)
    assert diff_graphs(fixed, grown) == []


def test_members_read_every_earlier_member_and_readers_read_all(grow_space):
    graph = load_graph_space(expand(grow_space, 3), SIZES)
    assert [e.label for e in graph.spec("s1").edges] == ["x[t]", "h[t-1]"]
    assert [e.label for e in graph.spec("s3").edges] == ["x[t]", "h[t-1]", "s1", "s2"]
    assert sorted(graph.dag.predecessors("h[t]")) == ["h[t-1]", "s1", "s2", "s3"]


def test_pruned_members_are_written_with_their_choice(grow_space):
    pruned = {"s1": PrunedMember((("x[t]", "sigmoid"), ("h[t-1]", "tanh")), "product")}
    graph = load_graph_space(expand(grow_space, 2, pruned), SIZES)
    s1 = graph.spec("s1")
    assert [(e.label, e.ops) for e in s1.edges] == [("x[t]", ("sigmoid",)), ("h[t-1]", ("tanh",))]
    assert s1.combine == ("product",) and not s1.has_op_choice
    assert graph.spec("s2").has_op_choice


def test_fmt_round_trips_and_is_idempotent(grow_space):
    text = GROW.read_text()
    assert format_text(text) == text  # the shipped file is canonical
    messy = "space g cell { input x : ninp state h[t-1] : nhid grow s { mode interleaved start 1 from x[t], s ops {tanh, zero} every 3 steps max 4 keep 1 transform project dim nhid } h[t] = highway(tanh, s, carry = h[t-1]) }"
    once = format_text(messy)
    assert format_text(once) == once
    assert strip_spans(parse_space(once)) == strip_spans(parse_space(messy))
    assert "  grow s {\n    from x[t], s ops {tanh, zero}\n    keep 1\n" in once
    assert "    mode interleaved\n    start 1\n    every 3 steps\n    max 4\n  }\n" in once


def test_check_reports_the_template_once_not_per_member():
    text = GROW.read_text().replace("ops unary  #", "ops nosuch  #")
    _, report = check_text(text)
    undefined = [d for d in report.diagnostics if d.code == "undefined-op-set"]
    assert len(undefined) == 1, report.render()


def test_show_and_stats_describe_start_and_maximum():
    graph = load_graph(GROW, SIZES)
    text = describe(graph)
    assert "grows s: 2 -> 6 nodes, every 2 epochs, mode then_prune" in text
    assert "read by h[t]" in text
    from essdsl.lang.show import to_dot

    dot = to_dot(graph)
    assert 'label="space two_input_rnn_grow\\ngrows s: 2 -> 6 nodes, every 2 epochs, mode then_prune\\n(drawn at 2; each step adds s3 … s6)";' in dot
    assert "grows" not in to_dot(load_graph(FIXED, SIZES))
    data = stats_dict(graph)
    growth = data["growth"]
    at_max = stats_dict(load_graph_space(expand(growth_of(graph).space, 6), SIZES))
    assert growth["start"]["architectures"] == data["architectures"]
    assert growth["max"]["architectures"] == at_max["architectures"]
    assert growth["max"]["params_supernet"] == at_max["params"]["supernet"]
    assert growth["start"]["nodes"] == 2 and growth["max"]["nodes"] == 6
    # two-input nodes: member i keeps 2 of (i + 1) candidates, 4 non-zero ops each, 2 combiners
    from math import comb

    assert growth["max"]["architectures"] == pytest.approx(
        __import__("math").prod(comb(i + 1, 2) * 16 * 2 for i in range(1, 7))
    )


def test_diff_reports_schedule_changes_and_an_added_block():
    base = load_graph(GROW, SIZES)
    changed = load_graph_space(
        parse_space(GROW.read_text().replace("max 6", "max 8").replace("every 2 epochs", "plateau 3 epochs").replace("then_prune", "interleaved")),
        SIZES,
    )
    assert render_edits(diff_graphs(base, changed)).splitlines() == [
        "~ grow s.max: 6 -> 8",
        "~ grow s.mode: then_prune -> interleaved",
        "~ grow s.when: every 2 epochs -> plateau 3 epochs",
    ]
    fixed_start = load_graph_space(expand(parse_space(GROW.read_text()), 2), SIZES)
    assert render_edits(diff_graphs(fixed_start, base)) == "+ grow s: 2 -> 6 nodes, every 2 epochs, mode then_prune"


def test_cli_check_fmt_show_stats_diff_on_the_growing_space(tmp_path):
    def run(*args):
        result = subprocess.run([sys.executable, "-m", "essdsl", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                                timeout=120, env={**os.environ, "COLUMNS": "120"})
        assert "Traceback" not in result.stderr, result.stderr
        return result

    assert run("check", GROW).returncode == 0
    assert run("fmt", "--check", GROW).returncode == 0
    stats = run("stats", GROW, "--ninp", 16, "--nhid", 16, "--json")
    assert json.loads(stats.stdout)["growth"]["max"]["nodes"] == 6
    table = run("stats", GROW, "--ninp", 16, "--nhid", 16)
    assert "grow s: every 2 epochs, mode then_prune" in table.stdout and "60,881,161,420,800" in table.stdout
    diff = run("diff", FIXED, GROW)
    assert diff.returncode == 1 and "+ grow s: 2 -> 6 nodes" in diff.stdout and "- node s4" in diff.stdout
    bad = tmp_path / "bad.space"
    bad.write_text(GROW.read_text().replace("highway(tanh, s, carry", "highway(tanh, mean(s), carry"))
    result = run("check", bad)
    assert result.returncode == 1 and f"{bad}:32:29: error: the grown family 's' is read by mean(...)" in result.stderr


def test_a_genotype_derived_from_a_growing_space_is_written_at_the_searched_size(grow_space):
    """The grow block is expanded at the size the choices were made at (here 3 members)."""
    from essdsl.nas.derive import KeptEdge, NodeChoice, genotype_text

    choices = {
        f"s{i}": NodeChoice(f"s{i}", (KeptEdge(0, "x[t]", "sigmoid", 0.5), KeptEdge(1, "h[t-1]", "tanh", 0.5)), "product", 0.6)
        for i in (1, 2, 3)
    }
    graph, report = check_text(genotype_text(grow_space, choices, sizes=SIZES), sizes=SIZES)
    assert report.ok, report.render()
    assert sorted(k for k in graph.dag if k.startswith("s")) == ["s1", "s2", "s3"]
    assert graph.kind == "genotype"


@pytest.mark.parametrize("most", ["1001", "100000000000000000"])
def test_a_max_beyond_the_node_limit_is_refused_before_expanding(most):
    # the fuzzer found it: 'max 10^17' was expanded member by member until memory ran out
    text = GROW.read_text().replace("max 6", f"max {most}")
    _, report = check_text(text, "g.space")
    assert [d.code for d in report.diagnostics if d.severity == "error"] == ["limit"]
    assert f"max {most} would grow the family" in report.render()
