"""The reference interpreter: the correctness oracle and the benchmark baseline.

It walks the cell graph node by node, and every mixed node edge by edge and op
by op, writing each formula of ``docs/semantics.md`` literally — no folding of
the op mixture, no stacking of edges, softmaxes taken edge by edge.  It is slow
on purpose; the generated module must compute the same numbers.

Its parameters have exactly the names and shapes of the generated module
(``encoder.weight``, ``decoder_bias`` [, ``decoder_weight``], ``cell.<name>``
from :func:`essdsl.lang.graph.parameter_layout`, ``arch.<node>_ops`` /
``arch.<node>_combine``, ``norms.<node>.*``), so ``load_state_dict`` moves
weights between the two.
"""

from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from essdsl import ops

from essdsl.lang.layout import bias_name, parameter_layout
from essdsl.lang.exprs import EApply, ECombine, EHighway, ELinear, ERef, RExpr, stream_key
from essdsl.lang.graph import CellGraph, MixedSpec, Stream
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
    mask_keys,
    mask_rate,
    mask_size,
    norm_target,
    operand_mask_key,
    own_norms,
    shared_norm_size,
)


def activation(op: str, value: Tensor) -> Tensor:
    """Op ``op`` of :mod:`essdsl.ops` on ``value`` (its reference function)."""
    return ops.apply(op, value)


class ParameterBag(nn.Module):
    """A plain holder so that parameters are named ``<bag>.<name>``."""


