"""The language's limits (essdsl/lang/limits.py, docs/semantics.md "Limits") are rules:
a file just inside every limit checks, formats, shows, diffs, compiles (generated
Python, TorchScript) and runs in both implementations; a file just outside one
gets a located diagnostic.  Node names include Python keywords, builtins, names
the generated code uses and nn.Module attributes (issue 12 D1-D4, D10)."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from essdsl.lang import limits
from essdsl.lang.check import check_text
from essdsl.compile import ModelConfig, build_model, generate_source
from essdsl.lang.diff import diff_graphs
from essdsl.lang.fmt import format_text
from essdsl.lang.show import describe
from essdsl.lang.stats import stats_dict
from test_compile_equivalence import assert_same, pair

SIZES = {"ninp": 4, "nhid": 4}
# Names a user may pick that collide with something in generated Python or in nn.Module.
HOSTILE_NAMES = [
    "if", "for", "None", "True", "class", "lambda", "training", "forward", "cell", "arch", "norms",
    "encoder", "keys", "_parameters", "__init__", "state_dict", "xs", "past", "masks", "list", "range",
    "float", "super", "weight", "T", "B", "t", "Config", "ParameterBag", "nd_x", "requires_grad_", "step",
    "_mask", "type", "to", "self", "torch", "F", "nn", "Tensor", "hidden", "tokens", "outputs", "print",
]  # fmt: skip
# Smooth ones only: relu's kink turns a last-bit difference (addmm vs matmul + bias) into
# a different gradient when a hundred-term expression lands on 0.
ACTIVATIONS = ["tanh", "sigmoid", "identity", "neg"]
# Brackets a node expression may open: the cell's '{' and the innermost 'h[' take two.
EXPRESSION_NESTING = limits.MAX_NESTING - 2


def expression(draw, previous: str, pool: list[str], wraps: int, operators: int) -> str:
    """``operators`` + - * between refs (the previous node first), inside ``wraps`` brackets."""
    text = previous
    for _ in range(operators):
        text += draw(st.sampled_from([" + ", " - ", " * "])) + draw(st.sampled_from(pool))
    for _ in range(wraps):
        kind = draw(st.sampled_from(ACTIVATIONS + ["mean", "()"]))
        text = f"({text})" if kind == "()" else f"{kind}({text})"
    return text


@st.composite
def spaces_at_the_limits(draw):
    names = draw(st.lists(st.sampled_from(HOSTILE_NAMES), min_size=2, max_size=5, unique=True))
    names.append("n" + "x" * (limits.MAX_NAME_LENGTH - 1))  # a name as long as allowed
    lines = [
        "space limits",
        f"provenance {{ seed = {'9' * limits.MAX_NUMBER_DIGITS}  nested = {'[' * (limits.MAX_NESTING - 2)}1{']' * (limits.MAX_NESTING - 2)} }}",
        "ops o = {tanh, relu, zero}",
        "cell {",
        "  input x[t] : ninp",
        "  state h[t-1] : nhid",
        f"  node {names[0]} = linear(x[t], h[t-1])",
    ]
    pool = ["h[t-1]", names[0]]
    for i, name in enumerate(names[1:], start=1):
        if draw(st.booleans()):
            lines.append(f"  node {name} = mix {{ from {names[i - 1]}, h[t-1] ops o  norm batchnorm }}")
        else:
            wraps = draw(st.integers(EXPRESSION_NESTING - 6, EXPRESSION_NESTING))
            operators = draw(st.integers(limits.MAX_OPERATORS - 10, limits.MAX_OPERATORS))
            lines.append(f"  node {name} = {expression(draw, names[i - 1], pool, wraps, operators)}")
        pool.append(name)
    lines += [f"  h[t] = tanh({names[-1]})", "}"]
    return "\n".join(lines) + "\n"


def assert_every_stage_works(text: str) -> None:
    graph, report = check_text(text, "<limits>", SIZES)
    assert report.ok, report.render()
    formatted = format_text(text)
    regraph, rereport = check_text(formatted, "<formatted>", SIZES)
    assert rereport.ok, rereport.render()
    assert not diff_graphs(graph, regraph)
    describe(graph)
    stats_dict(graph)
    for search in (True, False):
        source = generate_source(graph, ModelConfig(vocab=20, search=search))
        compile(source, "<generated>", "exec")  # Python accepts it (no over-deep nesting)
        generated, reference = pair(graph, search)
        # float64: a hundred chained products amplify float32 rounding past assert_same's tolerance
        assert_same(generated.double(), reference.double())  # both implementations, same numbers
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.jit.script(generated)  # TorchScript accepts it (no recursion overflow)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spaces_at_the_limits())
def test_spaces_at_every_limit_check_format_compile_and_run(text):
    assert_every_stage_works(text)


def test_every_hostile_name_compiles_in_both_implementations():
    chain = ["node if = linear(x[t], h[t-1])"]
    names = [n for n in HOSTILE_NAMES if n != "if"]
    previous = "if"
    for i, name in enumerate(names):
        chain.append(f"node {name} = mix {{ from {previous} ops o }}" if i % 2 else f"node {name} = tanh({previous})")
        previous = name
    text = "space names\nops o = {tanh, relu}\ndefaults { norm batchnorm }\ncell {\n  input x[t] : ninp\n  state h[t-1] : nhid\n  "
    text += "\n  ".join(chain) + f"\n  h[t] = {previous}\n}}\n"
    assert_every_stage_works(text)


def test_long_flat_expressions_and_many_nodes_compile():
    """A 1000-node cell whose state is the mean of all of them (a 999-operator sum in
    the generated code: it once overflowed TorchScript's recursion at 500)."""
    nodes = [f"  node n{i} = linear(x[t], h[t-1])" for i in range(limits.MAX_NODES - 1)]
    nodes.append(f"  node m = mix {{ from n0..n{limits.MAX_NODES - 2} ops {{tanh, relu}} combine product keep 2 }}")
    text = "space wide\ncell {\n  input x[t] : ninp\n  state h[t-1] : nhid\n" + "\n".join(nodes)
    text += f"\n  h[t] = mean(n0..n{limits.MAX_NODES - 2}) + m\n}}\n"
    graph, report = check_text(text, "<wide>", {"ninp": 2, "nhid": 2})
    assert report.ok, report.render()
    generated, reference = pair(graph, True)
    assert_same(generated, reference, T=2, B=2)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.jit.script(generated)


def located(text: str):
    _, report = check_text(text, "<over>")
    assert not report.ok
    errors = [d for d in report.diagnostics if d.severity == "error"]
    assert all(d.line >= 1 for d in errors), report.render()
    return errors


def cell(expr: str = "x", header: str = "", state: str = "h[t-1] : nhid") -> str:
    return "space over\n" + header + "cell {\n  input x : ninp\n  state " + state + "\n  h[t] = " + expr + "\n}\n"


BIG = "9" * 5000
NESTED = limits.MAX_NESTING - 2  # wraps that bring an expression to the limit (the cell's '{' is one level)


@pytest.mark.parametrize(
    "text, line, column, message",
    [
        # D1: longer than Python converts to int (4,300 digits) in every place a number goes
        (cell(state=f"h[t-{BIG}] : nhid"), 4, 13, "a number has at most 18"),
        (cell(state=f"h[t-1] : {BIG}"), 4, 18, "a number has at most 18"),
        (cell(header=f"defaults {{ keep {BIG} }}\n"), 2, 17, "a number has at most 18"),
        (cell(f"mean(x, s0..s{BIG})"), 5, 22, "a name has at most 128"),
        # just over each limit
        (cell(header=f"provenance {{ a = {'1' * 19} }}\n"), 2, 18, "at most 18"),
        (cell("tanh(" * (NESTED + 2) + "x" + ")" * (NESTED + 2)), 5, 10 + 5 * (NESTED + 1) + 4, "more than 50 levels of brackets"),
        (cell(" + ".join(["x"] * (limits.MAX_OPERATORS + 2))), 5, 10 + 4 * (limits.MAX_OPERATORS + 1), "limit is 100"),
        (cell(state=f"h[t-1] : {limits.DEFAULT_MAX_SIZE + 1}"), 4, 18, "ESSDSL_MAX_SIZE"),
        # D10: a flat sum of 20,000 terms is too long where it becomes too long, not "nested" at 1:1
        (cell(" + ".join(["x"] * 20_000)), 5, 10 + 4 * (limits.MAX_OPERATORS + 1), "expression too long"),
        # D2: 400 deep in an expression and in a provenance list
        (cell("linear(" * 400 + "x" + ")" * 400), 5, 10 + 7 * (NESTED + 1) + 6, "nested too deeply"),
        (cell(header="provenance { a = " + "[" * 400 + "]" * 400 + " }\n"), 2, 18 + 49, "nested too deeply"),
    ],
)
def test_over_a_limit_is_a_located_error(text, line, column, message):
    errors = located(text)
    assert any((d.line, d.column) == (line, column) and message in d.message for d in errors), [
        (d.line, d.column, d.message) for d in errors
    ]


def test_node_count_limit_is_located_at_the_first_node_too_many():
    nodes = "\n".join(f"  node n{i} = tanh(x)" for i in range(limits.MAX_NODES + 1))
    errors = located(cell("n0").replace("  h[t] =", nodes + "\n  h[t] ="))
    assert [(d.line, d.column) for d in errors if d.code == "limit"] == [(5 + limits.MAX_NODES, 3)]


def test_size_limit_can_be_raised(monkeypatch):
    text = cell("tanh(x)", state="h[t-1] : 20000")
    assert located(text)[0].code == "size-limit"
    monkeypatch.setenv(limits.MAX_SIZE_ENV, "20000")
    _, report = check_text(text, "<raised>")
    assert "size-limit" not in {d.code for d in report.diagnostics}
    monkeypatch.setenv(limits.MAX_SIZE_ENV, "not a number")
    assert limits.max_size() == limits.DEFAULT_MAX_SIZE


def test_symbolic_size_over_the_limit_is_reported_at_its_declaration():
    _, report = check_text(cell("tanh(x)"), "<big>", {"nhid": 10**8})
    limit_errors = [d for d in report.diagnostics if d.code == "size-limit"]
    assert [(d.line, d.column) for d in limit_errors] == [(4, 18)]
    assert "size 'nhid' = 100000000" in limit_errors[0].message


def test_cell_edge_limit_stops_a_cell_that_would_take_minutes():
    """1,000 mixed nodes each choosing among all earlier ones: 500,000 candidates (55 s to check before)."""
    nodes = ["  node s0 = linear(x, h[t-1])"] + [f"  node s{i} = mix {{ from s0..s{i - 1} ops {{tanh}} }}" for i in range(1, 999)]
    text = cell("mean(s1..s998)").replace("  h[t] =", "\n".join(nodes) + "\n  h[t] =")
    errors = located(text)
    assert [(e.line, e.code) for e in errors] == [(4 + 201, "limit")], [e.message for e in errors]
    assert f"at most {limits.MAX_CELL_EDGES}" in errors[0].message


def test_pairs_of_many_names_are_refused_before_they_are_built():
    nodes = ["  node s0 = linear(x, h[t-1])"] + [f"  node s{i} = tanh(s0)" for i in range(1, 300)]
    nodes.append("  node m = mix { from pairs(s0..s299) ops {tanh} }")
    errors = located(cell("m").replace("  h[t] =", "\n".join(nodes) + "\n  h[t] ="))
    assert any(e.code == "limit" and "pairs(...) of 300 names makes 44850" in e.message for e in errors)


def test_call_arguments_count_toward_the_expression_limit():
    errors = located(cell("mean(" + ", ".join(["x"] * (limits.MAX_OPERATORS + 2)) + ")"))
    assert [(e.line, e.column, e.code) for e in errors] == [(5, 15 + 3 * (limits.MAX_OPERATORS + 1), "limit")]


def test_emit_python_prints_valid_code_for_keyword_and_attribute_names(tmp_path):
    """`node if` once printed a SyntaxError-ridden module with exit 0 (issue 12 D4)."""
    import subprocess
    import sys
    from pathlib import Path

    path = tmp_path / "names.space"
    path.write_text(
        "space names\nops o = {tanh, relu}\ndefaults { norm batchnorm }\ncell {\n  input x[t] : ninp\n  state h[t-1] : nhid\n"
        "  node if = linear(x[t], h[t-1])\n  node training = mix { from if ops o }\n  node __init__ = mix { from training ops o }\n"
        "  h[t] = __init__\n}\n",
        encoding="utf-8",
    )
    root = Path(__file__).resolve().parent.parent
    emitted = ""
    for impl, extra in (("generated", ["--emit-python"]), ("reference", ["-o", str(tmp_path / "names.pt")])):
        args = [sys.executable, "-m", "essdsl", "compile", str(path), "--nhid", "4", "--ninp", "4", "--impl", impl, *extra]
        result = subprocess.run(args, capture_output=True, text=True, cwd=root, timeout=300)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
        emitted = emitted or result.stdout
    compile(emitted, "<emitted>", "exec")
    assert "self.norms.nd_training" in emitted and "nd___init__" in emitted
