"""The resolver: a parsed .space IR -> the cell graph, with every name, range, op set and
default resolved, and every problem found reported as a diagnostic (:func:`build_graph`)."""

from __future__ import annotations

import re
from typing import Iterable, Optional, Union

import networkx as nx

from essdsl import ops as op_registry
from essdsl.errors import Diagnostic, error
from essdsl.lang import ir
from essdsl.lang.dims import infer_dims
from essdsl.lang.exprs import (
    EApply,
    ECombine,
    EHighway,
    ELinear,
    ERef,
    RExpr,
    expr_operand_count,
    expr_refs,
    param_safe,
    stream_key,
)
from essdsl.lang.graph import (
    DEFAULT_SIZES,
    CandidateEdge,
    CellGraph,
    FixedSpec,
    MixedSpec,
    Stream,
    UpdateSpec,
    shared_norm_diagnostics,
)
from essdsl.lang.limits import MAX_CELL_EDGES, max_size, size_limit_message
from essdsl.lang.suggest import did_you_mean


# Bounds that keep a typo such as ``s1..s99999999`` or ``h[t-99999999..t-1]``
# from making the resolver build (and report on) billions of names.
MAX_RANGE = 10_000  # names or time steps one range may expand to
MAX_WINDOW = 1_000  # time steps a declared window may reach back

BUILTIN_DEFAULTS = {
    "transform": "highway",
    "combine": ("sum",),
    "select": "edge_softmax",
    "keep": 1,
    "norm": "none",
}


