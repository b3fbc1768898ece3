"""The formatter: idempotent, IR-preserving, comment-preserving.

Shipped files and hand-written edge cases are checked directly; a hypothesis
strategy then builds random *valid* spaces as IR (op sets, defaults,
windowed inputs and states, fixed nodes over earlier names, mixed nodes with
ranges, pairs and attributes, state updates, provenance), formats them, parses
the text back and requires the same IR, a clean check and a fixed point.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from essdsl.lang import ir
from essdsl.lang.check import check_text
from essdsl.lang.fmt import format_space, format_text
from essdsl.lang.parse import parse_space

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "spaces").glob("*.space")) + sorted((ROOT / "genotypes").glob("*.space"))


def same_ir(a: ir.Space, b: ir.Space) -> bool:
    return ir.strip_spans(a) == ir.strip_spans(b)


def comment_texts(text: str) -> list[str]:
    return sorted(c.text for c in parse_space(text).comments)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_files_round_trip(path: Path):
    text = path.read_text(encoding="utf-8")
    formatted = format_text(text)
    assert format_text(formatted) == formatted
    assert same_ir(parse_space(text), parse_space(formatted))
    assert comment_texts(formatted) == comment_texts(text)
    assert len(parse_space(text).comments) >= 2


def test_ess_joint_keeps_section_comments_in_place():
    formatted = format_text((ROOT / "spaces" / "ess_joint.space").read_text(encoding="utf-8"))
    lines = formatted.splitlines()
    inter = lines.index("  # ---- inter-cell: the cell's effective inputs")
    assert lines[inter + 1] == "  node hhat = mix {"
    intra = lines.index("  # ---- intra-cell: the DARTS cell on (xhat, hhat)")
    assert lines[intra + 1].startswith("  node s0 = highway(")


def test_canonical_layout():
    text = (
        "space   demo ops o={tanh,relu} defaults{keep 1 select node_softmax}"
        " cell{input x:ninp state h[t-2..t-1]:nhid node s1=mix{from x,h[t-1..t-2] ops o}"
        " node s2=mix{from s1 ops {tanh} transform project} h[t]=linear(s1,s2,dim=nhid)}"
    )
    assert format_text(text) == (
        "space demo\n"
        "\n"
        "ops o = {tanh, relu}\n"
        "\n"
        "defaults {\n"
        "  keep 1\n"
        "  select node_softmax\n"
        "}\n"
        "\n"
        "cell {\n"
        "  input x : ninp\n"
        "  state h[t-2..t-1] : nhid\n"
        "  node s1 = mix { from x, h[t-1..t-2] ops o }\n"
        "  node s2 = mix {\n"
        "    from s1 ops {tanh}\n"
        "    transform project\n"
        "  }\n"
        "  h[t] = linear(s1, s2, dim = nhid)\n"
        "}\n"
    )


CELL = "space p cell { input a : ninp input b : ninp input c : ninp state h : nhid h[t] = %s }"


@pytest.mark.parametrize(
    "written, canonical",
    [
        ("a - (b - c)", "a - (b - c)"),
        ("(a - b) - c", "a - b - c"),
        ("a * (b + c)", "a * (b + c)"),
        ("(a * b) + c", "a * b + c"),
        ("a + (b * c)", "a + b * c"),
        ("(a + b) * c", "(a + b) * c"),
        ("a * (b * c)", "a * (b * c)"),
        ("((a))", "a"),
        ("tanh((a + b)) * c", "tanh(a + b) * c"),
        ("highway(tanh,a,b,carry=(c))", "highway(tanh, a, b, carry = c)"),
        ("a - (b + c) * (a - b)", "a - (b + c) * (a - b)"),
    ],
)
def test_parentheses_only_where_precedence_needs_them(written, canonical):
    formatted = format_text(CELL % written)
    assert f"  h[t] = {canonical}\n" in formatted
    assert same_ir(parse_space(CELL % written), parse_space(formatted))


COMMENTED = """# leading comment
space demo  # after the header
# before the op sets
ops o = {tanh, relu}  # the ops
defaults {
  # first default
  keep 1  # keep one
  # last in defaults
}
cell {  # opening the cell
  input x : ninp
  state h[t-1] : nhid
  node a = tanh(  # inside a statement
    x)
  node m = mix {
    # before the clause
    from a ops o
    keep 1
    # end of the mix block
  }  # after the mix
  node one = mix { from a, m ops {tanh} select node_softmax }
  h[t] = mean(a, m, one)  # the update
  # end of the cell
}  # closing the cell
# end of file
"""


def test_comments_survive_with_their_statements():
    formatted = format_text(COMMENTED)
    assert comment_texts(formatted) == comment_texts(COMMENTED)
    assert len(parse_space(formatted).comments) == len(parse_space(COMMENTED).comments) == 16
    assert format_text(formatted) == formatted
    assert same_ir(parse_space(COMMENTED), parse_space(formatted))
    lines = formatted.splitlines()
    assert lines[0] == "# leading comment"
    assert lines[1] == "space demo  # after the header"
    assert "ops o = {tanh, relu}  # the ops" in lines
    assert "  keep 1  # keep one" in lines
    assert lines.index("  # last in defaults") < lines.index("}")  # stays inside the defaults block
    assert "  node a = tanh(x)  # inside a statement" in lines
    assert lines[lines.index("    # before the clause") + 1] == "    from a ops o"
    assert lines[lines.index("    # end of the mix block") + 1] == "  }  # after the mix"
    assert lines[lines.index("  # end of the cell") + 1] == "}  # closing the cell"
    assert lines[-1] == "# end of file"


def test_comment_inside_single_clause_mix_keeps_block_form():
    text = "space d cell { state h : nhid\n node m = mix { from h[t-1] ops {tanh}  # why\n }\n h[t] = m }"
    formatted = format_text(text)
    assert "    from h[t-1] ops {tanh}  # why\n" in formatted
    assert format_text(formatted) == formatted


def test_hash_inside_provenance_string_is_not_a_comment():
    text = 'genotype g provenance { note = "a # b \\" c" lr = 0.025 steps = [1, -2, 3.5e-07] } cell { state h : nhid h[t] = h[t-1] }'
    space = parse_space(text)
    assert space.comments == []
    formatted = format_text(text)
    assert 'note = "a # b \\" c"' in formatted
    assert same_ir(space, parse_space(formatted))
    assert parse_space(formatted).comments == []


def test_format_space_of_span_free_ir():
    space = ir.Space(
        kind="genotype",
        name="built",
        provenance=[ir.ProvenanceEntry(key="theta", value=[["s1", "s0", "relu", 0.75]])],
        cell=ir.Cell(
            statements=[
                ir.StateDecl(name="h", dim=ir.Dim(symbol="nhid")),
                ir.MixedNode(
                    name="s1",
                    clauses=[ir.FromClause(sources=[ir.Ref(name="h", offset=-1, timed=True)], ops=ir.OpRef(ops=["relu"]))],
                    attributes=[ir.Attribute(name="combine", value=("sum",))],
                ),
                ir.StateUpdate(name="h", expr=ir.Ref(name="s1")),
            ]
        ),
    )
    text = format_space(space)
    assert "  node s1 = mix {\n    from h[t-1] ops {relu}\n    combine {sum}\n  }\n" in text
    assert format_text(text) == text
    _, report = check_text(text)
    assert report.ok, report.render()


# ------------------------------------------------------------------ random valid spaces
OPS = ["tanh", "relu", "sigmoid", "identity", "zero"]
ACTIVATION_CALLS = ["tanh", "relu", "sigmoid", "identity"]


@st.composite
def op_lists(draw):
    ops = draw(st.lists(st.sampled_from(OPS), min_size=1, max_size=5, unique=True))
    if ops == ["zero"]:
        ops = ["zero", "tanh"]
    return ops


def _refs(streams, nodes):
    """Every value a statement may read: streams at their window offsets, earlier nodes."""
    refs = []
    for kind, name, window in streams:
        if kind == "input":
            lo = window.earliest if window else 0
            refs.append(ir.Ref(name=name))
            refs.extend(ir.Ref(name=name, offset=o, timed=True) for o in range(lo, 1))
        else:
            lo = window.earliest if window else -1
            refs.extend(ir.Ref(name=name, offset=o, timed=True) for o in range(lo, 0))
    refs.extend(ir.Ref(name=n) for n in nodes)
    return refs


def _key(ref: ir.Ref) -> str:
    return f"{ref.name}@{ref.offset}"


@st.composite
def expressions(draw, refs, nodes, depth=3):
    choice = draw(st.integers(0, 6 if depth > 0 else 0))
    if choice == 0:
        return draw(st.sampled_from(refs))
    if choice == 1:
        return ir.Call(function=draw(st.sampled_from(ACTIVATION_CALLS)), args=[draw(expressions(refs, nodes, depth - 1))])
    if choice in (2, 3):
        return ir.BinaryOp(
            operator=draw(st.sampled_from(["+", "-", "*"])),
            left=draw(expressions(refs, nodes, depth - 1)),
            right=draw(expressions(refs, nodes, depth - 1)),
        )
    if choice == 4:
        args = draw(st.lists(expressions(refs, nodes, depth - 1), min_size=1, max_size=3))
        if len(nodes) >= 2 and draw(st.booleans()):
            i = draw(st.integers(0, len(nodes) - 2))
            j = draw(st.integers(i + 1, len(nodes) - 1))
            args.append(ir.Range(first=nodes[i], last=nodes[j]))
        return ir.Call(function="mean", args=args)
    if choice == 5:
        args = draw(st.lists(expressions(refs, nodes, depth - 1), min_size=1, max_size=3))
        keywords = {"dim": ir.Ref(name="nhid")} if draw(st.booleans()) else {}
        return ir.Call(function=draw(st.sampled_from(["linear", "project"])), args=args, keywords=keywords)
    inputs = draw(st.lists(st.sampled_from(refs), min_size=1, max_size=3))
    keywords = {"carry": draw(st.sampled_from(refs))} if len(inputs) > 1 or draw(st.booleans()) else {}
    return ir.Call(function="highway", args=[ir.Ref(name=draw(st.sampled_from(ACTIVATION_CALLS)))] + inputs, keywords=keywords)


@st.composite
def mixed_nodes(draw, name, refs, nodes, streams, op_set_names):
    used: set = set()
    clauses = []
    for _ in range(draw(st.integers(1, 3))):
        sources, keys = [], []
        for _ in range(draw(st.integers(1, 3))):
            form = draw(st.sampled_from(["ref", "node_range", "timed_range", "pair", "pairs"]))
            if form == "node_range" and len(nodes) >= 2:
                i = draw(st.integers(0, len(nodes) - 2))
                j = draw(st.integers(i + 1, len(nodes) - 1))
                candidate, new_keys = ir.Range(first=nodes[i], last=nodes[j]), [{f"{n}@0"} for n in nodes[i : j + 1]]
            elif form == "timed_range" and any(k == "state" for k, _, w in streams):
                _, state, window = draw(st.sampled_from([s for s in streams if s[0] == "state"]))
                lo = window.earliest if window else -1
                a, b = draw(st.integers(lo, -1)), draw(st.integers(lo, -1))
                span = range(min(a, b), max(a, b) + 1)
                candidate = ir.Range(first=state, last=state, first_offset=a, last_offset=b, timed=True)
                new_keys = [{f"{state}@{o}"} for o in span]
            elif form == "pair" and len({_key(r) for r in refs}) >= 2:
                left = draw(st.sampled_from(refs))
                right = draw(st.sampled_from([r for r in refs if _key(r) != _key(left)]))
                candidate, new_keys = ir.Pair(left=left, right=right), [{_key(left), _key(right)}]
            elif form == "pairs" and len({_key(r) for r in refs}) >= 2:
                items = draw(st.lists(st.sampled_from(refs), min_size=2, max_size=3, unique_by=_key))
                candidate = ir.Pairs(items=items)
                new_keys = [{_key(a), _key(b)} for i, a in enumerate(items) for b in items[i + 1 :]]
            else:
                ref = draw(st.sampled_from(refs))
                candidate, new_keys = ref, [{_key(ref)}]
            frozen = [frozenset(k) for k in new_keys]
            if any(k in used for k in frozen) or len(set(frozen)) != len(frozen):
                continue
            used.update(frozen)
            sources.append(candidate)
            keys.extend(frozen)
        if not sources:
            continue
        if op_set_names and draw(st.booleans()):
            ops = ir.OpRef(set_name=draw(st.sampled_from(op_set_names)))
        else:
            ops = ir.OpRef(ops=draw(op_lists()))
        clauses.append(ir.FromClause(sources=sources, ops=ops))
    if not clauses:
        ref = draw(st.sampled_from(refs))
        clauses = [ir.FromClause(sources=[ref], ops=ir.OpRef(ops=["tanh"]))]
        used = {frozenset({_key(ref)})}
    attributes = []
    keep = draw(st.integers(1, len(used)))
    if keep > 1 or draw(st.booleans()):
        attributes.append(ir.Attribute(name="keep", value=keep))
    optional = {
        "transform": st.sampled_from(["highway", "project"]),
        "select": st.sampled_from(["edge_softmax", "node_softmax"]),
        "norm": st.sampled_from(["batchnorm", "none"]),
        "dim": st.sampled_from(["nhid", 300]),
        "combine": st.sampled_from(["sum", "mean", ["sum"], ["sum", "mean"]] + (["product", ["sum", "product"]] if keep > 1 else [])),
    }
    for attribute in draw(st.lists(st.sampled_from(sorted(optional)), unique=True, max_size=3)):
        attributes.append(ir.Attribute(name=attribute, value=draw(optional[attribute])))
    draw(st.randoms()).shuffle(attributes)
    return ir.MixedNode(name=name, clauses=clauses, attributes=attributes)


@st.composite
def spaces(draw):
    op_sets = [
        ir.OpSet(name=f"ops_{i}", ops=draw(op_lists())) for i in range(draw(st.integers(0, 2)))
    ]
    defaults = [
        ir.Attribute(name=name, value=draw(strategy))
        for name, strategy in draw(
            st.lists(
                st.sampled_from(
                    [
                        ("transform", st.sampled_from(["highway", "project"])),
                        ("select", st.sampled_from(["edge_softmax", "node_softmax"])),
                        ("norm", st.sampled_from(["batchnorm", "none"])),
                        ("combine", st.sampled_from(["sum", "mean"])),
                    ]
                ),
                unique_by=lambda pair: pair[0],
                max_size=3,
            )
        )
    ]
    streams, statements = [], []
    for index in range(draw(st.integers(1, 2))):
        window = draw(st.one_of(st.none(), st.integers(-3, 0).map(lambda e: ir.Window(earliest=e, latest=0))))
        name = ["x", "u"][index]
        statements.append(ir.InputDecl(name=name, window=window, dim=ir.Dim(symbol=draw(st.sampled_from(["ninp", "nhid"])))))
        streams.append(("input", name, window))
    state_names = ["h", "c"][: draw(st.integers(1, 2))]
    for name in state_names:
        window = draw(st.one_of(st.none(), st.integers(-3, -1).map(lambda e: ir.Window(earliest=e, latest=-1))))
        dim = draw(st.sampled_from([ir.Dim(symbol="nhid"), ir.Dim(value=300)]))
        statements.append(ir.StateDecl(name=name, window=window, dim=dim))
        streams.append(("state", name, window))
    draw(st.randoms()).shuffle(statements)
    nodes: list[str] = []
    for index in range(draw(st.integers(0, 5))):
        name = f"n{index}"
        refs = _refs(streams, nodes)
        if draw(st.booleans()):
            statements.append(draw(mixed_nodes(name, refs, nodes, streams, [s.name for s in op_sets])))
        else:
            statements.append(ir.FixedNode(name=name, expr=draw(expressions(refs, nodes))))
        nodes.append(name)
    refs = _refs(streams, nodes)
    for position, name in enumerate(state_names):
        expr = draw(expressions(refs, nodes, 2))
        if position == 0 and nodes:  # every node reaches the first update
            expr = ir.Call(function="mean", args=[ir.Range(first=nodes[0], last=nodes[-1]), expr])
        statements.append(ir.StateUpdate(name=name, expr=expr))
    if draw(st.booleans()):
        statements.append(ir.OutputDecl(name=draw(st.sampled_from(state_names))))
    literal = st.recursive(
        st.one_of(
            st.text(max_size=12),
            st.integers(-(10**12), 10**12),
            st.floats(allow_nan=False, allow_infinity=False),
        ),
        lambda inner: st.lists(inner, max_size=3),
        max_leaves=6,
    )
    provenance = [
        ir.ProvenanceEntry(key=key, value=draw(literal))
        for key in draw(st.lists(st.sampled_from(["seed", "lr", "note", "theta", "steps"]), unique=True, max_size=3))
    ]
    return ir.Space(
        kind="space",
        name=draw(st.sampled_from(["demo", "rand_space", "S1"])),
        provenance=provenance,
        op_sets=op_sets,
        defaults=defaults,
        cell=ir.Cell(statements=statements),
    )


PROPERTY_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(spaces())
def test_random_spaces_round_trip(space):
    text = format_space(space)
    parsed = parse_space(text)
    assert ir.strip_spans(parsed) == ir.strip_spans(space), text
    assert format_space(parsed) == text
    _, report = check_text(text)
    assert report.ok, f"{report.render()}\n{text}"


@PROPERTY_SETTINGS
@given(spaces(), st.randoms(use_true_random=False), st.integers(1, 8))
def test_random_comments_survive(space, rng: random.Random, count: int):
    lines = format_space(space).splitlines()
    for number in range(count):
        position = rng.randrange(len(lines) + 1)
        comment = f"# note {number}"
        if position < len(lines) and lines[position].strip() and "#" not in lines[position] and rng.random() < 0.5:
            lines[position] += f"  {comment}"
        else:
            indent = " " * rng.choice([0, 2, 4])
            lines.insert(position, indent + comment)
    text = "\n".join(lines) + "\n"
    formatted = format_text(text)
    assert comment_texts(formatted) == comment_texts(text) == sorted(f"# note {n}" for n in range(count))
    assert same_ir(parse_space(text), parse_space(formatted))
    assert format_text(formatted) == formatted, f"{text}\n---\n{formatted}"


def test_shipped_files_are_in_canonical_layout():
    """`essdsl fmt --check` passes on every file the project ships."""
    from essdsl.lang.fmt import format_text

    root = Path(__file__).resolve().parent.parent
    for path in sorted(root.glob("spaces/*.space")) + sorted(root.glob("genotypes/*.space")):
        text = path.read_text(encoding="utf-8")
        assert format_text(text, str(path)) == text, f"{path} is not canonically formatted (run essdsl fmt --write)"
