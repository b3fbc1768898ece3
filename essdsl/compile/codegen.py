"""Generate the Python source of a compiled model, and load it.

The generated module is straight-line code per time step, grouped by node, in
the graph's topological order.  Per mixed node it does ONE GEMM over the
stacked candidate sources (highway: the shared matrix; project: one ``bmm``
over the stacked per-edge matrices when their sizes match), folds the op
mixture algebraically (semantics.md):

    sum_k theta_k v_k = w u + sigma(c) * (sum_k theta_k f_k(g) - w u),   w = sum_{k != zero} theta_k

computes every softmax once per forward call (not per step), and never
computes the ``zero`` op.  The module is TorchScript-compatible and needs only
torch, so ``torch.jit.script`` + ``torch.jit.save`` give a portable artifact.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib.util
import keyword
import linecache
import re
import sys
import types
from typing import Optional

from essdsl import __version__, ops
from essdsl.lang.layout import bias_name, parameter_layout
from essdsl.lang.exprs import EApply, ECombine, EHighway, ELinear, ERef, RExpr, param_safe
from essdsl.lang.graph import CellGraph, FixedSpec, MixedSpec, Stream, UpdateSpec
from essdsl.compile.config import (
    ARCH_INIT_SCALE,
    CELL_INIT_RANGE,
    EMBEDDING_INIT_RANGE,
    SHARED_NORM,
    ModelConfig,
    decoder_tied,
    embedding_dim,
    expr_operand_key,
    hidden_layout,
    CELL_DROPOUTS,
    CompileError,
    mask_keys,
    mask_size,
    norm_target,
    op_mask,
    operand_mask_key,
    own_norms,
    shared_norm_size,
    uses_norm,
)

_RESERVED = {
    "self", "torch", "F", "nn", "Tensor", "List", "Tuple", "math", "range", "float", "int", "len",
    "tokens", "hidden", "T", "B", "t", "weight", "embedded", "outputs", "output", "logits", "new_hidden",
}  # fmt: skip
# Also never a local: the step method's parameters, the module's own classes, and every
# builtin (the generated code calls range, float, list, super; a node named 'list' must
# not shadow them, and TorchScript resolves builtins by name).
_RESERVED |= {"xs", "past", "masks", "arch", "Config", "ParameterBag"} | set(dir(builtins))

# Generated expressions stay shallow: Python refuses more than 200 nested parentheses,
# and TorchScript converts an expression recursively (a 500-term sum overflowed its
# stack).  Longer chains and deeper nests are split into temporaries.
MAX_CHAIN = 16  # operands of one generated + or * chain
MAX_INLINE_DEPTH = 8  # parentheses of one generated expression

def _act(op: str, arg: str) -> str:
    """Op ``op`` applied to ``arg`` in generated code (the template of :mod:`essdsl.ops`)."""
    return ops.render(op, arg)


def _apply_code(op: str, arg: str) -> str:
    """``_act`` for an expression operand: an op whose template wraps its operand in
    parentheses (``torch.tanh({})``) or is the operand itself takes it without its outer
    parentheses; any other template (``(-{})``: -(a + b), not -a + b) keeps them."""
    template = ops.get(op).code
    return _act(op, _strip(arg) if template == "{}" or "({})" in template else _atom(arg))


def class_name(graph: CellGraph) -> str:
    parts = [p for p in re.split(r"[^0-9A-Za-z]+", graph.name) if p]
    name = "".join(p[:1].upper() + p[1:] for p in parts) or "Space"
    if name[0].isdigit():
        name = "Space" + name
    return name + "Model"


def cell_class_name(graph: CellGraph) -> str:
    """The class of the cell alone (``--target cell``): ``<Space>Cell``."""
    return class_name(graph)[: -len("Model")] + "Cell"


TARGETS = ("lm", "cell")


class _Names:
    """Hands out unique Python identifiers, preferring readable ones."""

    def __init__(self):
        self.used = set(_RESERVED) | set(keyword.kwlist)

    def get(self, preferred: str) -> str:
        base = re.sub(r"\W", "_", preferred)
        if not base or base[0].isdigit():
            base = "v_" + base
        name, i = base, 1
        while name in self.used:
            i += 1
            name = f"{base}_{i}"
        self.used.add(name)
        return name


class _Writer:
    def __init__(self):
        self.lines: list[str] = []
        self.depth = 0

    def __call__(self, line: str = "") -> None:
        self.lines.append(("    " * self.depth + line) if line else "")

    def indent(self, n: int = 1):
        self.depth += n

    def dedent(self, n: int = 1):
        self.depth -= n


class _Generator:
    """Writes the module of one target: ``lm`` (embedding, cell, decoder) or ``cell`` (the
    cell alone).  Both share every piece that concerns the cell (its parameters, masks,
    per-forward architecture weights, the time loop and the step method); only the
    head around the loop differs."""

    def __init__(self, graph: CellGraph, config: ModelConfig, target: str = "lm"):
        if target not in TARGETS:
            raise CompileError(f"unknown compile target {target!r} (known: {', '.join(TARGETS)})")
        self.g = graph
        self.cfg = config
        self.target = target
        self.names = _Names()
        if target == "cell":
            self.names.used |= {"x", "device_anchor"}  # the cell's forward argument and its device buffer
        self.value: dict[str, str] = {}  # graph key -> local variable
        for key in graph.order():
            self.value[key] = self.names.get(param_safe(key))
        self.ninp = embedding_dim(graph)
        self.slots = hidden_layout(graph)
        self.mixed = graph.mixed_nodes()
        self.choice = {s.name: s.has_op_choice for s in self.mixed}
        # per-forward quantities of mixed nodes: name -> local variable
        self.theta: dict[tuple[str, str], str] = {}
        self.wsum: dict[str, str] = {}
        self.denom: dict[str, str] = {}
        self.phi: dict[tuple[str, str], str] = {}
        self.wstack: dict[str, str] = {}
        # variational masks of values entering matrix products: key -> index in the step's ``masks``
        self.mask_index = {key: i for i, key in enumerate(mask_keys(graph))}

    # ---------------------------------------------------------------- helpers
    def cell(self, name: str) -> str:
        return _member("self.cell", name)

    def param_ok(self) -> None:
        for p in parameter_layout(self.g):
            if not p.name.isidentifier() or keyword.iskeyword(p.name):
                raise CompileError(f"parameter name {p.name!r} is not a Python identifier")

    def project_same_size(self, spec: MixedSpec) -> bool:
        return len({self.g.dim(e.sources[0]) for e in spec.edges}) == 1

    # ---------------------------------------------------------------- source
    def source(self) -> str:
        self.param_ok()
        g, cfg = self.g, self.cfg
        lm = self.target == "lm"
        w = _Writer()
        cls = class_name(g) if lm else cell_class_name(g)
        tied = lm and decoder_tied(g)
        layout = parameter_layout(g)
        out_dim = g.dims[g.output]
        w('"""')
        what = "supernet" if cfg.search and g.kind == "space" else "discrete model"
        if lm:
            w(f"{cls}: the {what} of '{g.name}' ({g.kind}), generated by essdsl {__version__}.")
            w("")
            w("Do not edit: regenerate with `essdsl compile FILE --emit-python`.  Needs only torch.")
        else:
            w(f"{cls}: the cell alone of the {what} of '{g.name}' ({g.kind}), generated by essdsl {__version__}.")
            w("")
            w("Do not edit: regenerate with `essdsl compile FILE --target cell --emit-python`.  Needs only torch.")
            w(f"Contract: out, hidden = cell(x, hidden) with x (T, B, {self.ninp}), out (T, B, {out_dim}),")
            w("hidden = cell.init_hidden(B) (a list of (depth, B, size) tensors, the carried past values).")
        w("One time step of the cell, in topological order:")
        for key in g.computed():
            w(f"  {key:<8} {_describe(g, key, cfg)}")
        w('"""')
        w()
        w("from typing import Dict, List, Tuple")
        w()
        w("import torch")
        w("import torch.nn.functional as F")
        w("from torch import Tensor, nn")
        w()
        w()
        w("class Config:")
        w('    """The settings this module was generated with."""')
        w()
        w(f"    space = {g.name!r}")
        w(f"    search = {bool(cfg.search)!r}")
        if lm:
            w(f"    vocab = {cfg.vocab}")
        for k, v in sorted(g.sizes.items()):
            if k != "vocab":
                w(f"    {k} = {v}")
        for k in ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute") if lm else CELL_DROPOUTS:
            w(f"    {k} = {float(getattr(cfg, k))!r}")
        w()
        w()
        w("class ParameterBag(nn.Module):")
        w('    """Holds tensors so that their names read <bag>.<name> (cell.s0_w0, arch.s1_ops, norms.s1)."""')
        w()
        w()
        w(f"class {cls}(nn.Module):")
        w.indent()
        w("mask_override: Dict[str, Tensor]  # dropout masks to use instead of drawing them (see _mask)")
        w()
        if lm:
            w("def __init__(self, vocab: int = Config.vocab, dropout: float = Config.dropout, dropouth: float = Config.dropouth,")
            w("             dropoutx: float = Config.dropoutx, dropouti: float = Config.dropouti, dropoute: float = Config.dropoute):")
            w.indent()
            w("super().__init__()")
            w("self.dropout, self.dropouth, self.dropoutx = dropout, dropouth, dropoutx")
            w("self.dropouti, self.dropoute = dropouti, dropoute")
            w(f"self.encoder = nn.Embedding(vocab, {self.ninp})")
            if tied:
                w("# decoder tied to the embedding (output size == ninp): only a bias")
            else:
                w(f"self.decoder_weight = nn.Parameter(torch.empty(vocab, {out_dim}))")
            w("self.decoder_bias = nn.Parameter(torch.zeros(vocab))")
        else:
            w("def __init__(self, dropouth: float = Config.dropouth, dropoutx: float = Config.dropoutx):")
            w.indent()
            w("super().__init__()")
            w("self.dropouth, self.dropoutx = dropouth, dropoutx")
            w("# no parameter of its own: the device and dtype of init_hidden (not in the state dict)")
            w('self.register_buffer("device_anchor", torch.zeros(0), persistent=False)')
        self.cell_members(w, layout)
        w("self.mask_override = {}")
        w("self.reset_parameters()")
        w.dedent()
        w()
        # reset_parameters (same order as the reference)
        w("@torch.jit.ignore")
        w("def reset_parameters(self) -> None:")
        w.indent()
        w("with torch.no_grad():")
        w.indent()
        if lm:
            w(f"self.encoder.weight.uniform_(-{EMBEDDING_INIT_RANGE}, {EMBEDDING_INIT_RANGE})")
            if not tied:
                w(f"self.decoder_weight.uniform_(-{EMBEDDING_INIT_RANGE}, {EMBEDDING_INIT_RANGE})")
            w("self.decoder_bias.zero_()")
        for p in layout:
            if p.role == "arch":
                w(f"{_member('self.arch', p.name)}.normal_(0.0, 1.0).mul_({ARCH_INIT_SCALE})")
            elif p.role == "bias":
                w(f"{_member('self.cell', p.name)}.zero_()")
            else:
                w(f"{_member('self.cell', p.name)}.uniform_(-{CELL_INIT_RANGE}, {CELL_INIT_RANGE})")
        if not layout and not lm:
            w("pass")
        w.dedent(2)
        w()
        w("@torch.jit.ignore")
        w("def arch_parameters(self) -> List[nn.Parameter]:")
        w("    return list(self.arch.parameters())")
        w()
        w("@torch.jit.ignore")
        w("def weight_parameters(self) -> List[nn.Parameter]:")
        w('    return [p for name, p in self.named_parameters() if not name.startswith("arch.")]')
        w()
        w("@torch.jit.export")
        w("def init_hidden(self, batch_size: int) -> List[Tensor]:")
        w.indent()
        doc = ", ".join(f"{s.stream}[t-1..t-{s.depth}]" if s.depth > 1 else f"{s.stream}[t-1]" for s in self.slots)
        w(f'"""Zeros for the past values carried between segments: {doc} (newest first)."""')
        w("weight = self.encoder.weight" if lm else "weight = self.device_anchor")
        items = ", ".join(f"weight.new_zeros([{s.depth}, batch_size, {s.dim}])" for s in self.slots)
        w(f"return [{items}]")
        w.dedent()
        w()
        w("def _mask(self, key: str, shape: List[int], p: float, like: Tensor) -> Tensor:")
        w('    """A dropout mask: Bernoulli(1 - p) scaled by 1 / (1 - p), or mask_override[key] when set."""')
        w("    if key in self.mask_override:")
        w("        return self.mask_override[key]")
        w("    return like.new_empty(shape).bernoulli_(1.0 - p) / (1.0 - p)")
        w()
        self.forward(w, tied, out_dim)
        w()
        w.lines.extend(self.step_lines)
        w.dedent()
        return "\n".join(w.lines) + "\n"

    def cell_members(self, w: _Writer, layout) -> None:
        """The cell's parameters and normalisations: ``cell.*``, ``arch.*``, ``norms.*`` (+ the shared norm)."""
        g, cfg = self.g, self.cfg
        w("self.cell = ParameterBag()")
        for p in layout:
            if p.role != "arch":
                w(_assign_member("self.cell", p.name, f"nn.Parameter(torch.empty({', '.join(map(str, p.shape))}))") + f"  # {p.role} of {p.node}")
        w("self.arch = ParameterBag()")
        for p in layout:
            if p.role == "arch":
                w(_assign_member("self.arch", p.name, f"nn.Parameter(torch.empty({', '.join(map(str, p.shape))}))"))
        w("self.norms = ParameterBag()")
        for key, size in own_norms(g, cfg).items():
            w(f"self.norms.{key} = nn.BatchNorm1d({size}, affine=False)")
        shared = shared_norm_size(g, cfg)
        if shared is not None:
            w(f"self.{SHARED_NORM} = nn.BatchNorm1d({shared}, affine=False)  # one normalisation shared by several nodes")

    # ---------------------------------------------------------------- forward
    def forward(self, w: _Writer, tied: bool, out_dim: int) -> None:
        """The head's forward around :meth:`cell_loop`: embedding and decoder (lm), nothing (cell)."""
        if self.target == "cell":
            w("def forward(self, x: Tensor, hidden: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:")
            w.indent()
            w(f'"""x (T, B, {self.ninp}) -> out (T, B, {out_dim}) and the new hidden list (the caller detaches it)."""')
            w("T = x.size(0)")
            w("B = x.size(1)")
            new_hidden = self.cell_loop(w, "x", "x.device")
            w(f"return output, [{', '.join(new_hidden)}]")
            w.dedent()
            return
        w("def forward(self, tokens: Tensor, hidden: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:")
        w.indent()
        w('"""tokens (T, B) -> logits (T, B, vocab) and the new hidden list (the caller detaches it)."""')
        w("T = tokens.size(0)")
        w("B = tokens.size(1)")
        w("weight = self.encoder.weight")
        w("if self.training and self.dropoute > 0:  # drop whole embedding rows")
        w('    weight = weight * self._mask("dropoute", [weight.size(0), 1], self.dropoute, weight)')
        w("embedded = F.embedding(tokens, weight)")
        w("if self.training and self.dropouti > 0:  # locked dropout on the embedded inputs")
        w(f'    embedded = embedded * self._mask("dropouti", [1, B, {self.ninp}], self.dropouti, embedded)')
        new_hidden = self.cell_loop(w, "embedded", "weight.device")
        w("if self.training and self.dropout > 0:  # locked dropout on the outputs")
        w(f'    output = output * self._mask("dropout", [1, B, {out_dim}], self.dropout, output)')
        if tied:
            w("logits = F.linear(output, self.encoder.weight, self.decoder_bias)  # tied decoder")
        else:
            w("logits = F.linear(output, self.decoder_weight, self.decoder_bias)")
        w(f"return logits, [{', '.join(new_hidden)}]")
        w.dedent()

    def cell_loop(self, w: _Writer, x: str, device: str) -> list[str]:
        """The cell over a segment: input ``x`` (T, B, ninp) and ``hidden`` -> ``output``
        (T, B, d_out); returns the expressions of the new hidden list.  ``device`` names the
        device of the architecture tensors' masks."""
        g, names = self.g, self.names
        self.device = device
        slot_index = {(s.kind, s.stream): i for i, s in enumerate(self.slots)}
        seq, inp, depth_of = {}, {}, {}
        w()
        w("# input streams: the carried past inputs (oldest first), then this segment")
        for name, window in g.inputs.items():
            seq[name] = names.get(f"{name}_seq")
            inp[name] = names.get(f"{name}_in")
            depth_of[name] = -window.earliest
            if ("input", name) in slot_index:
                w(f"{seq[name]} = torch.cat([hidden[{slot_index[('input', name)]}].flip(0), {x}], 0)")
            else:
                w(f"{seq[name]} = {x}")
            w(f"{inp[name]} = {seq[name]}")
        state_mask, carried = {}, {}
        w("# one variational mask per segment for the values entering matrix products (dropoutx: inputs, dropouth: the rest)")
        for key in self.mask_index:
            state_mask[key] = names.get(key.replace(".", "_") + "_mask")
            rate = "self.dropoutx" if key.startswith("dropoutx.") else "self.dropouth"
            w(f"{state_mask[key]} = {x}.new_ones([B, {mask_size(g, key)}])")
            w(f"if self.training and {rate} > 0:")
            w(f'    {state_mask[key]} = self._mask("{key}", [B, {mask_size(g, key)}], {rate}, {x})')
        for name, window in g.states.items():
            i = slot_index[("state", name)]
            carried[name] = [names.get(f"{name}_past{j + 1}") for j in range(-window.earliest)]
            for j, var in enumerate(carried[name]):
                w(f"{var} = hidden[{i}][{j}]")
        self.per_forward(w)
        w()
        arch_vars = self.per_forward_vars()
        w(f"arch: List[Tensor] = [{', '.join(arch_vars)}]")
        w(f"masks: List[Tensor] = [{', '.join(state_mask.values())}]")
        w("outputs: List[Tensor] = []")
        input_keys = [k for k in g.order() if isinstance(g.spec(k), Stream) and g.spec(k).kind == "input"]
        past_keys = [k for k in g.order() if isinstance(g.spec(k), Stream) and g.spec(k).kind == "past"]
        steps_of = {}
        for name in dict.fromkeys(g.spec(k).name for k in input_keys):
            steps_of[name] = names.get(f"{name}_steps")
            # unbind once: indexing x[t] per step would make backward build a full-size zero gradient each step
            w(f"{steps_of[name]} = {inp[name]}.unbind(0)")
        w("for t in range(T):")
        w.indent()
        xs = ", ".join(f"{steps_of[g.spec(k).name]}[t + {depth_of[g.spec(k).name] + g.spec(k).offset}]" for k in input_keys)
        pasts = ", ".join(carried[g.spec(k).name][-g.spec(k).offset - 1] for k in past_keys)
        new_values = names.get("new_states")
        w(f"{new_values} = self.step([{xs}], [{pasts}], masks, arch)")
        w("# advance the windows")
        for i, name in enumerate(g.states):
            chain = carried[name]
            for j in range(len(chain) - 1, 0, -1):
                w(f"{chain[j]} = {chain[j - 1]}")
            w(f"{chain[0]} = {new_values}[{i}]")
        w(f"outputs.append({carried[g.output][0]})")
        w.dedent()
        w()
        self.step_lines = self.step_method(input_keys, past_keys, arch_vars, list(state_mask.values()))
        w("output = torch.stack(outputs)")
        parts = []
        for s in self.slots:
            if s.kind == "state":
                parts.append(f"torch.stack([{', '.join(carried[s.stream])}])")
            else:
                parts.append(f"{seq[s.stream]}[{seq[s.stream]}.size(0) - {s.depth}:].flip(0)")
        return parts

    def per_forward_vars(self) -> list[str]:
        """Locals computed once per forward that the time step reads, in a fixed order."""
        return list(
            dict.fromkeys(
                list(self.theta.values())
                + list(self.wsum.values())
                + list(self.denom.values())
                + list(self.phi.values())
                + list(self.wstack.values())
            )
        )

    def step_method(self, input_keys: list[str], past_keys: list[str], arch_vars: list[str], mask_vars: list[str]) -> list[str]:
        """One time step of the cell as its own method, so it can run under torch.compile."""
        g = self.g
        w = _Writer()
        w.indent()
        w("def step(self, xs: List[Tensor], past: List[Tensor], masks: List[Tensor], arch: List[Tensor]) -> List[Tensor]:")
        w.indent()
        w('"""One time step: inputs at their offsets, past states (newest first per state), masks, arch weights."""')
        for i, key in enumerate(input_keys):
            w(f"{self.value[key]} = xs[{i}]")
        for i, key in enumerate(past_keys):
            w(f"{self.value[key]} = past[{i}]")
        for i, var in enumerate(arch_vars):
            w(f"{var} = arch[{i}]")
        for key in g.computed():
            spec = g.spec(key)
            if isinstance(spec, MixedSpec):
                self.mixed_step(w, spec)
            else:
                label = f"state {spec.name}" if isinstance(spec, UpdateSpec) else "node"
                w(f"# {key} ({label})")
                expr = self.expr(w, spec.expr, key)
                w(f"{self.value[key]} = {_strip(expr)}")
                self.normalise(w, spec, self.value[key])
        w(f"return [{', '.join(self.value[f'{name}[t]'] for name in g.states)}]")
        return w.lines

    def per_forward(self, w: _Writer) -> None:
        """Architecture weights: every softmax once per forward call."""
        names = self.names
        any_choice = any(s.has_op_choice or s.has_combine_choice for s in self.mixed)
        project_stacks = [s for s in self.mixed if s.transform == "project" and len(s.edges) > 1 and self.project_same_size(s)]
        if any_choice or project_stacks:
            w("# architecture weights (softmaxes once per forward) and stacked per-edge matrices")
        for s in self.mixed:
            E, K = len(s.edges), len(s.op_names)
            nonzero = [op for op in s.op_names if not ops.is_zero(op)]
            if s.has_op_choice:
                logits = _member("self.arch", f"{s.name}_ops")
                mask = op_mask(s)
                if not all(all(row) for row in mask):
                    invalid = [[not v for v in row] for row in mask]
                    logits = f'{logits}.masked_fill(torch.tensor({invalid}, device={self.device}), float("-inf"))'
                theta = names.get(f"{s.name}_theta")
                if s.select == "edge_softmax":
                    w(f"{theta} = torch.softmax({logits}, -1)  # {s.name}: softmax over each edge's ops")
                else:
                    w(f"{theta} = torch.softmax({logits}.reshape(-1), 0).view({E}, {K})  # {s.name}: one softmax over all (edge, op)")
                for k, op in enumerate(s.op_names):
                    if ops.is_zero(op):
                        continue
                    var = names.get(f"{s.name}_{op}")
                    self.theta[(s.name, op)] = var
                    w(f"{var} = {theta}[:, {k}].view({E}, 1, 1)")
                wsum = names.get(f"{s.name}_w")
                self.wsum[s.name] = wsum
                w(f"{wsum} = {' + '.join(self.theta[(s.name, op)] for op in nonzero)}  # weight of each edge")
                if "mean" in s.combine:
                    denom = names.get(f"{s.name}_denom")
                    self.denom[s.name] = denom
                    w(f"{denom} = torch.clamp({wsum}.sum(), min=1e-6)")
            if s.has_combine_choice:
                phi = names.get(f"{s.name}_phi")
                w(f"{phi} = torch.softmax({_member('self.arch', s.name + '_combine')}, 0)  # {s.name}: {', '.join(s.combine)}")
                for c, comb in enumerate(s.combine):
                    var = names.get(f"{s.name}_{comb}")
                    self.phi[(s.name, comb)] = var
                    w(f"{var} = {phi}[{c}]")
            if s in project_stacks:
                stack = names.get(f"{s.name}_wstack")
                self.wstack[s.name] = stack
                w(f"{stack} = torch.stack([{', '.join(self.cell(f'{s.name}_w{e}') for e in range(E))}])")

    # ---------------------------------------------------------------- cell code
    def expr(self, w: _Writer, e: RExpr, owner: str) -> str:
        if isinstance(e, ERef):
            return self.value[e.key]
        if isinstance(e, EApply):
            arg = self.shallow(w, self.expr(w, e.arg, owner), owner)
            return _apply_code(e.op, arg)
        if isinstance(e, ECombine):
            terms = [self.shallow(w, self.expr(w, t, owner), owner) for t in e.terms]
            if e.combiner == "product":
                return "(" + self.chain(w, terms, [" * "] * len(terms), owner) + ")"
            if e.combiner == "mean":
                return f"(({self.chain(w, terms, [' + '] * len(terms), owner)}) / {len(terms)})"
            signs = e.signs or (1,) * len(terms)
            first = ("" if signs[0] > 0 else "-") + terms[0]
            return "(" + self.chain(w, [first] + terms[1:], [" + " if s > 0 else " - " for s in signs], owner) + ")"
        if isinstance(e, ELinear):
            joined = self.joined(w, e.inputs, owner)
            if e.bias:
                return f"torch.addmm({self.cell(bias_name(e.param))}, {joined}, {self.cell(e.param)})"
            return f"torch.mm({joined}, {self.cell(e.param)})"
        if isinstance(e, EHighway):
            joined = self.joined(w, e.inputs, owner)
            carry = self.shallow(w, self.expr(w, e.carry, owner), owner)
            if not isinstance(e.carry, ERef) and carry not in self.names.used:
                var = self.names.get(f"{param_safe(owner)}_carry")
                w(f"{var} = {_strip(carry)}")
                carry = var
            c = self.names.get(f"{param_safe(owner)}_c")
            gname = self.names.get(f"{param_safe(owner)}_g")
            w(f"{c}, {gname} = torch.mm({joined}, {self.cell(e.param)}).chunk(2, 1)")
            return f"({carry} + torch.sigmoid({c}) * ({_act(e.op, gname)} - {carry}))"
        raise TypeError(e)

    def chain(self, w: _Writer, terms: list[str], joiners: list[str], owner: str) -> str:
        """``terms`` joined left to right (``joiners[i]`` before ``terms[i]``, i >= 1), with
        every :data:`MAX_CHAIN` operands accumulated into a temporary: the same
        operations in the same order, so the numbers are bit-identical."""
        text = terms[0]
        for start in range(1, len(terms), MAX_CHAIN - 1):
            if start > 1:
                var = self.names.get(f"{param_safe(owner)}_acc")
                w(f"{var} = {_strip(text)}")
                text = var
            for term, joiner in zip(terms[start : start + MAX_CHAIN - 1], joiners[start : start + MAX_CHAIN - 1]):
                text += joiner + term
        return text

    def shallow(self, w: _Writer, text: str, owner: str) -> str:
        """``text``, or a temporary holding it when it nests deeper than :data:`MAX_INLINE_DEPTH`."""
        if _paren_depth(text) <= MAX_INLINE_DEPTH // 2:
            return text
        var = self.names.get(f"{param_safe(owner)}_tmp")
        w(f"{var} = {_strip(text)}")
        return var

    def joined(self, w: _Writer, inputs, owner: str) -> str:
        """The concatenated operands of a matrix product, each times its variational mask."""
        parts = [f"{_atom(self.shallow(w, self.expr(w, t, owner), owner))} * {self.mask(expr_operand_key(self.g, t))}" for t in inputs]
        return parts[0] if len(parts) == 1 else f"torch.cat([{', '.join(parts)}], 1)"

    def source_value(self, edge) -> str:
        return " * ".join(self.value[k] for k in edge.sources)

    def mask(self, key: str) -> str:
        return f"masks[{self.mask_index[key]}]"

    def masked_sources(self, s: MixedSpec, us: list[str]) -> str:
        """The stacked GEMM operands (E, B, d) of a mixed node: its sources times their masks."""
        keys = [operand_mask_key(self.g, e.sources) for e in s.edges]
        if len(set(keys)) == 1:  # one mask for all: multiply once, broadcast over the edges
            stacked = f"torch.stack([{', '.join(us)}])" if len(us) > 1 else f"({us[0]}).unsqueeze(0)"
            return f"({stacked} * {self.mask(keys[0])})"
        return f"torch.stack([{', '.join(f'({u}) * {self.mask(k)}' for u, k in zip(us, keys))}])"

    def stacked_operands(self, s: MixedSpec, u: str, us: list[str]) -> str:
        """GEMM operands of a highway node whose sources are already stacked in ``u``."""
        keys = {operand_mask_key(self.g, e.sources) for e in s.edges}
        return f"({u} * {self.mask(keys.pop())})" if len(keys) == 1 else self.masked_sources(s, us)

    def normalise(self, w: _Writer, spec, out: str) -> None:
        target = norm_target(spec, self.cfg)
        if target == SHARED_NORM:
            w(f"{out} = self.{SHARED_NORM}({out})  # the shared normalisation")
        elif target is not None:
            w(f"{out} = self.norms.{target}({out})")

    def mixed_step(self, w: _Writer, s: MixedSpec) -> None:
        g, names = self.g, self.names
        E = len(s.edges)
        d = g.dim(s.name)
        out = self.value[s.name]
        sources = ", ".join(e.label for e in s.edges)
        w(f"# {s.name}: mix over {sources} ({s.transform}, {s.select}, keep {s.keep}, combine {'/'.join(s.combine)}"
          f"{', batchnorm' if uses_norm(s, self.cfg) else ''})")  # fmt: skip
        us = [self.source_value(e) for e in s.edges]
        if not s.has_op_choice:
            self.fixed_choice_step(w, s, us, out)
        else:
            m = names.get(f"{s.name}_m")
            if s.transform == "highway":
                u = names.get(f"{s.name}_u")
                c, gg = names.get(f"{s.name}_c"), names.get(f"{s.name}_g")
                w(f"{u} = torch.stack([{', '.join(us)}])  # ({E}, B, {d}): the candidate sources (the carry)")
                operands = self.stacked_operands(s, u, us)
                w(f"{c}, {gg} = torch.matmul({operands}, {self.cell(f'{s.name}_w')}).chunk(2, -1)  # one GEMM for all edges")
                wu = names.get(f"{s.name}_wu")
                w(f"{wu} = {self.wsum[s.name]} * {u}")
                mixture = " + ".join(
                    f"{self.theta[(s.name, op)]} * {_act(op, gg)}" for op in s.op_names if not ops.is_zero(op)
                )
                w(f"{m} = {wu} + torch.sigmoid({c}) * ({mixture} - {wu})  # op mixture, folded")
            else:
                hname = names.get(f"{s.name}_h")
                self.project_step(w, s, us, hname)
                mixture = " + ".join(
                    f"{self.theta[(s.name, op)]} * {_act(op, hname)}" for op in s.op_names if not ops.is_zero(op)
                )
                w(f"{m} = {mixture}  # op mixture")
            self.combine(w, s, m, self.wsum[s.name], out)
        self.normalise(w, s, out)

    def project_step(self, w: _Writer, s: MixedSpec, us: list[str], hname: str) -> None:
        """``hname`` = the (E, B, d) projections of a project node's masked sources."""
        if s.name in self.wstack:
            w(f"{hname} = torch.bmm({self.masked_sources(s, us)}, {self.wstack[s.name]})  # one GEMM for all edges")
        else:
            keys = [operand_mask_key(self.g, e.sources) for e in s.edges]
            prods = ", ".join(
                f"torch.mm(({u}) * {self.mask(k)}, {self.cell(f'{s.name}_w{e}')})" for e, (u, k) in enumerate(zip(us, keys))
            )
            w(f"{hname} = torch.stack([{prods}])")

    def fixed_choice_step(self, w: _Writer, s: MixedSpec, us: list[str], out: str) -> None:
        """No op choice: every kept edge has its one op and weight 1."""
        names = self.names
        E = len(s.edges)
        edge_ops = [e.ops[0] for e in s.edges]
        if E == 1 and not s.has_combine_choice:
            u = us[0]
            if " * " in u:
                var = names.get(f"{s.name}_u")
                w(f"{var} = {u}")
                u = var
            masked = f"{u} * {self.mask(operand_mask_key(self.g, s.edges[0].sources))}"
            if s.transform == "highway":
                c, gg = names.get(f"{s.name}_c"), names.get(f"{s.name}_g")
                w(f"{c}, {gg} = torch.mm({masked}, {self.cell(f'{s.name}_w')}).chunk(2, 1)")
                w(f"{out} = {u} + torch.sigmoid({c}) * ({_act(edge_ops[0], gg)} - {u})")
            else:
                projected = f"torch.mm({masked}, {self.cell(s.name + '_w0')})"
                w(f"{out} = {_act(edge_ops[0], projected)}")
            return
        m = names.get(f"{s.name}_m")
        if s.transform == "highway":
            u = names.get(f"{s.name}_u")
            c, gg = names.get(f"{s.name}_c"), names.get(f"{s.name}_g")
            w(f"{u} = torch.stack([{', '.join(us)}])")
            operands = self.stacked_operands(s, u, us)
            w(f"{c}, {gg} = torch.matmul({operands}, {self.cell(f'{s.name}_w')}).chunk(2, -1)  # one GEMM for all edges")
            if len(set(edge_ops)) == 1:
                w(f"{m} = {u} + torch.sigmoid({c}) * ({_act(edge_ops[0], gg)} - {u})")
            else:
                parts = [f"{u}[{e}] + torch.sigmoid({c}[{e}]) * ({_act(op, f'{gg}[{e}]')} - {u}[{e}])" for e, op in enumerate(edge_ops)]
                w(f"{m} = torch.stack([{', '.join(parts)}])")
        else:
            hname = names.get(f"{s.name}_h")
            self.project_step(w, s, us, hname)
            if len(set(edge_ops)) == 1:
                w(f"{m} = {_act(edge_ops[0], hname)}")
            else:
                w(f"{m} = torch.stack([{', '.join(_act(op, f'{hname}[{e}]') for e, op in enumerate(edge_ops))}])")
        self.combine(w, s, m, None, out)

    def combine(self, w: _Writer, s: MixedSpec, m: str, wsum: Optional[str], out: str) -> None:
        """Reduce the stacked edge mixtures ``m`` (E, B, d) with the node's combiner(s)."""
        E = len(s.edges)
        values = {}
        for comb in s.combine:
            if comb == "sum":
                values[comb] = f"{m}.sum(0)"
            elif comb == "mean":
                denom = self.denom[s.name] if wsum is not None else repr(float(E))
                values[comb] = f"({m}.sum(0) / {denom})"
            else:  # product of (1 - w_e + m_e); with weight 1 that is m_e
                factors = f"(1.0 - {wsum} + {m})" if wsum is not None else m
                if wsum is not None:
                    var = self.names.get(f"{s.name}_factors")
                    w(f"{var} = {factors}")
                    factors = var
                values[comb] = "(" + self.chain(w, [f"{factors}[{e}]" for e in range(E)], [" * "] * E, s.name) + ")"
        if len(s.combine) == 1:
            w(f"{out} = {_strip(values[s.combine[0]])}")
        else:
            w(f"{out} = {' + '.join(f'{self.phi[(s.name, c)]} * {values[c]}' for c in s.combine)}")


