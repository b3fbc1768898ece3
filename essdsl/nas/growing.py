"""Growth during search: when a space's ``grow`` block says so, the trainer's supernet
grows by one member (function-preserving, :mod:`essdsl.nas.growth`) and search goes on.

* :class:`Grower` holds what the run knows about growth — the plan, how far the family
  has grown, the events so far — decides when a growth is due (``every N epochs``,
  ``every N steps``, ``plateau N epochs``) and performs one step, measuring the loss on
  a fixed batch (eval mode) before and after it.  It knows no trainer.
* :class:`GrowingTrainer` is the search trainer (:mod:`essdsl.nas.trainer`) with growth: after a growth it installs
  the grown model once (weights and architecture optimizers rebuilt, their state carried
  through the growth maps, the training step rebuilt by ``rebuild_step`` once per growth,
  not per step), stores the growth state in every checkpoint and rebuilds the grown
  model before loading one (resume and rollback), and records each growth in the epoch's
  metrics (``"growth": [{epoch, step, size_before, size_after, loss_before, loss_after,
  pruned}]``).

The run ends with the model at its grown size; :meth:`Grower.space` is the space to
derive the genotype from (the grow block expanded at that size, pruned members written
with their choice).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from essdsl.lang.graph import CellGraph
from essdsl.lang.growth import GrowthState, grown_space
from essdsl.nas.growth import GrowthError, GrowthStep, carry_optimizer_state, graph_for, grow_step, initial_state, plan_of
from essdsl.tasks.base import arch_key


class Grower:
    """When and how a run's family grows (see the module docstring)."""

    def __init__(self, base: CellGraph, build: Callable[[CellGraph], torch.nn.Module]):
        self.base = base
        self.plan = plan_of(base)
        self._build = build
        self.state: GrowthState = initial_state(base)
        self.events: list[dict] = []
        self.arch_added: dict = {}  # architecture tensors a growth added: their values then (search health's start)
        self._graph: Optional[CellGraph] = base

    def build(self, graph: CellGraph) -> torch.nn.Module:
        """A fresh model around ``graph``; the random state the run trains with is left as
        it was (a task's build may seed the generator to draw its weights)."""
        with torch.random.fork_rng(devices=[]):
            return self._build(graph)

    # -- where the family stands
    @property
    def graph(self) -> CellGraph:
        if self._graph is None:
            self._graph = graph_for(self.base, self.state)
        return self._graph

    @property
    def at_max(self) -> bool:
        return self.state.size >= self.plan.max

    def space(self):
        """The space the run searches now, as ordinary IR (for the genotype)."""
        from essdsl.lang.growth import growth_of

        return grown_space(growth_of(self.base).space, self.state)

    # -- when
    def due_at_step(self, step: int) -> bool:
        """``every N steps``: before training step ``step`` + 1, when ``step`` is a positive multiple of N."""
        plan = self.plan
        if self.at_max or plan.trigger != "every" or plan.unit != "steps" or step <= 0 or step % plan.period:
            return False
        return not any(e["step"] == step for e in self.events)

    def due_at_epoch_end(self, epochs_done: int, valid_history: list[float]) -> bool:
        """``every N epochs`` after every N-th epoch; ``plateau N epochs`` when the last N
        validation losses (since the last growth) are no better than the best before them."""
        plan = self.plan
        if self.at_max or plan.unit != "epochs" or epochs_done <= 0:
            return False
        if plan.trigger == "every":
            return epochs_done % plan.period == 0
        since = epochs_done - max((e["epoch"] for e in self.events), default=0)
        if since < plan.period or len(valid_history) <= plan.period:
            return False
        recent, earlier = valid_history[-plan.period:], valid_history[: -plan.period]
        return min(recent) >= min(earlier)

    # -- how
    def grow(self, model: torch.nn.Module, probe: Callable[[torch.nn.Module], float], epoch: int, step: int) -> GrowthStep:
        """One growth step of ``model`` (built from :attr:`graph`); ``probe(model)`` is the
        loss on a fixed batch.  ``epoch`` is the (1-based) epoch the growth belongs to."""
        grown = grow_step(model, self.graph, self.base, self.state, self.build)
        loss_before = probe(grown.before_prune if grown.before_prune is not None else model)
        loss_after = probe(grown.model)
        event = {
            "epoch": epoch,
            "step": step,
            "size_before": self.state.size,
            "size_after": grown.state.size,
            "loss_before": loss_before,
            "loss_after": loss_after,
            "pruned": {m: _choice_text(c) for m, c in grown.pruned.items()},
        }
        self.state, self._graph = grown.state, grown.graph
        self.events.append(event)
        for name, m in grown.maps.items():
            if m.kind == "new" and ("arch." in name):  # by manifest key: a head may hold the cell as rnn.arch.*
                self.arch_added[arch_key(name)] = grown.model.state_dict()[name].detach().cpu().tolist()
        return grown

    # -- checkpoints
    def to_json(self) -> dict:
        return {"state": self.state.to_json(), "events": [dict(e) for e in self.events], "arch_added": dict(self.arch_added)}

    def load_json(self, data: dict) -> bool:
        """Take the growth state of a checkpoint; True when the size or pruning changed
        (the model must then be rebuilt at :attr:`graph` before its weights are loaded)."""
        state = GrowthState.from_json(data["state"])
        changed = state != self.state
        self.state, self.events = state, [dict(e) for e in data.get("events", [])]
        self.arch_added = dict(data.get("arch_added", {}))
        if changed:
            self._graph = None
        return changed


