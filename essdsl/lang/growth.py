"""Growth in the language: the ``grow`` block of a cell.

::

    grow s {
      from x[t], h[t-1], s ops unary   # the template: a mix body; ``s`` = every earlier member
      start 2                          # s1, s2 exist when the search starts
      max 6                            # the search may grow up to s6
      every 2 epochs                   # or: every 50 steps, plateau 3 epochs
      mode then_prune                  # or: interleaved
    }

A ``grow NAME { … }`` statement stands, at size n, for the mixed nodes NAME1 … NAMEn
written where the block is, each with the block's mix body (its ``from`` clauses and
attributes).  Inside the body the bare family name means "every earlier member"
(none for NAME1).  Elsewhere the bare family name means every member, in order, and
may stand only where a new member enters a matrix product: an input of ``linear``,
``project`` or ``highway``, whose rows for the new member start at zero, so that a
growth step keeps the network's function (:mod:`essdsl.nas.growth`).

:func:`expand` rewrites a space with a grow block into an ordinary space at a given
size (every other stage — graph, check, compile, derive — sees only that);
:func:`growth_plan` validates the block (codes ``bad-grow``, ``grow-name``,
``grow-reader``) and returns its schedule as a :class:`GrowPlan`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional

from essdsl.errors import Diagnostic, error
from essdsl.lang import ir
from essdsl.lang.limits import MAX_NODES

GROW_MODES = ("then_prune", "interleaved")
GROW_UNITS = {"every": ("epochs", "steps"), "plateau": ("epochs",)}
# Structural functions whose inputs are concatenated into one matrix product: a new
# member there adds rows to the matrix, and zero rows leave the product unchanged.
MATRIX_READERS = ("linear", "project", "highway")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:\[t(?:-(\d+))?\])?")


# ------------------------------------------------------------------ parse (called by parse.py)
def grow_block(children, span: ir.Span, span_of) -> ir.GrowBlock:
    """The IR of ``grow NAME { … }`` from its parse-tree children."""
    name, *body = children
    return ir.GrowBlock(
        name=str(name),
        clauses=[b for b in body if isinstance(b, ir.FromClause)],
        attributes=[b for b in body if isinstance(b, ir.Attribute)],
        settings=[b for b in body if isinstance(b, ir.GrowSetting)],
        name_span=span_of(name),
        span=span,
    )


# ------------------------------------------------------------------ the schedule
@dataclass(frozen=True)
class GrowPlan:
    """What a grow block says, resolved: which family, from which size to which, when
    to grow (``trigger`` "every" N ``unit``, or "plateau": N epochs without a better
    validation loss) and the ``mode`` ("then_prune" or "interleaved")."""

    family: str
    start: int
    max: int
    trigger: str = "every"
    period: int = 1
    unit: str = "epochs"
    mode: str = "then_prune"

    def member(self, index: int) -> str:
        return f"{self.family}{index}"

    def members(self, size: int) -> list[str]:
        return [self.member(i) for i in range(1, size + 1)]

    def describe(self) -> str:
        when = f"every {self.period} {self.unit}" if self.trigger == "every" else f"on a plateau of {self.period} {self.unit}"
        return f"{self.start} -> {self.max} nodes, {when}, mode {self.mode}"


def grow_blocks(space: ir.Space) -> list[ir.GrowBlock]:
    return space.statements("grow")


def has_growth(space: ir.Space) -> bool:
    return bool(grow_blocks(space))


def growth_plan(space: ir.Space) -> tuple[Optional[GrowPlan], list[Diagnostic]]:
    """The plan of the space's grow block (None when it has none or it is in error),
    with every problem of the block, its names and its readers."""
    blocks = grow_blocks(space)
    if not blocks:
        return None, []
    diags: list[Diagnostic] = []
    for extra in blocks[1:]:
        diags.append(error(f"a cell grows one family; '{blocks[0].name}' already grows here", extra.span, "bad-grow"))
    block = blocks[0]
    if space.kind == "genotype":
        diags.append(error("a genotype has no choices left and cannot grow; a grow block belongs in a space", block.span, "bad-grow"))
    plan = _settings(block, diags)
    diags.extend(_name_diagnostics(space, block, plan.max if plan else 0))
    diags.extend(_reader_diagnostics(space, block))
    return (plan if not diags else None), diags


def _settings(block: ir.GrowBlock, diags: list[Diagnostic]) -> Optional[GrowPlan]:
    given: dict[str, ir.GrowSetting] = {}
    for setting in block.settings:
        if setting.name in given:
            diags.append(error(f"'{setting.name}' given twice in grow '{block.name}'", setting.span, "bad-grow"))
            continue
        given[setting.name] = setting
    ok = True
    for required in ("start", "max"):
        if required not in given:
            diags.append(error(f"grow '{block.name}' needs '{required} N' (how many nodes it {'starts with' if required == 'start' else 'may reach'})", block.name_span, "bad-grow"))
            ok = False
    start = given.get("start")
    most = given.get("max")
    if start is not None and start.value < 1:
        diags.append(error("a grown family starts with at least one node ('start 1')", start.value_span, "bad-grow"))
        ok = False
    if start is not None and most is not None and start.value >= 1 and most.value < start.value:
        diags.append(error(f"max {most.value} is below start {start.value}: a family only grows", most.value_span, "bad-grow"))
        ok = False
    if most is not None and most.value > MAX_NODES:
        # checked before anything is expanded: "max N" stands for N node statements
        diags.append(error(f"max {most.value} would grow the family to {most.value} nodes; a cell has at most {MAX_NODES} node statements", most.value_span, "limit"))
        ok = False
    triggers = [given[t] for t in ("every", "plateau") if t in given]
    if len(triggers) > 1:
        diags.append(error("grow either 'every N epochs|steps' or on a 'plateau N epochs', not both", triggers[1].span, "bad-grow"))
        ok = False
    trigger = triggers[0] if triggers else None
    if trigger is None:
        diags.append(error(f"grow '{block.name}' needs a schedule: 'every N epochs', 'every N steps' or 'plateau N epochs'", block.name_span, "bad-grow"))
        ok = False
    else:
        if trigger.value < 1:
            diags.append(error(f"'{trigger.name}' needs a positive count", trigger.value_span, "bad-grow"))
            ok = False
        units = GROW_UNITS[trigger.name]
        if trigger.unit not in units:
            diags.append(error(f"unknown unit '{trigger.unit}' for '{trigger.name}' (one of: {', '.join(units)})", trigger.unit_span, "bad-grow"))
            ok = False
    mode = given.get("mode")
    if mode is not None and mode.value not in GROW_MODES:
        diags.append(error(f"unknown grow mode '{mode.value}' (one of: {', '.join(GROW_MODES)})", mode.value_span, "bad-grow"))
        ok = False
    if not ok:
        return None
    return GrowPlan(
        family=block.name,
        start=start.value,
        max=most.value,
        trigger=trigger.name,
        period=trigger.value,
        unit=trigger.unit,
        mode=mode.value if mode is not None else "then_prune",
    )


def _name_diagnostics(space: ir.Space, block: ir.GrowBlock, most: int) -> list[Diagnostic]:
    diags = []
    family = block.name
    if family[-1].isdigit():
        diags.append(error(f"a grown family's name may not end in a digit: its members are '{family}1', '{family}2', …", block.name_span, "grow-name"))
        return diags
    if family in ir.ACTIVATIONS or family in ir.FUNCTIONS:
        diags.append(error(f"'{family}' is an op or function name and cannot name a grown family", block.name_span, "grow-name"))
    member = re.compile(rf"{re.escape(family)}([1-9][0-9]*)")
    for st in space.cell.statements if space.cell else []:
        name = getattr(st, "name", None)
        if st is block or isinstance(st, (ir.StateUpdate, ir.OutputDecl)) or name is None:
            continue
        span = getattr(st, "name_span", None) or st.span
        if name == family:
            diags.append(error(f"'{family}' names both a grown family and a {st.kind} declared here", span, "grow-name"))
        matched = member.fullmatch(name)
        if matched and int(matched.group(1)) <= max(most, 1):
            diags.append(error(f"'{name}' is a member of the grown family '{family}' ({family}1..{family}{max(most, 1)}); give this node another name", span, "grow-name"))
    return diags


def _reader_diagnostics(space: ir.Space, block: ir.GrowBlock) -> list[Diagnostic]:
    """Where the family is read in a way a growth step could not keep the function of."""
    family = block.name
    diags: list[Diagnostic] = []

    def bad(ref, how: str):
        diags.append(
            error(
                f"the grown family '{family}' is read {how}; a growth step keeps the network's function only where "
                f"the family is an input of {', '.join(MATRIX_READERS)} (the new member's rows start at zero)",
                ref.span,
                "grow-reader",
            )
        )

    def is_family(e) -> bool:
        return isinstance(e, ir.Ref) and e.name == family and not e.timed

    def walk(e, how: str):
        if is_family(e):
            bad(e, how)
        elif isinstance(e, ir.BinaryOp):
            what = "by a Hadamard product" if e.operator == "*" else "in a sum"
            walk(e.left, what)
            walk(e.right, what)
        elif isinstance(e, ir.Call):
            inputs = e.args[1:] if e.function == "highway" else e.args
            for a in e.args:
                if a in inputs and e.function in MATRIX_READERS and is_family(a):
                    continue
                walk(a, f"by {e.function}(...)")
            for key, value in e.keywords.items():
                walk(value, f"as {e.function}'s {key}")

    for st in space.cell.statements if space.cell else []:
        if isinstance(st, (ir.FixedNode, ir.StateUpdate)):
            walk(st.expr, "directly")
        elif isinstance(st, (ir.MixedNode, ir.GrowBlock)):
            own = st is block
            for clause in st.clauses:
                for source in clause.sources:
                    for ref in _source_refs(source):
                        if is_family(ref) and (not own or not isinstance(source, ir.Ref)):
                            how = "in a Hadamard pair" if not isinstance(source, ir.Ref) else f"as a candidate of the mixed node '{st.name}'"
                            bad(ref, how)
    return diags


def _source_refs(source) -> list:
    if isinstance(source, ir.Ref):
        return [source]
    if isinstance(source, ir.Pair):
        return [source.left, source.right]
    if isinstance(source, ir.Pairs):
        return [r for item in source.items for r in _source_refs(item)]
    return []


# ------------------------------------------------------------------ expansion
@dataclass(frozen=True)
class PrunedMember:
    """A member whose choice was made while growing (mode ``interleaved``): its kept
    edges as (source key, op) — a source key as the graph writes it, ``x[t]``,
    ``h[t-1]``, ``s2`` or a pair ``h[t-1]*x[t]`` — and its combiner."""

    edges: tuple[tuple[str, str], ...]
    combine: str

    def to_json(self) -> dict:
        return {"edges": [list(e) for e in self.edges], "combine": self.combine}

    @classmethod
    def from_json(cls, data: dict) -> "PrunedMember":
        return cls(tuple((str(s), str(o)) for s, o in data["edges"]), str(data["combine"]))


@dataclass(frozen=True)
class GrowthState:
    """How far a family has grown: its size and the members already pruned."""

    size: int
    pruned: dict = field(default_factory=dict)  # member name -> PrunedMember

    def to_json(self) -> dict:
        return {"size": self.size, "pruned": {k: v.to_json() for k, v in self.pruned.items()}}

    @classmethod
    def from_json(cls, data: dict) -> "GrowthState":
        return cls(int(data["size"]), {k: PrunedMember.from_json(v) for k, v in data.get("pruned", {}).items()})


def _ref_of_key(key: str, span: ir.Span) -> ir.Ref:
    match = _KEY.fullmatch(key)
    if match is None:  # pragma: no cover - keys come from the graph
        raise ValueError(f"not a source key: {key!r}")
    name, back = match.group(1), match.group(2)
    timed = "[" in key
    return ir.Ref(name=name, offset=-int(back) if back else 0, timed=timed, span=span)


def _source_of_key(key: str, span: ir.Span):
    if "*" in key:
        left, right = key.split("*", 1)
        return ir.Pair(left=_ref_of_key(left, span), right=_ref_of_key(right, span), span=span)
    return _ref_of_key(key, span)


def _family_list(family: str, count: int, span: ir.Span):
    """The members 1..count as one source/argument (None when there are none)."""
    if count <= 0:
        return None
    if count == 1:
        return ir.Ref(name=f"{family}1", span=span)
    return ir.Range(first=f"{family}1", last=f"{family}{count}", span=span)


def _replace_family(value, family: str, count: int):
    """``value`` with every bare reference to ``family`` replaced by its members 1..count
    (in argument and source lists; a list entry with no members is dropped)."""
    if isinstance(value, ir.Ref):
        if value.name == family and not value.timed:
            return _family_list(family, count, value.span)
        return value
    if isinstance(value, ir.Call):
        args = [_replace_family(a, family, count) for a in value.args]
        keywords = {k: _replace_family(v, family, count) for k, v in value.keywords.items()}
        return value.model_copy(update={"args": [a for a in args if a is not None], "keywords": keywords})
    if isinstance(value, ir.BinaryOp):
        return value.model_copy(update={"left": _replace_family(value.left, family, count), "right": _replace_family(value.right, family, count)})
    if isinstance(value, (ir.FixedNode, ir.StateUpdate)):
        return value.model_copy(update={"expr": _replace_family(value.expr, family, count)})
    if isinstance(value, ir.MixedNode):
        clauses = []
        for clause in value.clauses:
            sources = [s for s in (_replace_family(s, family, count) for s in clause.sources) if s is not None]
            if sources:
                clauses.append(clause.model_copy(update={"sources": sources}))
        return value.model_copy(update={"clauses": clauses})
    return value


def member_node(block: ir.GrowBlock, index: int, pruned: Optional[PrunedMember] = None) -> ir.MixedNode:
    """Member ``index`` (1-based) of the family as an ordinary mixed node."""
    name = f"{block.name}{index}"
    if pruned is not None:
        clauses = [
            ir.FromClause(sources=[_source_of_key(src, block.span)], ops=ir.OpRef(ops=[op], span=block.span), span=block.span)
            for src, op in pruned.edges
        ]
        kept = [a for a in block.attributes if a.name not in ("keep", "combine")]
        kept += [
            ir.Attribute(name="keep", value=len(pruned.edges), span=block.span),
            ir.Attribute(name="combine", value=pruned.combine, span=block.span),
        ]
        return ir.MixedNode(name=name, clauses=clauses, attributes=kept, name_span=block.name_span, span=block.span)
    template = ir.MixedNode(name=name, clauses=block.clauses, attributes=block.attributes, name_span=block.name_span, span=block.span)
    return _replace_family(template, block.name, index - 1)


def expand(space: ir.Space, size: Optional[int] = None, pruned: Optional[dict] = None) -> ir.Space:
    """``space`` with its grow block replaced by the members 1..``size`` (default: the
    block's ``start``) and every reader of the family reading those members; members in
    ``pruned`` (name -> :class:`PrunedMember`) are written with their choice made.
    A space without a grow block is returned as it is."""
    blocks = grow_blocks(space)
    if not blocks:
        return space
    block = blocks[0]
    if size is None:
        size = next((s.value for s in block.settings if s.name == "start" and isinstance(s.value, int)), 1)
    size = max(int(size), 1)
    pruned = pruned or {}
    statements = []
    for st in space.cell.statements:
        if st is block:
            statements.extend(member_node(block, i, pruned.get(f"{block.name}{i}")) for i in range(1, size + 1))
        elif isinstance(st, ir.GrowBlock):
            continue  # a second block is an error (reported by growth_plan)
        else:
            statements.append(_replace_family(st, block.name, size))
    return space.model_copy(update={"cell": space.cell.model_copy(update={"statements": statements})})


def expand_to_names(space: ir.Space, names) -> ir.Space:
    """``space`` expanded at the largest size whose last member is among ``names`` (e.g.
    the nodes a search made choices for), at least its start size; unchanged without a
    grow block."""
    blocks = grow_blocks(space)
    if not blocks:
        return space
    family = blocks[0].name
    sizes = [int(n[len(family):]) for n in names if re.fullmatch(rf"{re.escape(family)}[1-9][0-9]*", n)]
    return expand(space, max(sizes) if sizes else None)


def grown_space(space: ir.Space, state: GrowthState) -> ir.Space:
    return expand(space, state.size, state.pruned)


def block_text(block: ir.GrowBlock) -> list[str]:
    """The lines of a grow block's body in canonical form (``show``)."""
    from essdsl.lang.fmt import format_attribute, format_from_clause, format_setting

    return [format_from_clause(c) for c in block.clauses] + [format_attribute(a) for a in block.attributes] + [
        format_setting(s) for s in block.settings
    ]


# ------------------------------------------------------------------ check (called by check.py)
def check_grown(space: ir.Space, sizes: Optional[dict], check_plain) -> tuple:
    """Check a space with a grow block: the block's own diagnostics, the space expanded at
    the start size checked as an ordinary one (``check_plain(space, sizes)`` -> (graph,
    diagnostics)), and the first error that appears only at the maximum size (code
    ``grow-max``).  The graph returned is the one at the start size."""
    plan, diags = growth_plan(space)
    graph, at_start = check_plain(expand(space), sizes)
    block = grow_blocks(space)[0]
    if graph is not None and plan is not None:
        attach(graph, space, plan)
    at_start = unique_in(at_start, block.span)
    if plan is not None and plan.max > plan.start and not any(d.severity == "error" for d in at_start):
        _, at_max = check_plain(expand(space, plan.max), sizes)
        first = next((d for d in at_max if d.severity == "error"), None)
        if first is not None:
            where = f" ({first.line}:{first.column})" if first.line and not _inside(first, block.span) else ""
            diags.append(error(f"at the maximum size ({plan.max} nodes){where}: {first.message}", block.name_span, "grow-max"))
    return graph, diags + at_start


def _inside(d: Diagnostic, span: ir.Span) -> bool:
    return bool(span.line) and (span.line, span.column) <= (d.line, d.column) <= (span.end_line, span.end_column)


def unique_in(diags: list[Diagnostic], span: ir.Span) -> list[Diagnostic]:
    """``diags`` without repeats inside the block: the members share the block's positions,
    so one mistake in the template would otherwise be reported once per member."""
    seen, out = set(), []
    for d in diags:
        if _inside(d, span):
            key = (d.severity, d.line, d.column, d.code)
            if key in seen:
                continue
            seen.add(key)
        out.append(d)
    return out


# ------------------------------------------------------------------ what show, stats and diff read
@dataclass(frozen=True)
class Growth:
    """A checked grow block, kept on the graph (checked at the start size) that ``check``
    returns: the space as written (with the block), the block and its plan."""

    space: ir.Space
    block: ir.GrowBlock
    plan: GrowPlan


def attach(graph, space: ir.Space, plan: GrowPlan) -> None:
    """Remember on ``graph`` (built from the expanded space) the grow block it came from."""
    graph.growth = Growth(space, grow_blocks(space)[0], plan)


def growth_of(graph) -> Optional[Growth]:
    return getattr(graph, "growth", None)


def graph_at(graph, size: int, pruned: Optional[dict] = None):
    """The graph of ``graph``'s space grown to ``size`` members, at the same sizes."""
    from essdsl.lang.check import load_graph_space

    growth = growth_of(graph)
    return load_graph_space(expand(growth.space, size, pruned), {k: v for k, v in graph.sizes.items()})


def show_lines(graph) -> list[str]:
    """``essdsl show``'s lines about growth (none for a space that does not grow)."""
    growth = growth_of(graph)
    if growth is None:
        return []
    plan = growth.plan
    members = ", ".join(plan.members(plan.start)) if plan.start <= 3 else f"{plan.member(1)}..{plan.member(plan.start)}"
    lines = [
        "",
        f"grows {plan.family}: {plan.describe()}",
        f"  now {members}; each growth step adds {plan.member(plan.start + 1)}, then {plan.member(plan.start + 2)}, … up to {plan.member(plan.max)}"
        if plan.max > plan.start + 1
        else f"  now {members}; grows to {plan.member(plan.max)}" if plan.max > plan.start else f"  now {members}; at its maximum already",
        f"  each new member: mix {{ {'  '.join(block_text(growth.block)[: len(growth.block.clauses) + len(growth.block.attributes)])} }}",
    ]
    readers = sorted({k for m in plan.members(plan.start) if m in graph.dag for k in graph.dag.successors(m) if not _is_member(k, plan)})
    if readers:
        lines.append(f"  read by {', '.join(readers)} (a new member's rows there start at zero: same function when it grows)")
    if plan.mode == "interleaved":
        lines.append("  mode interleaved: when a member is added, the members before it are pruned to their choice")
    else:
        lines.append("  mode then_prune: grow to the maximum first; choices are made once, at the end")
    return lines


def dot_lines(graph, quote) -> list[str]:
    """``show --format dot``: the graph's title says what the grow block adds (the
    drawing is the cell at its start size); none for a space that does not grow."""
    growth = growth_of(graph)
    if growth is None:
        return []
    plan = growth.plan
    title = f"{graph.kind} {graph.name}\ngrows {plan.family}: {plan.describe()}"
    if plan.max > plan.start:
        title += f"\n(drawn at {plan.start}; each step adds {plan.member(plan.start + 1)} … {plan.member(plan.max)})"
    return [f"  label={quote(title)};"]


def _is_member(key: str, plan: GrowPlan) -> bool:
    return re.fullmatch(rf"{re.escape(plan.family)}[1-9][0-9]*", key) is not None


def stats_entry(graph) -> Optional[dict]:
    """``essdsl stats``' growth numbers: architectures, architecture weights and parameters
    at the start size and at the maximum (None for a space that does not grow)."""
    from essdsl.lang.stats import stats_dict

    growth = growth_of(graph)
    if growth is None:
        return None
    plan = growth.plan

    def summary(g) -> dict:
        data = stats_dict(g)
        return {
            "nodes": len(plan.members(sum(1 for k in g.computed() if _is_member(k, plan)))),
            "architectures": data["architectures"],
            "architectures_log10": data["architectures_log10"],
            "arch_weights": data["arch_weights"],
            "params_supernet": data["params"]["supernet"],
            "params_derived_min": data["params"]["derived_min"],
            "params_derived_max": data["params"]["derived_max"],
            "flops_supernet": data["flops_per_token"]["supernet"],
        }

    return {
        "family": plan.family,
        "trigger": plan.trigger,
        "period": plan.period,
        "unit": plan.unit,
        "mode": plan.mode,
        "start": summary(graph_at(graph, plan.start)),
        "max": summary(graph_at(graph, plan.max)),
    }


def diff_entries(a, b) -> list[tuple[str, str, object, object]]:
    """Growth differences of two graphs as (kind, path, old, new) tuples: a grow block
    added or removed, or its start, max, schedule or mode changed (the template's own
    changes show in the members both have)."""
    ga, gb = growth_of(a), growth_of(b)
    if ga is None and gb is None:
        return []
    if ga is None:
        return [("insert", f"grow {gb.plan.family}", None, gb.plan.describe())]
    if gb is None:
        return [("remove", f"grow {ga.plan.family}", ga.plan.describe(), None)]
    pa, pb = ga.plan, gb.plan
    path = f"grow {pb.family}" if pa.family == pb.family else "grow"
    out = []
    if pa.family != pb.family:
        out.append(("update", "grow.family", pa.family, pb.family))
    for name in ("start", "max", "mode"):
        if getattr(pa, name) != getattr(pb, name):
            out.append(("update", f"{path}.{name}", getattr(pa, name), getattr(pb, name)))
    when_a = f"{pa.trigger} {pa.period} {pa.unit}"
    when_b = f"{pb.trigger} {pb.period} {pb.unit}"
    if when_a != when_b:
        out.append(("update", f"{path}.when", when_a, when_b))
    return out