def _member(owner: str, name: str) -> str:
    """``owner.name`` in generated code; through getattr when ``name`` starts with two
    underscores, which Python would otherwise rename inside the class (``_Cls__name``)."""
    return f'getattr({owner}, "{name}")' if name.startswith("__") else f"{owner}.{name}"


def _assign_member(owner: str, name: str, value: str) -> str:
    return f'setattr({owner}, "{name}", {value})' if name.startswith("__") else f"{owner}.{name} = {value}"


def _paren_depth(text: str) -> int:
    """How deeply parentheses and brackets nest in generated code (which has no strings with brackets)."""
    depth = deepest = 0
    for ch in text:
        if ch in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]":
            depth -= 1
    return deepest

def _atom(text: str) -> str:
    """``text`` as one operand of ``*``: parenthesised unless it already is one."""
    return text if text.isidentifier() or _strip(text) != text else f"({text})"


def _strip(text: str) -> str:
    """Drop one pair of redundant outer parentheses."""
    if text.startswith("(") and text.endswith(")"):
        depth = 0
        for i, ch in enumerate(text):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0 and i < len(text) - 1:
                return text
        return text[1:-1]
    return text


def _describe(graph: CellGraph, key: str, cfg: ModelConfig) -> str:
    spec = graph.spec(key)
    if isinstance(spec, MixedSpec):
        edges = ", ".join(f"{e.label}:{{{','.join(e.ops)}}}" for e in spec.edges)
        return f"mix {spec.transform} {spec.select} keep {spec.keep} combine {'/'.join(spec.combine)} from {edges}"
    return "fixed expression" if isinstance(spec, FixedSpec) else "state update"