def derivation(space_text: str, path: str, sizes: dict, growth: Optional[dict]):
    """(space IR, manifest with the ``arch`` entries) to derive a genotype from, for a
    search run's space text at its sizes and the growth state its checkpoint holds
    (``growth``: :meth:`Grower.to_json`; None: the space as written)."""
    from essdsl.compile.manifest import arch_entries
    from essdsl.lang.check import load_graph_text
    from essdsl.lang.growth import growth_of

    base = load_graph_text(space_text, path, sizes)
    state = GrowthState.from_json(growth["state"]) if growth else initial_state(base)
    graph = graph_for(base, state)
    return grown_space(growth_of(base).space, state), {"arch": arch_entries(graph)}


def growth_assess(trainer, arch_start: dict, assess_with: Callable[[dict, dict, dict], dict]) -> Callable[[dict], dict]:
    """The per-epoch assessment of a growing search: ``assess_with(manifest, arch,
    start, record)`` on the trainer's current model and manifest, with the start values of the
    architecture tensors a growth added taken at the growth."""

    def assess(record: dict) -> dict:
        arch = arch_tensors(trainer.model)
        start = {**arch_start, **{k: torch.tensor(v) for k, v in trainer.grower.arch_added.items()}}
        return assess_with(trainer.manifest, arch, {k: start[k] for k in arch}, record)

    return assess


def _choice_text(choice) -> str:
    return f"{' , '.join(f'{op}({src})' for src, op in choice.edges)} | {choice.combine}"


