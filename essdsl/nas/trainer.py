"""The trainer: one search (bilevel) or training run of a model on a :class:`Task`.

The trainer sees only :class:`essdsl.tasks.base.Batch` objects from the task's batch
streams, the scalar ``task.loss(model, batch, carry)`` and the metric dicts of
``task.evaluate``; what a batch holds, what is carried between batches (LM: the
hidden state) and what a metric means is the task's business.

Per step: in a search, one architecture step (:class:`essdsl.nas.bilevel.BilevelOptimizer`)
on the search stream's batch paired with the training batch, then one SGD step of
the model weights (gradient clipped, learning rate times ``batch.lr_scale``).
``search=False`` trains the weights only (the final-training recipe, with an optional
switch to averaged SGD when the validation loss stalls).  The run checkpoints at
the end of every epoch and on Ctrl-C (:mod:`essdsl.nas.checkpoint`: one
:class:`TrainerState`), resumes to the same result, and rolls back to the last good
state with a halved learning rate when the loss stops being finite.
"""

from __future__ import annotations

import contextlib
import copy
import math
import signal
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from essdsl.nas import checkpoint, distributed
from essdsl.nas.bilevel import BilevelOptimizer, arch_masks, split_parameters
from essdsl.nas.checkpoint import Progress, TrainerState, to_device
from essdsl.nas.runconfig import Diverged, Interrupted, RunConfig, RunError
from essdsl.tasks.base import Batch, Task

MAX_ROLLBACKS = 3
ABSURD_LOSS_FACTOR = 10.0  # see usable_validation_loss


@dataclass
class StepInfo:
    """What a progress display needs after each step."""

    epoch: int  # finished epochs
    epochs: int
    step: int  # steps taken in total
    total_steps: Optional[int]  # --max-steps
    done: int  # units of the epoch done (the training stream's progress)
    units: int  # units in one epoch
    loss: float
    items_per_s: float  # batch.size per second (LM: tokens)
    steps_per_epoch: int


def scaled_lr(lr: float, scale) -> float:
    """``lr`` times a batch's ``lr_scale``.  A :class:`~fractions.Fraction` scale (the
    LM's segment length over bptt) is applied as ``lr * numerator / denominator``, the
    order DARTS computes it in, so the step's learning rate is the same float."""
    if isinstance(scale, Fraction):
        return lr * scale.numerator / scale.denominator
    return lr * scale