def generate_source(graph: CellGraph, config: ModelConfig, target: str = "lm") -> str:
    """The Python source of the compiled ``target`` for ``graph`` under ``config``: the
    language model (``lm``) or the cell alone (``cell``)."""
    return _Generator(graph, config, target).source()


class _GeneratedLoader:
    """The loader of a generated module: it hands out the source it was made from, so
    ``inspect.getsource`` (which TorchScript needs) works without any file."""

    def __init__(self, source: str):
        self.source = source

    def get_source(self, name: str) -> str:
        return self.source


def load_source(source: str, graph: CellGraph, target: str = "lm"):
    """Execute ``source`` as a module (named by its hash) and return the model class.

    The module is built straight from the string just generated: nothing is written
    to or imported from a cache folder (an earlier version imported ``<hash>.py``
    from ``~/.cache/essdsl`` or ``/tmp/essdsl-<uid>``, so whoever could write there
    ran code).  The source is registered with :mod:`linecache` under a name that is
    not a path, which is all TorchScript's ``inspect.getsource`` needs."""
    digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
    module_name = f"essdsl_generated_{digest[:20]}"
    module = sys.modules.get(module_name)
    if module is None:
        filename = f"<essdsl-generated-{digest[:20]}>"
        loader = _GeneratedLoader(source)
        module = types.ModuleType(module_name)
        module.__file__ = filename
        module.__loader__ = loader
        module.__spec__ = importlib.util.spec_from_loader(module_name, loader, origin=filename)
        # mtime None: linecache.checkcache keeps the entry although no such file exists
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        sys.modules[module_name] = module
        try:
            # dont_inherit: compile() would otherwise apply this file's `from __future__ import
            # annotations` to the generated module, turning its class annotations into strings
            # that TorchScript cannot resolve
            code = compile(source, filename, "exec", dont_inherit=True)
            exec(code, module.__dict__)  # noqa: S102 - our own generated code
        except BaseException:
            del sys.modules[module_name]
            raise
    return getattr(module, class_name(graph) if target == "lm" else cell_class_name(graph))