def probe_loss(model: torch.nn.Module, batch, loss_of) -> float:
    """``loss_of(model, batch)`` in eval mode without gradients, the model's mode kept
    (the loss a growth must not change)."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return float(loss_of(model, batch))
    finally:
        model.train(training)


def growth_marks(metrics: list[dict]) -> list[tuple[float, str]]:
    """Where ``essdsl plot`` marks growth steps: (x in epochs, label) per growth event in
    a run's metrics, at the epoch's end for epoch-triggered growth and at the fraction
    of the epoch for step-triggered growth (label ``s3`` = the member added)."""
    marks = []
    for record in metrics:
        for event in record.get("growth", []) or []:
            x = float(event["epoch"])
            if event.get("at") == "step":
                x = event["epoch"] - 1 + event.get("epoch_fraction", 0.0)
            marks.append((x, f"+{event.get('member', event['size_after'])}"))
    return marks


# ------------------------------------------------------------------ the trainer with growth
from essdsl.nas.bilevel import BilevelOptimizer, arch_masks, split_parameters  # noqa: E402
from essdsl.nas.trainer import Trainer  # noqa: E402


@dataclass
class GrowingTrainer(Trainer):
    """:class:`essdsl.nas.trainer.Trainer` whose supernet grows (see the module docstring).

    ``grower`` decides and performs growth (its ``build(graph)`` makes the task's model
    around a graph); ``probe_batch`` is the fixed batch whose loss (``task.loss`` from no
    carry, eval mode) is recorded before and after each growth (default: the first batch
    of the task's search stream); ``rebuild_step(model)`` prepares a model's training step
    (e.g. ``torch.compile`` of its time step), called once at the start and once per
    growth; ``manifest_of(graph, model)`` the model's manifest (architecture entries for
    the masks, the derivation and the per-epoch summary); ``describe_with(manifest,
    model)`` the per-epoch architecture summary; ``on_growth(event)`` is told of each growth."""

    grower: Optional[Grower] = None
    probe_batch: object = None
    rebuild_step: Optional[Callable[[torch.nn.Module], None]] = None
    manifest_of: Optional[Callable[[CellGraph, torch.nn.Module], dict]] = None
    describe_with: Optional[Callable[[dict, torch.nn.Module], dict]] = None
    on_growth: Optional[Callable[[dict], None]] = None
    step_builds: int = field(default=0, init=False)

    def __post_init__(self):
        super().__post_init__()
        if self.grower is None:
            raise GrowthError("a growing search needs a Grower")
        if self.probe_batch is None:
            self.probe_batch = self.task.search_stream(self.cfg.batch_size, self.device).next()
        self._refresh(self.grower.graph)

    # -- installing a (grown) model
    def _refresh(self, graph: CellGraph) -> None:
        """What is derived from the model: its manifest, the per-epoch summary, the step."""
        if self.manifest_of is not None:
            self.manifest = self.manifest_of(graph, self.model)
        if self.describe_with is not None:
            manifest = self.manifest
            self.describe_arch = lambda m: self.describe_with(manifest, m)
        if self.rebuild_step is not None:
            self.rebuild_step(self.model)
            self.step_builds += 1

    def _install(self, model: torch.nn.Module, graph: CellGraph, maps: Optional[dict]) -> None:
        old_weights, old_arch = dict(self.weights), dict(self.arch)
        old_w_opt = self.w_opt
        old_a_opt = self.bilevel.optimizer if self.bilevel is not None else None
        self.model = model.to(self.device)
        self.weights, self.arch = split_parameters(self.model)
        self.w_opt = self._asgd() if self.progress.asgd else self._sgd()
        self._refresh(graph)
        self.bilevel = BilevelOptimizer(self.weights, self.arch, arch_masks(self.manifest, self.arch), self.cfg, list(self.model.buffers()))
        if maps is not None:  # a growth step: optimizer state follows the parameters
            carry_optimizer_state(old_w_opt, old_weights, self.w_opt, self.weights, maps)
            if old_a_opt is not None:
                carry_optimizer_state(old_a_opt, old_arch, self.bilevel.optimizer, self.arch, maps)

    def _grow(self, epoch: int) -> dict:
        def loss_of(model, batch):
            return self.task.loss(model, batch, None)[0]

        grown = self.grower.grow(self.model, lambda m: probe_loss(m, self.probe_batch, loss_of), epoch, self.step)
        self._install(grown.model, grown.graph, grown.maps)
        # the best epoch so far is of a smaller model: the best is counted again from here
        self.progress.best_metric = self.task.metrics[0].worst
        self.best_state = None
        event = self.grower.events[-1]
        event["member"] = self.grower.plan.member(event["size_after"])
        if self.on_growth is not None:
            self.on_growth(event)
        return event

    # -- checkpoints carry the growth state
    def state(self):
        state = super().state()
        state.run = {**state.run, "growth": self.grower.to_json()}
        return state

    def restore(self, state) -> None:
        growth = (state.run or {}).get("growth")
        if growth is not None and self.grower.load_json(growth):
            graph = self.grower.graph
            self._install(_like(self.grower.build(graph), self.model), graph, None)
        super().restore(state)

    # -- when growth happens
    def _train_step(self):
        if self.grower.due_at_step(self.step):
            event = self._grow(self.epoch + 1)
            done, units = self.train_stream.progress()
            event["at"] = "step"
            event["epoch_fraction"] = round(done / max(units, 1), 4)
        return super()._train_step()

    def _end_epoch(self) -> None:
        finished = len(self.history)
        on_epoch, self.on_epoch = self.on_epoch, None  # told after the growth, with the growth in the record
        try:
            super()._end_epoch()
        finally:
            self.on_epoch = on_epoch
        if len(self.history) == finished:  # rolled back: no epoch ended
            return
        record = self.history[-1]
        if self.grower.due_at_epoch_end(self.epoch, self.progress.valid_history):
            event = self._grow(self.epoch)
            event["at"] = "epoch"
        record["growth_size"] = self.grower.state.size
        events = [e for e in self.grower.events if e["epoch"] == record["epoch"]]
        if events:
            record["growth"] = [dict(e) for e in events]
            self.save_checkpoint()  # the grown model, its growth state and this record
        if self.on_epoch is not None:
            self.on_epoch(record)


def _like(model: torch.nn.Module, reference: torch.nn.Module) -> torch.nn.Module:
    p = next(reference.parameters())
    return model.to(device=p.device, dtype=p.dtype).train(reference.training)


def growing_options(graph: CellGraph, task, seed: int, rebuild_step=None) -> Optional[dict]:
    """The :class:`GrowingTrainer` keyword arguments for a search of ``graph`` on
    ``task`` (None when the space has no grow block): each growth builds the task's
    model around the grown graph (``task.build_model``, weights from ``seed``); the
    manifest the trainer keeps is the grown graph's architecture entries (all that masks,
    derivation and the per-epoch summary read), whatever the task's head."""
    from essdsl.compile.manifest import arch_entries
    from essdsl.lang.growth import growth_of
    from essdsl.nas.derive import arch_summary

    if growth_of(graph) is None:
        return None
    return {
        "grower": Grower(graph, lambda g: task.build_model(g, True, seed)),
        "rebuild_step": rebuild_step,
        "manifest_of": lambda g, m: {"arch": arch_entries(g)},
        "describe_with": lambda manifest, model: arch_summary(manifest, arch_tensors(model)),
    }


def arch_tensors(model: torch.nn.Module) -> dict:
    """The model's architecture weights by their manifest key (``fw.arch.s1_ops`` -> ``arch.s1_ops``)."""
    from essdsl.tasks.base import arch_key, is_arch_parameter

    return {arch_key(n): p for n, p in model.named_parameters() if is_arch_parameter(n)}