@dataclass
class Trainer:
    """One search or training run of ``model`` on ``task``, checkpointed in ``run_dir``.

    ``describe_arch(model) -> dict`` (search only) returns extra per-epoch entries from
    the architecture weights (derived genotype, entropies, θ); ``assess_epoch(record)
    -> dict`` more entries computed from the epoch's record (search health).  Both are
    stored with the record, so checkpoints and metrics keep them.  ``run_info`` is
    stored in every checkpoint (what evaluating the run needs: task, space, sizes).
    """

    model: torch.nn.Module
    task: Task
    cfg: RunConfig
    run_dir: Path
    manifest: dict = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint_name: str = "checkpoint.pt"
    describe_arch: Optional[Callable[[torch.nn.Module], dict]] = None
    on_step: Optional[Callable[[StepInfo], None]] = None
    on_epoch: Optional[Callable[[dict], None]] = None
    run_info: dict = field(default_factory=dict)
    assess_epoch: Optional[Callable[[dict], dict]] = None

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        self.model.to(self.device)
        weights, arch = split_parameters(self.model)
        if self.cfg.search and not arch:
            raise RunError("the model has no architecture weights (arch.*): nothing to search; use 'essdsl train' for a genotype")
        if not self.cfg.search:
            for p in arch.values():
                p.requires_grad_(False)
            arch = {}
        self.weights, self.arch = weights, arch
        # data parallel (torchrun): every process walks the same batches and keeps its share
        parallel = distributed.current()
        self.train_stream = distributed.shard_stream(self.task, self.task.train_stream(self.cfg.batch_size, self.cfg.seed, self.device), parallel)
        self.search_stream = distributed.shard_stream(
            self.task, self.task.search_stream(self.cfg.batch_size, self.device) if self.cfg.search else None, parallel
        )
        self._replica = distributed.prepare_replica(self.model, parallel)
        torch.manual_seed(self.cfg.seed)
        self.progress = Progress(lr=self.cfg.lr, best_metric=self.task.metrics[0].worst)
        self.w_opt = self._sgd()
        self.bilevel = (
            BilevelOptimizer(weights, arch, arch_masks(self.manifest, arch), self.cfg, list(self.model.buffers()))
            if self.cfg.search
            else None
        )
        self.carry: Any = None  # what task.loss carries between training batches
        self.search_carry: Any = None  # and between search batches
        self.history: list[dict] = []
        self.best_state: Optional[dict] = None
        self.last_size = 0
        self.notes: list[str] = []
        self._stop_requested = False
        self._stop_here = False  # asked on this process (data parallel: not yet agreed)
        self._good_state: Optional[TrainerState] = None

    # -- the progress fields callers read
    epoch = property(lambda self: self.progress.epoch)
    step = property(lambda self: self.progress.step)
    lr = property(lambda self: self.progress.lr)
    rollbacks = property(lambda self: self.progress.rollbacks)

    # -- optimizers
    def _sgd(self):
        return torch.optim.SGD(list(self.weights.values()), lr=self.cfg.lr, weight_decay=self.cfg.wd)

    def _asgd(self):
        return torch.optim.ASGD(list(self.weights.values()), lr=self.lr, t0=0, lambd=0.0, weight_decay=self.cfg.wd)

    @property
    def steps_per_epoch(self) -> int:
        """Expected steps in one epoch (the stream's estimate where batches vary in size)."""
        estimate = getattr(self.train_stream, "steps_per_epoch", None)
        return estimate() if estimate is not None else max(1, self.train_stream.progress()[1])

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / self.checkpoint_name

    # -- loss
    def loss_fn(self, batch: Batch, carry):
        return self.task.loss(self.model, batch, carry)

    # -- state
    def state(self) -> TrainerState:
        """The whole state, copied (later steps do not change it)."""
        cuda = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        return TrainerState(
            model={k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            weight_optimizer=copy.deepcopy(self.w_opt.state_dict()),
            arch_optimizer=copy.deepcopy(self.bilevel.optimizer.state_dict()) if self.bilevel else None,
            progress=copy.deepcopy(self.progress),
            rng={"torch": torch.get_rng_state(), "cuda": cuda},
            streams={"train": self.train_stream.state_dict(), "search": self.search_stream.state_dict() if self.search_stream else None},
            carries=distributed.carries_of_all(distributed.current(), {"train": to_device(self.carry, "cpu"), "search": to_device(self.search_carry, "cpu")}),
            history=copy.deepcopy(self.history),
            best_model=self.best_state,
            config=self.cfg.to_dict(),
            run=dict(self.run_info),
        )

    def restore(self, state: TrainerState) -> None:
        """Continue from ``state`` (a checkpoint's or the last good one)."""
        try:
            self.model.load_state_dict(state.model)
            self.progress = copy.deepcopy(state.progress)
            self.w_opt = self._asgd() if self.progress.asgd else self._sgd()
            self.w_opt.load_state_dict(state.weight_optimizer)
            if self.bilevel is not None:
                self.bilevel.optimizer.load_state_dict(state.arch_optimizer)
            torch.set_rng_state(state.rng["torch"])
            if state.rng.get("cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(state.rng["cuda"], self.device)
            self.train_stream.load_state_dict(state.streams["train"])
            if self.search_stream is not None:
                self.search_stream.load_state_dict(state.streams["search"])
            carries = distributed.own_carries(distributed.current(), state.carries)
            self.carry = to_device(carries["train"], self.device)
            self.search_carry = to_device(carries["search"], self.device)
            self.history = copy.deepcopy(state.history)
            self.best_state = state.best_model
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise RunError(f"checkpoint does not match this model or is damaged ({type(exc).__name__}: {str(exc)[:200]})") from None

    def save_checkpoint(self) -> Path:
        state = self.state()
        if distributed.current().is_main:  # rank 0 alone writes
            checkpoint.save(state, self.checkpoint_path)  # with its sha256 in the run manifest
        self._good_state = state
        return self.checkpoint_path

    def resume(self) -> None:
        self.restore(distributed.on_main(distributed.current(), lambda: checkpoint.load(self.checkpoint_path)))
        self._good_state = self.state()

    # -- evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "valid") -> dict:
        """The task's metrics of the model on ``split`` (with ASGD's averaged weights when active)."""
        with swapped_parameters(self.model, self._averaged_weights() if self.progress.asgd else None):
            return self.task.evaluate(self.model, split, self.cfg.eval_batch_size)

    def _averaged_weights(self):
        averaged = {}
        for name, p in self.weights.items():
            st = self.w_opt.state.get(p, {})
            if "ax" in st:
                averaged[name] = st["ax"]
        return averaged

    # -- one step
    def _train_step(self) -> Optional[float]:
        """One step on the next training batch: its loss (NaN when not finite, nothing
        changed then), or None at the end of the epoch."""
        batch = self.train_stream.next()
        if batch is None:
            return None
        if self.model is not self._replica:  # replaced (growth): rank 0's, synchronised, on every process
            self._replica = distributed.prepare_replica(self.model, distributed.current())
        self.model.train()
        if batch.fresh:
            self.carry = None
        if self.bilevel is not None:
            search_batch = self.search_stream.next(like=batch)
            if search_batch.fresh:
                self.search_carry = None
            if not self.arch_update(batch, search_batch):
                return math.nan
        value = self.weight_update(batch)
        if not math.isfinite(value):
            return math.nan
        self.last_size = batch.size
        self.progress.epoch_loss_sum += value * batch.size
        self.progress.epoch_size += batch.size
        return value

    def _eta(self, batch: Batch) -> float:
        """The step's learning rate: lr scaled by the batch (LM: segment length over bptt)."""
        return scaled_lr(self.lr, batch.lr_scale)

    def arch_update(self, batch: Batch, search_batch: Batch) -> bool:
        """One architecture step (first or second order, per the config) from the
        training batch and its paired search batch; the search carry moves on.  False,
        with the architecture unchanged, when the validation loss or a gradient is
        not finite."""
        grads, val_loss, self.search_carry = self.bilevel.arch_gradient(
            self.loss_fn, (batch, self.carry), (search_batch, self.search_carry), self._eta(batch)
        )
        if not math.isfinite(float(val_loss)) or not all(torch.isfinite(g).all() for g in grads):
            return False
        self.bilevel.step(grads)
        return True

    def weight_update(self, batch: Batch) -> float:
        """One SGD step of the model weights on a training batch (gradient clipped,
        lr scaled by the batch); the training carry moves on.  Returns the loss; when
        it is not finite, no weight is changed."""
        for group in self.w_opt.param_groups:
            group["lr"] = self._eta(batch)
        try:
            loss, self.carry = self.loss_fn(batch, self.carry)
            self.w_opt.zero_grad(set_to_none=True)
            for p in self.arch.values():
                p.grad = None
            value = self._agree(float(loss.detach()))
            if not math.isfinite(value):
                return math.nan
            loss.backward()
            distributed.average_grads_(distributed.current(), self.weights.values())
            torch.nn.utils.clip_grad_norm_(list(self.weights.values()), self.cfg.clip)
            self.w_opt.step()
            distributed.average_buffers_(distributed.current(), self.model)  # per-process BatchNorm statistics only
            for p in self.arch.values():
                p.grad = None
            return value
        finally:
            for group in self.w_opt.param_groups:
                group["lr"] = self.lr

    def _rollback(self, reason: str) -> None:
        if self.rollbacks >= MAX_ROLLBACKS or self._good_state is None:
            raise Diverged(divergence_message(reason, self.lr, self.checkpoint_path, self.notes))
        new_lr = self.lr / 2
        rollbacks = self.rollbacks + 1
        self.restore(self._good_state)
        self.progress.lr = new_lr
        self.progress.rollbacks = rollbacks
        for group in self.w_opt.param_groups:
            group["lr"] = self.lr
        self._good_state = self.state()
        self.notes.append(f"{reason}: rolled back to epoch {self.epoch} step {self.step}, lr halved to {self.lr:g}")

    def _agree(self, loss: float) -> float:
        """The step's mean loss over all processes and, data parallel, whether any of
        them was asked to stop: one all-reduce, so that every process stops after the
        same step (in one process: the loss itself, and a stop acts at once)."""
        parallel = distributed.current()
        (loss,), stop = distributed.step_consensus(parallel, [loss], self._stop_here)
        if parallel.enabled:
            self._stop_requested = stop
        return loss

    # -- the loop
    def request_stop(self) -> None:
        self._stop_here = True  # data parallel: acted on once every process knows (_agree)
        if not distributed.current().enabled:
            self._stop_requested = True

    def run(self) -> list[dict]:
        """Train until ``epochs`` or ``max_steps``; returns the per-epoch history."""
        cfg = self.cfg
        if self._good_state is None:
            self._good_state = self.state()
        while self.epoch < cfg.epochs and not self._budget_spent():
            while not self._budget_spent():
                t0 = time.time()
                loss = self._train_step()
                if loss is None:
                    break
                if not math.isfinite(loss):
                    self._rollback(f"the loss became {loss} at epoch {self.epoch + 1}, step {self.step + 1}")
                    continue
                self.progress.step += 1
                dt = time.time() - t0
                self.progress.elapsed += dt
                if self.on_step is not None:
                    done, units = self.train_stream.progress()
                    self.on_step(
                        StepInfo(self.epoch, cfg.epochs, self.step, cfg.max_steps, done, units, loss,
                                 self.last_size / max(dt, 1e-9), self.steps_per_epoch)  # fmt: skip
                    )
                if self._stop_requested:
                    path = self.save_checkpoint()
                    distributed.barrier(distributed.current(), "the checkpoint")  # no rank exits before it is written
                    raise Interrupted(path, self.epoch + 1, self.step)
            self._end_epoch()
            if self._stop_requested:
                distributed.barrier(distributed.current(), "the checkpoint")
                raise Interrupted(self.checkpoint_path, self.epoch + 1, self.step)
        return self.history

    def _budget_spent(self) -> bool:
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps

    def _end_epoch(self) -> None:
        cfg, progress = self.cfg, self.progress
        # every process evaluates (the same model); rank 0's numbers decide for all
        valid = distributed.broadcast_object(distributed.current(), self.evaluate())
        valid_loss = valid["loss"]
        if not usable_validation_loss(valid_loss, self.task.chance_loss()) or not all(torch.isfinite(p).all() for p in self.weights.values()):
            self._rollback(f"the validation loss became {valid_loss:g} at the end of epoch {self.epoch + 1}")
            return
        train_loss = progress.epoch_loss_sum / max(progress.epoch_size, 1)
        done, units = self.train_stream.progress()
        record = {"epoch": self.epoch + 1, "step": self.step, "train_loss": train_loss}
        record.update({f"train_{k}": v for k, v in loss_metrics(self.task, train_loss).items()})
        record.update({f"valid_{k}": v for k, v in valid.items()})
        record.update({
            "lr": self.lr,
            "elapsed_s": round(progress.elapsed, 3),
            "optimizer": "asgd" if progress.asgd else "sgd",
            # below 1 when --max-steps ended the run inside the epoch
            "epoch_fraction": round(min(1.0, done / max(units, 1)), 4),
        })  # fmt: skip
        if self.describe_arch is not None and self.arch:
            record.update(self.describe_arch(self.model))
        if self.assess_epoch is not None:
            record.update(self.assess_epoch(record))
        self.history.append(record)
        first = self.task.metrics[0]
        if first.better(valid[first.name], progress.best_metric):
            progress.best_metric = valid[first.name]
            self.best_state = self._current_eval_weights()
        earlier = progress.valid_history[: len(progress.valid_history) - cfg.nonmono]
        if cfg.asgd and not progress.asgd and earlier:
            if valid_loss > min(earlier):  # no better than nonmono epochs ago: valid stalled
                progress.asgd = True
                self.w_opt = self._asgd()
                record["switched_to_asgd"] = True
        progress.valid_history.append(valid_loss)
        progress.epoch += 1
        self.train_stream.restart()
        self.carry = None
        progress.epoch_loss_sum = 0.0
        progress.epoch_size = 0
        self.save_checkpoint()
        if self.on_epoch is not None:
            self.on_epoch(record)

    def _current_eval_weights(self) -> dict:
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        if self.progress.asgd:
            names = {id(p): n for n, p in self.weights.items()}
            for p, st in self.w_opt.state.items():
                if "ax" in st and id(p) in names:
                    state[names[id(p)]] = st["ax"].detach().cpu().clone()
        return state


def loss_metrics(task: Task, loss: float) -> dict:
    """The metrics that are a function of a mean loss alone (LM: ``ppl``), which the
    trainer reports for the training epoch too; a task without them reports none."""
    compute = getattr(task, "loss_metrics", None)
    return compute(loss) if compute is not None else {}


@contextlib.contextmanager
def swapped_parameters(model: torch.nn.Module, values: Optional[dict]):
    """Replace some parameters of ``model`` (name -> tensor, e.g. ASGD's averages) for a while."""
    params = dict(model.named_parameters())
    saved = {}
    with torch.no_grad():
        for name, value in (values or {}).items():
            saved[name] = params[name].detach().clone()
            params[name].copy_(value)
    try:
        yield model
    finally:
        with torch.no_grad():
            for name, value in saved.items():
                params[name].copy_(value)


def usable_validation_loss(loss: float, chance_loss: float) -> bool:
    """Whether a state with this validation loss may become the state a rollback
    returns to: finite, and not absurd.  Guessing costs ``chance_loss`` (LM: log vocab
    nats a token); a model ten times worse than that (e.g. 5.6e20 nats) has diverged
    even though the number is finite."""
    return math.isfinite(loss) and loss <= ABSURD_LOSS_FACTOR * max(chance_loss, 2.0)


def divergence_message(reason: str, lr: float, checkpoint: Path, notes: list[str]) -> str:
    """Why a run stopped: the rollbacks tried so far, and the last good state only
    if it is on disk (a run that diverges in its first epoch has no checkpoint)."""
    if Path(checkpoint).exists():
        where = f"the last good state is in {checkpoint} (from the end of the last good epoch)"
    else:
        where = "no checkpoint was written yet (the run diverged before its first epoch ended)"
    tried = "".join(f"\n  rollback: {note}" for note in notes)
    return (
        f"{reason} even after halving the learning rate {MAX_ROLLBACKS} times (lr now {lr:g}); {where}. "
        f"Try a smaller --lr or --arch-lr.{tried}"
    )


# ----------------------------------------------------------------- Ctrl-C
def stop_on_signals(trainer: "Trainer", message: Callable[[], None] = lambda: None):
    """The context that turns a stop request into a checkpoint: Ctrl-C in one process
    (:class:`StopOnSigint`; a second Ctrl-C interrupts at once); SIGINT or SIGTERM on
    any rank of a data-parallel run (torchrun forwards both to every rank and kills
    them 30 s later, so there a second signal is no 'at once')."""
    if not distributed.current().enabled:
        return StopOnSigint(trainer, message)

    def on_request():
        message()
        trainer.request_stop()

    return distributed.StopSignals(on_request, interrupt_on_repeat=False)


class StopOnSigint:
    """Context manager: the first SIGINT asks ``trainer`` to stop after the
    current step (it then checkpoints); a second one interrupts at once."""

    def __init__(self, trainer: Trainer, message: Callable[[], None] = lambda: None):
        self.trainer = trainer
        self.message = message
        self.previous = None
        self.count = 0

    def _handler(self, signum, frame):
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        self.message()
        self.trainer.request_stop()

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not in the main thread
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False

