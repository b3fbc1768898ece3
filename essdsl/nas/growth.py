"""Function-preserving growth of a supernet: one growth step of a space's ``grow`` block.

A growth step takes a model built from a space grown to n members and returns the
model of the space grown to n + 1 members (docs/semantics.md, "Growth"):

* every tensor that means the same thing in both graphs is copied (same name and
  shape: weights, architecture logits, BatchNorm statistics, the embedding, ...);
* each matrix of a ``linear``/``project``/``highway`` that reads the family gets rows
  for the new member's value; the rows of the inputs it had are copied by input (not
  by position) and the new rows are **zero**, so the product is unchanged;
* the new member's own weights and architecture logits keep the fresh initialisation
  of the compiler (nothing reads the member yet except through those zero rows);
* in mode ``interleaved`` the members that exist are first pruned to their derived
  choice (:func:`prune_choices`): a pruned ``project`` node keeps the matrices of its
  kept edges, mapped by edge, not by position.

Nothing here knows the task around the cell: tensors are matched by name, and the
cell's own names are found after their ``cell.`` component (``cell.h_t_w0``,
``fw.cell.h_t_w0``).  :func:`carry_optimizer_state` moves an optimizer's per-parameter
state (momentum, Adam moments) through the same mapping, zero for the new entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from essdsl.errors import EssdslError
from essdsl.lang.graph import CellGraph, EApply, ECombine, EHighway, ELinear, ERef, MixedSpec, expr_dim
from essdsl.lang.growth import GrowPlan, GrowthState, PrunedMember, growth_of, grown_space


class GrowthError(EssdslError):
    """A growth step is impossible (the family is at its maximum, a tensor cannot be mapped)."""


@dataclass(frozen=True)
class TensorMap:
    """How one tensor of the grown model is made from the model before the step.

    ``kind``: "copy" (same tensor), "rows" (a matrix whose rows are copied per input:
    ``rows`` lists (new_start, old_start, length) blocks, other rows zero), "edge"
    (a pruned node's edge matrix, copied from ``old`` = the same edge's old name) or
    "new" (kept as initialised)."""

    kind: str
    old: Optional[str] = None
    rows: tuple = ()


# ------------------------------------------------------------------ reading the graphs
def matrix_inputs(graph: CellGraph) -> dict[str, list[tuple[str, int]]]:
    """Cell parameter name -> the (input, size) blocks of its rows, for every matrix of a
    ``linear``/``project``/``highway`` in fixed nodes and updates.  An input is its graph
    key (``s3``, ``h[t-1]``) or, for an expression, its resolved form's text."""
    out: dict[str, list[tuple[str, int]]] = {}

    def walk(e):
        if isinstance(e, (ELinear, EHighway)):
            out[e.param] = [(t.key if isinstance(t, ERef) else repr(t), expr_dim(t, graph)) for t in e.inputs]
            for t in e.inputs:
                walk(t)
            if isinstance(e, EHighway):
                walk(e.carry)
        elif isinstance(e, EApply):
            walk(e.arg)
        elif isinstance(e, ECombine):
            for t in e.terms:
                walk(t)

    for key in graph.computed():
        spec = graph.spec(key)
        if not isinstance(spec, MixedSpec):
            walk(spec.expr)
    return out


def _row_blocks(new_inputs, old_inputs) -> tuple:
    old_at, offset = {}, 0
    for key, size in old_inputs:
        old_at[key] = (offset, size)
        offset += size
    blocks, offset = [], 0
    for key, size in new_inputs:
        if key in old_at:
            if old_at[key][1] != size:
                raise GrowthError(f"input {key} changed size from {old_at[key][1]} to {size}")
            blocks.append((offset, old_at[key][0], size))
        offset += size
    return tuple(blocks)


def _cell_local(name: str) -> Optional[str]:
    """``cell.h_t_w0`` / ``fw.cell.h_t_w0`` -> ``h_t_w0``; None for tensors outside the cell."""
    if name.startswith("cell."):
        return name[len("cell."):]
    index = name.find(".cell.")
    return name[index + len(".cell."):] if index >= 0 else None


