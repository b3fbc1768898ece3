"""The settings of one search or training run, and the errors a run raises.

:class:`RunConfig` is what the trainer and the bilevel optimizer read; it is recorded
in the run manifest (``config``) and restored from it on ``--resume``.  Task settings
that only the task reads (the LM's ``bptt``) are kept here too so that a run folder
records every number that decided its result in one place.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from essdsl.errors import EssdslError


class RunError(EssdslError):
    """A run cannot start or continue; the message says why and what to do."""


class Interrupted(EssdslError):
    """Raised after a requested stop (Ctrl-C) once the checkpoint is written."""

    def __init__(self, checkpoint: Path, epoch: int = 0, step: int = 0):
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step  # the epoch it stopped in (from 1)
        super().__init__(f"interrupted; state saved to {checkpoint}")


class Diverged(RunError):
    """The loss stayed non-finite after the allowed rollbacks."""


@dataclass
class RunConfig:
    """Hyperparameters of a search (``search=True``) or a final training run."""

    search: bool = True
    epochs: int = 50
    max_steps: Optional[int] = None
    batch_size: int = 256
    eval_batch_size: int = 10
    bptt: int = 35
    lr: float = 20.0
    wd: float = 5e-7
    clip: float = 0.25
    arch_lr: float = 3e-3
    arch_wd: float = 1e-3
    arch_beta1: float = 0.9
    arch_beta2: float = 0.999
    order: str = "first"  # "first" | "second"
    # second order's Hessian-vector product: "paper" (DARTS eq. 7: perturb w along
    # grad_w' L_val) or "official" (quark0/darts rnn/architect.py: perturb w' along
    # clip(grad_w' L_val) + wd w', divide by 2 eps + 1e-10); docs/semantics.md
    hvp: str = "paper"
    seed: int = 0
    asgd: bool = False  # train mode: switch to averaged SGD when valid stalls
    nonmono: int = 5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class SettingError(RunError, ValueError):
    """A setting that cannot be used.  The message names the setting as the library
    calls it (``epochs``); :meth:`render` names it as the caller does (the CLI's
    ``--epochs``)."""

    def __init__(self, setting: str, template: str, **values):
        self.setting, self.template, self.values = setting, template, values
        super().__init__(self.render(setting))

    def render(self, name: str) -> str:
        return self.template.format(setting=name, **self.values)


def check_settings(values: dict) -> None:
    """Check settings against the option table (:mod:`essdsl.options`); a
    :class:`SettingError` for the first value outside its range."""
    from essdsl.options import RANGES, option_problems

    for name, value in values.items():
        if name in RANGES and option_problems({name: value}, name_of=str):
            limits = RANGES[name]
            raise SettingError(name, "{setting} must be {allowed}, got {value}", allowed=limits.describe(), value=value)
    if values.get("data") is not None and values.get("synthetic_tokens") is not None:
        raise SettingError("synthetic_tokens", "{setting} sets the size of the built-in corpus; it cannot be combined with data")
