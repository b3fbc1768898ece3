"""The Task protocol: what a job supplies around a compiled cell so that the trainer and
the bilevel searcher never need to know which job they run.

A task is configured once (its data loaded, its settings fixed) and then hands out:

* **data** as :class:`BatchStream` objects: one epoch of training batches, and an
  endless stream of validation batches for the architecture steps of a search;
* **a model** around a cell graph (:meth:`Task.build_model`): the cell compiled by
  essdsl with the task's head (LM: embedding + decoder; tagger: two directions + CRF;
  forecaster: projections in and out).  Architecture weights are the parameters whose
  name has an ``arch`` component (``arch.s1_ops``, ``fw.arch.s1_ops``);
* **a loss** of one batch (:meth:`Task.loss`), which may carry state from one batch
  to the next (LM: the hidden state across BPTT segments);
* **metrics** of a split (:meth:`Task.evaluate`), with a direction each; the first
  of :attr:`Task.metrics` selects the best epoch;
* **a baseline** (:meth:`Task.baseline`) the trained model must beat for a run to be
  called healthy (LM: the unigram model).

The trainer sees only :class:`Batch` objects, a scalar loss, and metric dicts.

Two optional methods the trainer uses when a task has them: ``Task.loss_metrics(loss)
-> dict`` (metrics that follow from a mean loss alone, e.g. the LM's ``ppl``; the
trainer reports them for the training epoch as ``train_<name>``) and
``BatchStream.steps_per_epoch()`` (the expected steps of an epoch where batches vary
in size; default: the stream's ``progress()[1]``).  A ``Batch.lr_scale`` may be a
:class:`fractions.Fraction` (the LM's length/bptt), applied as ``lr * num / den``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol, runtime_checkable

import torch


@dataclass(frozen=True)
class Metric:
    """One number a task reports per split; ``higher_is_better`` fixes its direction."""

    name: str  # key in the dict Task.evaluate returns, e.g. "ppl", "f1", "rmse"
    higher_is_better: bool = False
    label: str = ""  # how a table or a progress line names it (default: name)

    def better(self, a: float, b: float) -> bool:
        """Whether value ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    @property
    def worst(self) -> float:
        return -float("inf") if self.higher_is_better else float("inf")


@dataclass
class Batch:
    """What one step trains on.

    ``inputs`` is what :meth:`Task.loss` needs besides the model (tensors already on the
    device); ``size`` is how many loss terms it holds (tokens, tags, forecast values),
    for averages and throughput; ``lr_scale`` multiplies the weight learning rate of
    this step (LM: segment length over bptt, DARTS's rule; 1 elsewhere); ``fresh``
    means that the carried state must start again (a new epoch, a wrapped stream).
    """

    inputs: Any
    size: int
    lr_scale: float = 1.0
    fresh: bool = False
    extra: dict = field(default_factory=dict)


@runtime_checkable
class BatchStream(Protocol):
    """A resumable sequence of batches.

    A training stream yields one epoch (``next`` returns None at its end, then
    ``restart`` begins the next epoch); a search stream never ends (it wraps around,
    marking the wrapped batch ``fresh``).  ``state_dict``/``load_state_dict`` hold
    everything needed to continue exactly where a checkpoint left off (position,
    random state of variable lengths or shuffling); they are plain Python values.
    """

    def next(self, like: Optional[Batch] = None) -> Optional[Batch]:
        """The next batch; ``like`` is the training batch a search step pairs with
        (LM: a validation segment of the same length)."""

    def restart(self) -> None: ...

    def progress(self) -> tuple[int, int]:
        """(units done, units in one epoch), e.g. rows of the batchified corpus."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class Task(Protocol):
    """One job (language modelling, tagging, forecasting), configured with its data."""

    name: str
    metrics: tuple[Metric, ...]  # metrics[0] selects the best epoch

    def describe(self) -> str:
        """One line for the user: the data (name, sizes) and the objective."""

    def fingerprint(self) -> dict:
        """What identifies the data in a run manifest (name, source, sizes, a hash),
        so that resuming or evaluating on other data is refused."""

    def build_model(self, graph, search: bool, seed: int) -> torch.nn.Module:
        """The task's model around ``graph``'s cell: the supernet when ``search`` and
        the graph is a space, the discrete model otherwise."""

    def train_stream(self, batch_size: int, seed: int, device: torch.device) -> BatchStream: ...

    def search_stream(self, batch_size: int, device: torch.device) -> BatchStream: ...

    def loss(self, model: torch.nn.Module, batch: Batch, carry: Any) -> tuple[torch.Tensor, Any]:
        """Mean training loss of ``batch`` and the state to carry to the next batch of
        the same stream (None when the task carries nothing); ``carry`` is None at the
        start and after a ``fresh`` batch."""

    def evaluate(self, model: torch.nn.Module, split: str, batch_size: int) -> dict[str, float]:
        """Metrics of ``model`` (in eval mode) on ``split`` ("valid" or "test"): always
        ``loss`` (the mean loss the trainer optimises) plus every name in :attr:`metrics`."""

    def baseline(self, split: str = "valid") -> Optional[tuple[str, float]]:
        """(name, value of metrics[0]) of the trivial model the trained one must beat
        (LM: the unigram model), or None."""

    def chance_loss(self) -> float:
        """The loss of guessing (LM: log vocab); a validation loss ten times above it
        means the run diverged even when it is finite."""


def is_arch_parameter(name: str) -> bool:
    """Whether a parameter name is an architecture weight (has an ``arch`` component)."""
    return name.startswith("arch.") or ".arch." in name


def arch_key(name: str) -> str:
    """The manifest's key of an architecture parameter: ``fw.arch.s1_ops`` -> ``arch.s1_ops``."""
    index = name.find("arch.") if name.startswith("arch.") else name.find(".arch.") + 1
    return name[index:]