def tensor_maps(old_graph: CellGraph, new_graph: CellGraph, old_names: dict, new_names: dict) -> dict[str, TensorMap]:
    """How each tensor of the new model (``new_names``: name -> shape) is made from the old
    one's (``old_names``); raises :class:`GrowthError` for a tensor that has changed shape
    without a rule that maps it."""
    old_rows, new_rows = matrix_inputs(old_graph), matrix_inputs(new_graph)
    edge_renames = _pruned_edge_renames(old_graph, new_graph)
    maps: dict[str, TensorMap] = {}
    for name, shape in new_names.items():
        local = _cell_local(name)
        prefix = name[: len(name) - len(local)] if local is not None else ""
        if local is not None and local in new_rows and local in old_rows and new_rows[local] != old_rows[local]:
            maps[name] = TensorMap("rows", name, _row_blocks(new_rows[local], old_rows[local]))
        elif local is not None and local in edge_renames:
            maps[name] = TensorMap("edge", prefix + edge_renames[local])
        elif name in old_names and tuple(old_names[name]) == tuple(shape):
            maps[name] = TensorMap("copy", name)
        elif name in old_names:
            raise GrowthError(f"{name} changed shape {tuple(old_names[name])} -> {tuple(shape)} and no growth rule maps it")
        else:
            maps[name] = TensorMap("new")
    return maps


def _pruned_edge_renames(old_graph: CellGraph, new_graph: CellGraph) -> dict[str, str]:
    """For ``project`` nodes whose edges changed (pruned): new edge matrix name -> old one."""
    renames = {}
    for spec in new_graph.mixed_nodes():
        if spec.transform != "project" or spec.name not in old_graph.dag:
            continue
        old = old_graph.spec(spec.name)
        if not isinstance(old, MixedSpec) or old.edges == spec.edges:
            continue
        old_index = {e.sources: i for i, e in enumerate(old.edges)}
        for i, edge in enumerate(spec.edges):
            renames[f"{spec.name}_w{i}"] = f"{spec.name}_w{old_index[edge.sources]}"
    return renames


def apply_map(m: TensorMap, new_value: torch.Tensor, old: dict) -> torch.Tensor:
    """The tensor ``m`` says to make (``new_value``: the fresh one, used for "new")."""
    if m.kind == "new":
        return new_value
    source = old[m.old]
    if m.kind in ("copy", "edge"):
        return source.detach().clone().to(new_value.dtype)
    out = torch.zeros_like(new_value)
    for new_start, old_start, length in m.rows:
        out[new_start : new_start + length] = source[old_start : old_start + length]
    return out


# ------------------------------------------------------------------ one step
def prune_choices(model: torch.nn.Module, graph: CellGraph, members: list[str]) -> dict[str, PrunedMember]:
    """The derived choice of each of ``members`` from the model's architecture weights
    (docs/semantics.md, "Discretization"), as :class:`PrunedMember` records."""
    from essdsl.compile.manifest import arch_entries
    from essdsl.nas.derive import derive_choices
    from essdsl.tasks.base import arch_key, is_arch_parameter

    arch = {arch_key(name): p for name, p in model.named_parameters() if is_arch_parameter(name)}
    choices = derive_choices({"arch": arch_entries(graph)}, arch)
    out = {}
    for member in members:
        spec = graph.spec(member)
        choice = choices.get(member)
        if choice is not None and choice.edges is not None:
            edges = tuple((e.label, e.op) for e in choice.edges)
        else:  # no op/edge choice: every edge is kept with its one op
            edges = tuple((e.label, e.ops[0]) for e in spec.edges)
        combine = choice.combine if choice is not None and choice.combine is not None else spec.combine[0]
        out[member] = PrunedMember(edges, combine)
    return out


@dataclass
class GrowthStep:
    """What one growth step made: the grown graph and model, the new growth state, the
    tensor mapping (for optimizer state) and which members it pruned first."""

    graph: CellGraph
    model: torch.nn.Module
    state: GrowthState
    maps: dict
    pruned: dict
    before_prune: Optional[torch.nn.Module] = None


def plan_of(graph: CellGraph) -> GrowPlan:
    growth = growth_of(graph)
    if growth is None:
        raise GrowthError("the space has no grow block")
    return growth.plan


def initial_state(graph: CellGraph) -> GrowthState:
    return GrowthState(plan_of(graph).start)


def graph_for(base: CellGraph, state: GrowthState) -> CellGraph:
    """The graph of ``base``'s space (the one with the grow block) at ``state``."""
    from essdsl.lang.check import load_graph_space
    from essdsl.lang.growth import attach

    growth = growth_of(base)
    graph = load_graph_space(grown_space(growth.space, state), dict(base.sizes))
    attach(graph, growth.space, growth.plan)
    return graph


