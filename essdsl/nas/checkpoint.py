"""The trainer's whole state as one dataclass, saved and restored as a whole.

A checkpoint is :class:`TrainerState` written with ``torch.save`` (plain values and
tensors only, so it is read back with ``weights_only=True``), its sha256 recorded in
the run manifest (:func:`essdsl.nas.runfiles.save_checkpoint`).  Nothing about a run
lives outside it: resuming from it continues bit for bit, and a rollback after a
non-finite loss restores the last good one in memory.

Format history: ``essdsl-checkpoint-1`` (essdsl up to the task layer of issue 13)
kept LM-specific fields (``hidden``, ``search_position``); ``essdsl-checkpoint-2``
keeps each batch stream's state and each stream's carry as the task hands them out.
Older checkpoints are refused with the version that wrote them.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

import torch

from essdsl.nas import runfiles
from essdsl.nas.runconfig import RunError

CHECKPOINT_FORMAT = "essdsl-checkpoint-2"


@dataclass
class Progress:
    """Where the run is and what it has learnt about itself so far."""

    epoch: int = 0  # finished epochs
    step: int = 0  # steps taken in total
    lr: float = 0.0  # the weights' learning rate now (halved by each rollback)
    rollbacks: int = 0
    best_metric: float = float("inf")  # the best value of the task's first metric
    valid_history: list = field(default_factory=list)  # validation loss per epoch (for ASGD's trigger)
    elapsed: float = 0.0  # seconds spent in steps
    epoch_loss_sum: float = 0.0  # sum of loss * batch.size over the epoch so far
    epoch_size: int = 0  # sum of batch.size over the epoch so far
    asgd: bool = False  # the weights' optimizer switched to averaged SGD


@dataclass
class TrainerState:
    """Everything a :class:`essdsl.nas.trainer.Trainer` needs to continue exactly."""

    model: dict  # state_dict, on the CPU
    weight_optimizer: dict
    arch_optimizer: Optional[dict]
    progress: Progress
    rng: dict  # "torch" (and "cuda") generator states
    streams: dict  # "train" / "search": the BatchStream's state_dict (search: None when training)
    carries: dict  # "train" / "search": what Task.loss carries between batches (tensors on the CPU)
    history: list  # one record per finished epoch
    best_model: Optional[dict]  # state_dict of the best epoch by the task's first metric
    config: dict  # RunConfig.to_dict()
    run: dict = field(default_factory=dict)  # what evaluating the run needs (task, space, sizes, ...)

    def to_dict(self) -> dict:
        out = {"format": CHECKPOINT_FORMAT}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = asdict(value) if isinstance(value, Progress) else value
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "TrainerState":
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["progress"] = Progress(**data["progress"])
        return cls(**values)

    def copy(self) -> "TrainerState":
        """An independent copy (the trainer keeps one as the state a rollback returns to)."""
        return copy.deepcopy(self)


def to_device(value: Any, device) -> Any:
    """``value`` (tensors in lists, tuples, dicts) with every tensor on ``device``,
    detached: a carry to store or restore."""
    if isinstance(value, torch.Tensor):
        return value.detach().to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(to_device(v, device) for v in value)
    if isinstance(value, dict):
        return {k: to_device(v, device) for k, v in value.items()}
    return value


def save(state: TrainerState, path) -> None:
    """Write ``state`` atomically, its sha256 recorded in the run manifest beside it."""
    runfiles.save_checkpoint(state.to_dict(), path)


def load_checkpoint(path) -> dict:
    """The checkpoint at ``path`` as a dict, verified (checksum, ``weights_only``
    unpickling, schema, format); a clear :class:`RunError` otherwise."""
    try:
        return runfiles.load_checkpoint(path, CHECKPOINT_FORMAT)
    except runfiles.RunFileError as exc:
        raise RunError(str(exc)) from None


def load(path) -> TrainerState:
    """The verified checkpoint at ``path`` as a :class:`TrainerState`."""
    return TrainerState.from_dict(load_checkpoint(path))


__all__ = ["CHECKPOINT_FORMAT", "Progress", "TrainerState", "load", "load_checkpoint", "save", "to_device"]