class _ReferenceCellParts(nn.Module):
    """The cell's parameters (``cell.*``, ``arch.*``, ``norms.*``, the shared norm), its
    variational masks and its loop over a segment: what the language model and the cell
    alone share."""

    def _init_cell_settings(self, graph: CellGraph, config: ModelConfig) -> None:
        self.graph = graph
        self.config = config
        self.ninp = embedding_dim(graph)
        self.output_dim = graph.dims[graph.output]
        self.slots = hidden_layout(graph)
        self.dropouth, self.dropoutx = config.dropouth, config.dropoutx

    def _add_cell_parameters(self) -> None:
        graph, config = self.graph, self.config
        self.cell = ParameterBag()
        self.arch = ParameterBag()
        for p in parameter_layout(graph):
            bag = self.arch if p.role == "arch" else self.cell
            bag.register_parameter(p.name, nn.Parameter(torch.empty(p.shape)))
        self.norms = nn.ModuleDict({k: nn.BatchNorm1d(d, affine=False) for k, d in own_norms(graph, config).items()})
        shared = shared_norm_size(graph, config)
        if shared is not None:
            self.add_module(SHARED_NORM, nn.BatchNorm1d(shared, affine=False))
        # Dropout masks to use instead of drawing them (key -> tensor; see _mask):
        # lets a test drive this model and another implementation with the same masks.
        self.mask_override: Dict[str, Tensor] = {}
        self._step_masks: Dict[str, Tensor] = {}  # this segment's variational masks (set by forward)

    def _reset_cell_parameters(self) -> None:
        with torch.no_grad():
            for p in parameter_layout(self.graph):
                tensor = getattr(self.arch if p.role == "arch" else self.cell, p.name)
                if p.role == "arch":
                    tensor.normal_(0.0, 1.0).mul_(ARCH_INIT_SCALE)
                elif p.role == "bias":
                    tensor.zero_()
                else:
                    tensor.uniform_(-CELL_INIT_RANGE, CELL_INIT_RANGE)

    def arch_parameters(self) -> List[nn.Parameter]:
        return list(self.arch.parameters())

    def weight_parameters(self) -> List[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("arch.")]

    def init_hidden(self, batch_size: int) -> List[Tensor]:
        like = self._hidden_like()  # each model says which tensor gives device and dtype
        return [like.new_zeros(slot.depth, batch_size, slot.dim) for slot in self.slots]

    # ------------------------------------------------------------ arch weights
    def _theta(self, spec: MixedSpec, like: Tensor) -> List[Dict[str, Tensor]]:
        """theta[e][op] for every candidate (edge, op) slot, as semantics.md defines it."""
        if not spec.has_op_choice:
            one = torch.ones((), dtype=like.dtype, device=like.device)
            return [{op: one for op in edge.ops} for edge in spec.edges]
        logits = getattr(self.arch, f"{spec.name}_ops")
        columns = {op: k for k, op in enumerate(spec.op_names)}
        theta: List[Dict[str, Tensor]] = [dict() for _ in spec.edges]
        if spec.select == "edge_softmax":
            for e, edge in enumerate(spec.edges):
                valid = torch.stack([logits[e, columns[op]] for op in edge.ops])
                probs = torch.softmax(valid, dim=0)
                for i, op in enumerate(edge.ops):
                    theta[e][op] = probs[i]
        else:  # node_softmax: one softmax over every valid (edge, op) slot
            slots = [(e, op) for e, edge in enumerate(spec.edges) for op in edge.ops]
            probs = torch.softmax(torch.stack([logits[e, columns[op]] for e, op in slots]), dim=0)
            for i, (e, op) in enumerate(slots):
                theta[e][op] = probs[i]
        return theta

    def _combine_weights(self, spec: MixedSpec, like: Tensor) -> List[Tensor]:
        if not spec.has_combine_choice:
            return [torch.ones((), dtype=like.dtype, device=like.device)]
        return list(torch.softmax(getattr(self.arch, f"{spec.name}_combine"), dim=0))

    # ------------------------------------------------------------ the cell
    def _expr(self, e: RExpr, values: Dict[str, Tensor]) -> Tensor:
        if isinstance(e, ERef):
            return values[e.key]
        if isinstance(e, EApply):
            return activation(e.op, self._expr(e.arg, values))
        if isinstance(e, ECombine):
            terms = [self._expr(t, values) for t in e.terms]
            if e.combiner == "product":
                out = terms[0]
                for t in terms[1:]:
                    out = out * t
                return out
            if e.combiner == "mean":
                out = terms[0]
                for t in terms[1:]:
                    out = out + t
                return out / len(terms)
            signs = e.signs or (1,) * len(terms)
            out = terms[0] if signs[0] > 0 else -terms[0]
            for t, s in zip(terms[1:], signs[1:]):
                out = out + t if s > 0 else out - t
            return out
        if isinstance(e, ELinear):
            joined = torch.cat([self._operand(t, values) for t in e.inputs], dim=-1)
            out = joined @ getattr(self.cell, e.param)
            if e.bias:
                out = out + getattr(self.cell, bias_name(e.param))
            return out
        if isinstance(e, EHighway):
            joined = torch.cat([self._operand(t, values) for t in e.inputs], dim=-1)
            carry = self._expr(e.carry, values)  # the carry stays unmasked
            both = joined @ getattr(self.cell, e.param)
            d = carry.shape[-1]
            c, g = both[:, :d], both[:, d:]
            return carry + torch.sigmoid(c) * (activation(e.op, g) - carry)
        raise TypeError(e)

    def _operand(self, e: RExpr, values: Dict[str, Tensor]) -> Tensor:
        """A value entering a matrix product, times its variational mask (semantics.md, "Dropout")."""
        value = self._expr(e, values)
        mask = self._step_masks.get(expr_operand_key(self.graph, e))
        return value if mask is None else value * mask

    def _mixed(self, spec: MixedSpec, values: Dict[str, Tensor], theta, phi) -> Tensor:
        d = self.graph.dim(spec.name)
        mixtures: List[Tensor] = []  # m_e
        weights: List[Tensor] = []  # w_e
        for e, edge in enumerate(spec.edges):
            u = values[edge.sources[0]]
            for other in edge.sources[1:]:
                u = u * values[other]
            mask = self._step_masks.get(operand_mask_key(self.graph, edge.sources))
            masked = u if mask is None else u * mask  # only the GEMM's operand; the carry u stays unmasked
            if spec.transform == "highway":
                both = masked @ getattr(self.cell, f"{spec.name}_w")
                c, g = both[:, :d], both[:, d:]
            else:
                projected = masked @ getattr(self.cell, f"{spec.name}_w{e}")
            m = torch.zeros(u.shape[0], d, dtype=u.dtype, device=u.device)
            w = torch.zeros((), dtype=u.dtype, device=u.device)
            for op in spec.op_names:
                if op not in edge.ops or ops.is_zero(op):
                    continue  # not a candidate of this edge / the zero op contributes 0
                if spec.transform == "highway":
                    v = u + torch.sigmoid(c) * (activation(op, g) - u)
                else:
                    v = activation(op, projected)
                m = m + theta[e][op] * v
                w = w + theta[e][op]
            mixtures.append(m)
            weights.append(w)
        value = None
        for name, p in zip(spec.combine, phi):
            if name == "sum":
                combined = mixtures[0]
                for m in mixtures[1:]:
                    combined = combined + m
            elif name == "mean":
                total, weight_total = mixtures[0], weights[0]
                for m, w in zip(mixtures[1:], weights[1:]):
                    total, weight_total = total + m, weight_total + w
                combined = total / torch.clamp(weight_total, min=1e-6)
            else:  # product: an edge of weight 0 is the neutral element 1
                combined = 1 - weights[0] + mixtures[0]
                for m, w in zip(mixtures[1:], weights[1:]):
                    combined = combined * (1 - w + m)
            value = combined if len(spec.combine) == 1 else (p * combined if value is None else value + p * combined)
        return value

    def _normalise(self, spec, value: Tensor) -> Tensor:
        target = norm_target(spec, self.config)
        if target is None:
            return value
        return getattr(self, SHARED_NORM)(value) if target == SHARED_NORM else self.norms[target](value)

    def cell_step(self, values: Dict[str, Tensor], theta, phi) -> Dict[str, Tensor]:
        """Compute every node of one step; ``values`` holds the stream values the step reads."""
        for key in self.graph.computed():
            spec = self.graph.spec(key)
            if isinstance(spec, MixedSpec):
                values[key] = self._normalise(spec, self._mixed(spec, values, theta[key], phi[key]))
            else:
                values[key] = self._normalise(spec, self._expr(spec.expr, values))
        return values

    def _bernoulli_mask(self, shape: Tuple[int, ...], p: float, like: Tensor, key: str = "") -> Tensor:
        """A dropout mask (Bernoulli(1 - p) / (1 - p)), or ``mask_override[key]`` when given."""
        if key in self.mask_override:
            return self.mask_override[key]
        return like.new_empty(shape).bernoulli_(1 - p) / (1 - p)

    def run_cell(self, x: Tensor, hidden: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        """The cell over a segment: x (T, B, ninp) -> output (T, B, d_out) and the new hidden list."""
        T, B = x.shape[0], x.shape[1]
        slots = {(s.kind, s.stream): (i, s) for i, s in enumerate(self.slots)}
        # Each input stream's sequence: its carried past (oldest first), then this segment.
        sequences: Dict[str, Tensor] = {}
        for name in self.graph.inputs:
            if ("input", name) in slots:
                i, _ = slots[("input", name)]
                sequences[name] = torch.cat([hidden[i].flip(0), x], dim=0)
            else:
                sequences[name] = x
        # One variational mask per segment for every kind of value entering a matrix product.
        self._step_masks = {}
        for key in mask_keys(self.graph):
            p = mask_rate(key, self)
            if self.training and p > 0:
                self._step_masks[key] = self._bernoulli_mask((B, mask_size(self.graph, key)), p, x, key)
        # past[name][j] = value at offset -(j + 1)
        past: Dict[str, List[Tensor]] = {}
        for name in self.graph.states:
            i, slot = slots[("state", name)]
            past[name] = [hidden[i][j] for j in range(slot.depth)]

        theta = {s.name: self._theta(s, x) for s in self.graph.mixed_nodes()}
        phi = {s.name: self._combine_weights(s, x) for s in self.graph.mixed_nodes()}
        outputs = []
        for t in range(T):
            values: Dict[str, Tensor] = {}
            for key in self.graph.order():
                spec = self.graph.spec(key)
                if not isinstance(spec, Stream):
                    continue
                if spec.kind == "input":
                    depth = -self.graph.inputs[spec.name].earliest
                    value = sequences[spec.name][t + depth + spec.offset]
                else:
                    value = past[spec.name][-spec.offset - 1]
                values[key] = value
            values = self.cell_step(values, theta, phi)
            for name in self.graph.states:
                past[name] = [values[stream_key(name, 0)]] + past[name][:-1]
            outputs.append(past[self.graph.output][0])
        new_hidden: List[Tensor] = []
        for slot in self.slots:
            if slot.kind == "state":
                new_hidden.append(torch.stack(past[slot.stream]))
            else:
                new_hidden.append(sequences[slot.stream][-slot.depth :].flip(0))
        return torch.stack(outputs), new_hidden


class ReferenceModel(_ReferenceCellParts):
    """The language model: embedding, the cell, locked output dropout, decoder."""

    def __init__(self, graph: CellGraph, config: ModelConfig):
        super().__init__()
        self._init_cell_settings(graph, config)
        self.tied = decoder_tied(graph)
        self.dropout, self.dropouti, self.dropoute = config.dropout, config.dropouti, config.dropoute

        self.encoder = nn.Embedding(config.vocab, self.ninp)
        if not self.tied:
            self.decoder_weight = nn.Parameter(torch.empty(config.vocab, self.output_dim))
        self.decoder_bias = nn.Parameter(torch.zeros(config.vocab))
        self._add_cell_parameters()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.encoder.weight.uniform_(-EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE)
            if not self.tied:
                self.decoder_weight.uniform_(-EMBEDDING_INIT_RANGE, EMBEDDING_INIT_RANGE)
            self.decoder_bias.zero_()
        self._reset_cell_parameters()

    def _hidden_like(self) -> Tensor:
        return self.encoder.weight

    def forward(self, tokens: Tensor, hidden: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        T, B = tokens.shape
        weight = self.encoder.weight
        if self.training and self.dropoute > 0:
            weight = weight * self._bernoulli_mask((weight.shape[0], 1), self.dropoute, weight, "dropoute")
        embedded = F.embedding(tokens, weight)
        if self.training and self.dropouti > 0:
            embedded = embedded * self._bernoulli_mask((1, B, self.ninp), self.dropouti, embedded, "dropouti")
        output, new_hidden = self.run_cell(embedded, hidden)
        if self.training and self.dropout > 0:
            output = output * self._bernoulli_mask((1, B, self.output_dim), self.dropout, output, "dropout")
        decoder = self.encoder.weight if self.tied else self.decoder_weight
        logits = output @ decoder.t() + self.decoder_bias
        return logits, new_hidden


class ReferenceCell(_ReferenceCellParts):
    """The cell alone (``--target cell``): ``out, hidden = cell(x, hidden)``."""

    def __init__(self, graph: CellGraph, config: ModelConfig):
        super().__init__()
        self._init_cell_settings(graph, config)
        # no parameter of its own: the device and dtype of init_hidden (not in the state dict)
        self.register_buffer("device_anchor", torch.zeros(0), persistent=False)
        self._add_cell_parameters()
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self._reset_cell_parameters()

    def _hidden_like(self) -> Tensor:
        return self.device_anchor

    def forward(self, x: Tensor, hidden: List[Tensor]) -> Tuple[Tensor, List[Tensor]]:
        return self.run_cell(x, hidden)