def transfer(old_model: torch.nn.Module, old_graph: CellGraph, new_model: torch.nn.Module, new_graph: CellGraph) -> dict:
    """Fill ``new_model`` from ``old_model`` by the growth rules; returns the tensor maps."""
    old_state = old_model.state_dict()
    new_state = new_model.state_dict()
    maps = tensor_maps(old_graph, new_graph, {k: v.shape for k, v in old_state.items()}, {k: v.shape for k, v in new_state.items()})
    with torch.no_grad():
        new_model.load_state_dict({name: apply_map(maps[name], value, old_state) for name, value in new_state.items()})
    return maps


def grow_step(
    model: torch.nn.Module,
    graph: CellGraph,
    base: CellGraph,
    state: GrowthState,
    build: Callable[[CellGraph], torch.nn.Module],
) -> GrowthStep:
    """Grow ``model`` (built from ``graph`` = ``base`` at ``state``) by one member.

    ``build(graph)`` makes a fresh model of the task around a graph (e.g.
    ``lambda g: build_model(g, cfg)``).  In mode ``interleaved`` the
    existing members are pruned first; ``before_prune`` is then the model after pruning
    and before growing (the point the growth step keeps the function of)."""
    plan = plan_of(base)
    if state.size >= plan.max:
        raise GrowthError(f"'{plan.family}' is at its maximum size {plan.max}")
    pruned = dict(state.pruned)
    pruned_model, pruned_graph, newly = model, graph, {}
    if plan.mode == "interleaved":
        open_members = [m for m in plan.members(state.size) if m not in pruned]
        newly = prune_choices(model, graph, open_members)
        pruned.update(newly)
        pruned_graph = graph_for(base, GrowthState(state.size, pruned))
        pruned_model = _like(build(pruned_graph), model)
        transfer(model, graph, pruned_model, pruned_graph)
    grown_state = GrowthState(state.size + 1, pruned)
    grown_graph = graph_for(base, grown_state)
    grown = _like(build(grown_graph), model)
    maps = transfer(pruned_model, pruned_graph, grown, grown_graph)
    if newly:  # compose: tensors of the model before pruning -> tensors of the grown model
        first = tensor_maps(graph, pruned_graph, {k: v.shape for k, v in model.state_dict().items()}, {k: v.shape for k, v in pruned_model.state_dict().items()})
        maps = {name: _compose(m, first) for name, m in maps.items()}
    return GrowthStep(grown_graph, grown, grown_state, maps, newly, pruned_model if newly else None)


def _compose(second: TensorMap, first: dict) -> TensorMap:
    if second.kind == "new":
        return second
    inner = first.get(second.old)
    if inner is None or inner.kind == "new":
        return TensorMap("new")
    if second.kind in ("copy", "edge"):
        return inner
    if inner.kind in ("copy", "edge"):
        return TensorMap("rows", inner.old, second.rows)
    raise GrowthError(f"{second.old}: rows mapped twice in one step")  # pragma: no cover - pruning never adds rows


def _like(new_model: torch.nn.Module, old_model: torch.nn.Module) -> torch.nn.Module:
    """``new_model`` on the old one's device and dtype, in its train/eval mode."""
    reference = next(old_model.parameters())
    new_model = new_model.to(device=reference.device, dtype=reference.dtype)
    return new_model.train(old_model.training)


def carry_optimizer_state(old_opt: torch.optim.Optimizer, old_params: dict, new_opt: torch.optim.Optimizer, new_params: dict, maps: dict) -> None:
    """Move per-parameter optimizer state (momentum, Adam moments and step) from
    ``old_opt`` to ``new_opt`` through the growth ``maps``; ``*_params`` are name ->
    parameter of the models the optimizers hold.  New parameters start with no state
    (as a fresh optimizer creates it); new rows of a grown matrix start at zero."""
    for name, param in new_params.items():
        m = maps.get(name)
        if m is None or m.kind == "new" or m.old not in old_params:
            continue
        old_state = old_opt.state.get(old_params[m.old])
        if not old_state:
            continue
        state = {}
        for key, value in old_state.items():
            if torch.is_tensor(value) and value.shape == old_params[m.old].shape:
                state[key] = apply_map(m, torch.zeros_like(param), {m.old: value})
            else:
                state[key] = value.clone() if torch.is_tensor(value) else value
        new_opt.state[param] = state