class _Resolver:
    def __init__(self, space: ir.Space, sizes: dict[str, int]):
        self.space = space
        self.sizes = sizes
        self.diags: list[Diagnostic] = []
        self.inputs: dict[str, ir.Window] = {}
        self.states: dict[str, ir.Window] = {}
        self.dims: dict[str, int] = {}
        self.dim_symbols: dict[str, str] = {}
        self.node_names: dict[str, ir.Span] = {}
        self.op_sets: dict[str, ir.OpSet] = {}

    def err(self, message: str, span, code: str):
        self.diags.append(error(message, span, code))

    # -- sizes
    def size_of(self, dim: ir.Dim) -> Optional[int]:
        if dim.value is not None:
            if dim.value <= 0:
                self.err("a size must be a positive integer", dim.span, "bad-dim")
                return None
            return self.within_size_limit("size", dim.value, dim)
        if dim.symbol not in self.sizes:
            known = ", ".join(sorted(k for k in self.sizes if k != "vocab"))
            self.err(f"unknown size '{dim.symbol}' (known sizes: {known})", dim.span, "bad-dim")
            return None
        return self.within_size_limit(f"size '{dim.symbol}' =", self.sizes[dim.symbol], dim)

    def within_size_limit(self, what: str, value: int, dim: ir.Dim) -> Optional[int]:
        """``value``, or None after reporting it at ``dim`` when it exceeds the size limit."""
        if value > max_size():
            self.err(size_limit_message(what, value), dim.span, "size-limit")
            return None
        return value

    # -- references
    def ref_key(self, ref: ir.Ref) -> Optional[str]:
        name = ref.name
        if name in self.inputs or name in self.states:
            stream = self.inputs.get(name) or self.states.get(name)
            is_input = name in self.inputs
            if not ref.timed:
                if is_input:
                    return self._timed_key(name, 0, stream, ref.span, is_input)
                self.err(
                    f"state '{name}' needs a time: write {name}[t-1] for its previous value or {name}[t] for its new one",
                    ref.span,
                    "needs-time",
                )
                return None
            return self._timed_key(name, ref.offset, stream, ref.span, is_input)
        if name in self.node_names:
            if ref.timed:
                self.err(
                    f"'{name}' is a node; only inputs and states have values at other times",
                    ref.span,
                    "timed-node",
                )
                return None
            return name
        self.err(f"undefined name '{name}'", ref.span, "undefined-name")
        return None

    def _timed_key(self, name, offset, window: ir.Window, span, is_input) -> Optional[str]:
        if not is_input and offset == 0:
            return stream_key(name, 0)  # the state's new value, h[t]
        if offset < window.earliest or offset > window.latest:
            self.err(
                f"{stream_key(name, offset)} is outside the declared window of '{name}' "
                f"({ir.window_text(name, window)})",
                span,
                "outside-window",
            )
            return None
        return stream_key(name, offset)

    def expand(self, item: Union[ir.Ref, ir.Range]) -> list[str]:
        if isinstance(item, ir.Ref):
            key = self.ref_key(item)
            return [key] if key else []
        if item.timed:
            lo, hi = sorted((item.first_offset, item.last_offset))
            step = -1 if item.first_offset > item.last_offset else 1
            if hi - lo + 1 > MAX_RANGE:
                self.err(f"range '{item.first}[..]' spans {hi - lo + 1} time steps; at most {MAX_RANGE}", item.span, "bad-range")
                return []
            offsets = list(range(item.first_offset, item.last_offset + step, step))
            keys = []
            for off in offsets:
                key = self.ref_key(ir.Ref(name=item.first, offset=off, timed=True, span=item.span))
                if key:
                    keys.append(key)
            return keys
        m1 = re.fullmatch(r"(.*?)(\d+)", item.first)
        m2 = re.fullmatch(r"(.*?)(\d+)", item.last)
        if not m1 or not m2 or m1.group(1) != m2.group(1):
            self.err(
                f"a range '{item.first}..{item.last}' needs two names that differ only in a trailing number",
                item.span,
                "bad-range",
            )
            return []
        a, b = int(m1.group(2)), int(m2.group(2))
        if a > b:
            self.err(f"empty range '{item.first}..{item.last}': the first number is larger", item.span, "bad-range")
            return []
        if b - a + 1 > MAX_RANGE:
            self.err(f"range '{item.first}..{item.last}' spans {b - a + 1} names; at most {MAX_RANGE}", item.span, "bad-range")
            return []
        keys = []
        for i in range(a, b + 1):
            key = self.ref_key(ir.Ref(name=f"{m1.group(1)}{i}", span=item.span))
            if key:
                keys.append(key)
        return keys

    # -- ops
    def op_list(self, op_ref: ir.OpRef) -> list[str]:
        if op_ref.set_name is not None:
            op_set = self.op_sets.get(op_ref.set_name)
            if op_set is None:
                if op_registry.is_op(op_ref.set_name):
                    self.err(
                        f"'{op_ref.set_name}' is an op, not an op set: write {{{op_ref.set_name}}}",
                        op_ref.span,
                        "undefined-op-set",
                    )
                else:
                    self.err(f"undefined op set '{op_ref.set_name}'", op_ref.span, "undefined-op-set")
                return []
            return list(op_set.ops)
        self.check_ops(op_ref.ops, op_ref.op_spans or [op_ref.span] * len(op_ref.ops))
        return list(op_ref.ops)

    def check_ops(self, ops: list[str], spans: list[ir.Span]) -> None:
        seen = set()
        for op, span in zip(ops, spans):
            if op not in op_registry.candidate_ops():
                known = ", ".join(op_registry.candidate_ops())
                self.err(f"unknown op '{op}' (known ops: {known}){did_you_mean(op, op_registry.candidate_ops())}", span, "unknown-op")
            if op in seen:
                self.err(f"op '{op}' listed twice", span, "duplicate-op")
            seen.add(op)

    # -- expressions
    def expr(self, e, owner: str, counter: list[int]) -> Optional[RExpr]:
        if isinstance(e, ir.Ref):
            key = self.ref_key(e)
            return ERef(key) if key else None
        if isinstance(e, ir.Range):
            self.err("a range stands only inside mean(...), linear(...), project(...) or highway(...)", e.span, "bad-range")
            return None
        if isinstance(e, ir.BinaryOp):
            left = self.expr(e.left, owner, counter)
            right = self.expr(e.right, owner, counter)
            if left is None or right is None:
                return None
            if e.operator == "*":
                terms = _flatten(left, "product") + _flatten(right, "product")
                return ECombine("product", tuple(terms))
            lt, ls = _flatten_sum(left)
            rt, rs = _flatten_sum(right)
            sign = 1 if e.operator == "+" else -1
            return ECombine("sum", tuple(lt + rt), tuple(ls + [s * sign for s in rs]))
        if isinstance(e, ir.Call):
            return self.call(e, owner, counter)
        raise AssertionError(e)  # pragma: no cover

    def call(self, c: ir.Call, owner: str, counter: list[int]) -> Optional[RExpr]:
        fn = c.function

        def args_expanded(args):
            out = []
            for a in args:
                if isinstance(a, ir.Range):
                    out.extend(ERef(k) for k in self.expand(a))
                else:
                    r = self.expr(a, owner, counter)
                    if r is not None:
                        out.append(r)
            return out

        allowed_keywords = {"highway": {"carry"}, "linear": {"dim"}, "project": {"dim"}}.get(fn, set())
        for key, value in c.keywords.items():
            if key not in allowed_keywords:
                what = f"'{fn}' takes no keyword '{key}'"
                if allowed_keywords:
                    what += f" (it takes: {', '.join(sorted(allowed_keywords))})"
                self.err(what, value.span, "bad-argument")
        if op_registry.is_op(fn):
            if op_registry.is_zero(fn):
                self.err(f"'{fn}' is only meaningful as a candidate op of a mixed node", c.function_span, "bad-argument")
            if len(c.args) != 1 or isinstance(c.args[0], ir.Range):
                self.err(f"'{fn}' takes exactly one argument", c.span, "bad-argument")
                return None
            arg = self.expr(c.args[0], owner, counter)
            return EApply(fn, arg) if arg is not None else None
        reported = len(self.diags)  # an argument already in error is why a list may be empty
        if fn == "mean":
            terms = args_expanded(c.args)
            if not terms:
                if len(self.diags) == reported:
                    self.err("mean(...) needs at least one argument", c.span, "bad-argument")
                return None
            return ECombine("mean", tuple(terms))
        if fn in ("linear", "project"):
            inputs = args_expanded(c.args)
            if not inputs:
                if len(self.diags) == reported:
                    self.err(f"{fn}(...) needs at least one input", c.span, "bad-argument")
                return None
            dim_symbol = None
            if "dim" in c.keywords:
                d = c.keywords["dim"]
                if not isinstance(d, ir.Ref) or d.timed or d.name not in self.sizes:
                    self.err(f"dim= takes a size name ({', '.join(k for k in self.sizes if k != 'vocab')})", d.span, "bad-dim")
                else:
                    dim_symbol = d.name
            counter[0] += 1
            return ELinear(tuple(inputs), fn == "linear", dim_symbol, f"{param_safe(owner)}_w{counter[0] - 1}")
        if fn == "highway":
            if len(c.args) < 2 or not isinstance(c.args[0], ir.Ref) or c.args[0].timed:
                self.err("highway(OP, INPUT…, carry = STATE) needs an op name and at least one input", c.span, "bad-argument")
                return None
            op = c.args[0].name
            if op not in op_registry.applicable_ops():
                self.err(f"unknown op '{op}' for highway{did_you_mean(op, op_registry.applicable_ops())}", c.args[0].span, "unknown-op")
                return None
            inputs = args_expanded(c.args[1:])
            if "carry" in c.keywords:
                carry = self.expr(c.keywords["carry"], owner, counter)
            elif len(inputs) == 1:
                carry = inputs[0]
            else:
                self.err("highway with several inputs needs 'carry = STATE' (what the gate interpolates from)", c.span, "bad-argument")
                return None
            if carry is None or not inputs:
                return None
            counter[0] += 1
            return EHighway(op, tuple(inputs), carry, f"{param_safe(owner)}_w{counter[0] - 1}")
        functions = list(ir.FUNCTIONS) + list(op_registry.applicable_ops())
        self.err(f"unknown function '{fn}' (known: {', '.join(functions)}){did_you_mean(fn, functions)}", c.function_span, "unknown-op")
        return None

    # -- mixed nodes
    def mixed(self, node: ir.MixedNode, defaults: dict) -> Optional[MixedSpec]:
        attrs = dict(defaults)
        attr_spans = {}
        for a in node.attributes:
            if a.name in attr_spans:
                self.err(f"attribute '{a.name}' given twice", a.span, "duplicate-attribute")
            attr_spans[a.name] = a.span
            value = self.attribute(a)
            if value is not None:
                attrs[a.name] = value
                if a.name == "norm":
                    attrs["norm_shared"] = a.shared
        edges: list[CandidateEdge] = []
        seen: dict[tuple, ir.Span] = {}
        for clause in node.clauses:
            ops = self.op_list(clause.ops)
            for src in clause.sources:
                for sources in self.sources(src):
                    key = tuple(sources)
                    if key in seen:
                        self.err(
                            f"candidate source '{'*'.join(key)}' of '{node.name}' is listed twice",
                            src.span,
                            "duplicate-candidate",
                        )
                        continue
                    seen[key] = src.span
                    edges.append(CandidateEdge(key, tuple(ops), src.span.line, src.span.column))
        dim_symbol, dim_value = None, None
        if "dim" in attrs:
            d = attrs["dim"]
            if isinstance(d, int):
                dim_value = d
            else:
                dim_symbol = d
        return MixedSpec(
            name=node.name,
            edges=tuple(edges),
            transform=attrs["transform"],
            combine=tuple(attrs["combine"]),
            select=attrs["select"],
            keep=attrs["keep"],
            norm=attrs["norm"],
            dim_symbol=dim_symbol,
            dim_value=dim_value,
            norm_shared=attrs.get("norm_shared", False),
        )

    def sources(self, src) -> list[list[str]]:
        if isinstance(src, (ir.Ref, ir.Range)):
            return [[k] for k in self.expand(src)]
        if isinstance(src, ir.Pair):
            a, b = self.ref_key(src.left), self.ref_key(src.right)
            if not a or not b:
                return []
            if a == b:
                self.err("a Hadamard pair needs two different states", src.span, "bad-pair")
                return []
            return [[a, b]]
        if isinstance(src, ir.Pairs):
            keys: list[str] = []
            for item in src.items:
                if isinstance(item, (ir.Ref, ir.Range)):
                    keys.extend(self.expand(item))
                else:
                    self.err("pairs(...) takes states and ranges", item.span, "bad-pair")
            keys = list(dict.fromkeys(keys))
            if len(keys) < 2:
                self.err("pairs(...) needs at least two states to form a Hadamard product", src.span, "bad-pair")
                return []
            if len(keys) * (len(keys) - 1) // 2 > MAX_CELL_EDGES:
                self.err(cell_edges_message(len(keys) * (len(keys) - 1) // 2, f"pairs(...) of {len(keys)} names makes"), src.span, "limit")
                return []
            return [[keys[i], keys[j]] for i in range(len(keys)) for j in range(i + 1, len(keys))]
        raise AssertionError(src)  # pragma: no cover

    def attribute(self, a: ir.Attribute):
        allowed = {
            "transform": ir.TRANSFORMS,
            "select": ir.SELECTIONS,
            "norm": ir.NORMS,
        }
        if a.name in allowed:
            if a.value not in allowed[a.name]:
                self.err(
                    f"unknown {a.name} '{a.value}' (one of: {', '.join(allowed[a.name])})", a.value_span, f"bad-{a.name}"
                )
                return None
            if a.shared and a.value == "none":
                self.err("'norm none shared': only a normalisation (batchnorm) can be shared", a.span, "bad-norm")
                return None
            return a.value
        if a.name == "combine":
            values = [a.value] if isinstance(a.value, str) else list(a.value)
            bad = [v for v in values if v not in ir.COMBINERS]
            if bad:
                self.err(f"unknown combiner '{bad[0]}' (one of: {', '.join(ir.COMBINERS)})", a.value_span, "bad-combine")
                return None
            if len(set(values)) != len(values):
                self.err("a combiner is listed twice", a.value_span, "bad-combine")
                return None
            return tuple(values)
        if a.name == "keep":
            if a.value < 1:
                self.err("keep must be at least 1", a.value_span, "bad-keep")
                return None
            return a.value
        if a.name == "dim":
            if isinstance(a.value, int):
                return a.value
            if a.value not in self.sizes:
                self.err(f"unknown size '{a.value}'", a.value_span, "bad-dim")
                return None
            return a.value
        raise AssertionError(a)  # pragma: no cover


def _flatten(e: RExpr, combiner: str) -> list[RExpr]:
    if isinstance(e, ECombine) and e.combiner == combiner and combiner != "sum":
        return list(e.terms)
    return [e]


def _flatten_sum(e: RExpr) -> tuple[list[RExpr], list[int]]:
    if isinstance(e, ECombine) and e.combiner == "sum":
        return list(e.terms), list(e.signs)
    return [e], [1]


def cell_edges_message(edges: int, what: str) -> str:
    return f"{what} {edges} candidate sources and operands (ranges expanded); a cell has at most {MAX_CELL_EDGES}"


def build_graph(space: ir.Space, sizes: Optional[dict] = None) -> tuple[Optional[CellGraph], list[Diagnostic]]:
    """Resolve names and defaults and build the DAG.  Returns (graph or None, diagnostics).

    The graph is returned even when some diagnostics are errors, as long as the
    cell exists, so that the checker can report further problems; callers that
    compile must check ``has_errors`` first.
    """
    sizes = {**DEFAULT_SIZES, **(sizes or {})}
    r = _Resolver(space, sizes)
    for op_set in space.op_sets:
        if op_set.name in r.op_sets:
            r.err(f"op set '{op_set.name}' is defined twice", op_set.span, "duplicate-name")
        r.check_ops(op_set.ops, op_set.op_spans or [op_set.span] * len(op_set.ops))
        r.op_sets[op_set.name] = op_set
    defaults = dict(BUILTIN_DEFAULTS)
    seen_defaults = set()
    for a in space.defaults:
        if a.name in seen_defaults:
            r.err(f"default '{a.name}' given twice", a.span, "duplicate-attribute")
        seen_defaults.add(a.name)
        value = r.attribute(a)
        if value is not None:
            defaults[a.name] = value
            if a.name == "norm":
                defaults["norm_shared"] = a.shared
    if space.cell is None:
        r.err("the file has no cell { ... }", space.name_span, "no-cell")
        return None, r.diags

    statements = space.cell.statements
    # Pass 1: declarations, so references may point forward.
    outputs = []
    for st in statements:
        if isinstance(st, (ir.InputDecl, ir.StateDecl)):
            table = r.inputs if isinstance(st, ir.InputDecl) else r.states
            if st.name in r.inputs or st.name in r.states or st.name in r.node_names:
                r.err(f"'{st.name}' is declared twice", st.span, "duplicate-name")
                continue
            if isinstance(st, ir.InputDecl):
                window = st.window or ir.Window(earliest=0, latest=0)
                if window.latest != 0:
                    r.err(f"an input window must end at [t], e.g. {st.name}[t-1..t]", st.window.span, "bad-window")
                    window = ir.Window(earliest=min(window.earliest, 0), latest=0)
            else:
                window = st.window or ir.Window(earliest=-1, latest=-1)
                if window.latest != -1:
                    r.err(
                        f"a state window must end at [t-1] (its past values), e.g. {st.name}[t-2..t-1]",
                        st.window.span,
                        "bad-window",
                    )
                    window = ir.Window(earliest=min(window.earliest, -1), latest=-1)
            if window.earliest < -MAX_WINDOW:
                r.err(f"a window may reach back at most {MAX_WINDOW} steps (t-{MAX_WINDOW})", st.window.span, "bad-window")
                window = ir.Window(earliest=-MAX_WINDOW, latest=window.latest)
            table[st.name] = window
            size = r.size_of(st.dim)
            r.dims[st.name] = size if size is not None else 1
            r.dim_symbols[st.name] = st.dim.symbol or str(st.dim.value)
        elif isinstance(st, (ir.FixedNode, ir.MixedNode)):
            if st.name in r.node_names or st.name in r.inputs or st.name in r.states:
                r.err(f"'{st.name}' is defined twice", st.name_span, "duplicate-name")
                continue
            if op_registry.is_op(st.name) or st.name in ir.FUNCTIONS:
                r.err(f"'{st.name}' is an op or function name and cannot name a node", st.name_span, "reserved-name")
            r.node_names[st.name] = st.name_span
        elif isinstance(st, ir.OutputDecl):
            outputs.append(st)
    if not r.states:
        r.err("the cell declares no state (e.g. 'state h[t-1] : nhid'); it has nothing to carry or output", space.cell.span, "no-state")

    dag = nx.DiGraph()
    for name, window in r.inputs.items():
        for off in range(window.earliest, window.latest + 1):
            dag.add_node(stream_key(name, off), spec=Stream("input", name, off), dim=r.dims[name])
    for name, window in r.states.items():
        for off in range(window.earliest, window.latest + 1):
            dag.add_node(stream_key(name, off), spec=Stream("past", name, off), dim=r.dims[name])

    spans: dict[str, ir.Span] = {}
    updated: dict[str, ir.Span] = {}
    edges = 0  # graph edges so far, against MAX_CELL_EDGES: past it, stop before the work grows further
    for st in statements:
        if edges > MAX_CELL_EDGES:
            r.err(cell_edges_message(edges, "the cell up to here has"), previous.span, "limit")
            return None, r.diags
        previous = st
        if isinstance(st, ir.FixedNode) and st.name in r.node_names and r.node_names[st.name] is st.name_span:
            expr = r.expr(st.expr, st.name, [0])
            edges += expr_operand_count(expr)
            norm = r.attribute(st.norm) if st.norm is not None else None
            if expr is not None:
                fixed = FixedSpec(st.name, expr, norm or "none", bool(norm) and st.norm.shared)
                _add_computed(dag, st.name, fixed, expr_refs(expr))
                spans[st.name] = st.name_span
        elif isinstance(st, ir.MixedNode) and st.name in r.node_names and r.node_names[st.name] is st.name_span:
            spec = r.mixed(st, defaults)
            edges += len(spec.edges) if spec is not None else 0
            if spec is not None:
                preds = list(dict.fromkeys(k for e in spec.edges for k in e.sources))
                _add_computed(dag, st.name, spec, preds)
                spans[st.name] = st.name_span
        elif isinstance(st, ir.StateUpdate):
            if st.name not in r.states:
                what = "an input" if st.name in r.inputs else "not a declared state"
                r.err(f"'{st.name}[t] = ...' updates '{st.name}', which is {what}", st.name_span, "undefined-name")
                continue
            if st.name in updated:
                r.err(f"state '{st.name}' is updated twice", st.name_span, "duplicate-name")
                continue
            updated[st.name] = st.name_span
            key = stream_key(st.name, 0)
            expr = r.expr(st.expr, key, [0])
            edges += expr_operand_count(expr)
            if expr is not None:
                _add_computed(dag, key, UpdateSpec(st.name, expr), expr_refs(expr))
                spans[key] = st.name_span
    if edges > MAX_CELL_EDGES:
        r.err(cell_edges_message(edges, "the cell up to here has"), previous.span, "limit")
        return None, r.diags
    for name in r.states:
        if name not in updated:
            r.err(f"state '{name}' is never updated: add '{name}[t] = ...'", space.cell.span, "state-not-updated")

    output = next(iter(r.states), "")
    if len(outputs) > 1:
        r.err("'output' is given twice", outputs[1].span, "duplicate-name")
    if outputs:
        if outputs[0].name not in r.states:
            r.err(f"output '{outputs[0].name}' is not a declared state", outputs[0].span, "undefined-name")
        else:
            output = outputs[0].name

    nx.set_node_attributes(dag, spans, "span")
    for key in [k for k, d in dag.nodes(data=True) if d["spec"] is None]:
        dag.remove_node(key)  # referenced new value of a state never updated (reported above)
    graph = CellGraph(
        name=space.name,
        kind=space.kind,
        dag=dag,
        inputs=r.inputs,
        states=r.states,
        dims=r.dims,
        dim_symbols=r.dim_symbols,
        output=output,
        sizes=sizes,
        space=space,
    )
    if nx.is_directed_acyclic_graph(dag):
        r.diags.extend(infer_dims(graph))
        r.diags.extend(shared_norm_diagnostics(graph))
    return graph, r.diags


def _add_computed(dag: nx.DiGraph, key: str, spec, preds: Iterable[str]) -> None:
    dag.add_node(key, spec=spec, dim=None)
    for p in preds:
        if p not in dag:
            # A reference to a state's new value, e.g. c[t], before its update
            # is added; the node gets its spec when the update is processed.
            dag.add_node(p, spec=None, dim=None)
        dag.add_edge(p, key)
