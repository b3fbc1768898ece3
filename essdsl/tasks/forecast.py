"""Multivariate time-series forecasting as a task plug-in (``--task forecast``).

Data (:mod:`essdsl.tasks.forecast_data`): a CSV file (``data``; ``target``,
``columns``, ``time_column``, ``transform="logdiff"``) or, with no data, the
built-in Lorenz-96 series generated from ``data_seed`` (default 0, *not* the run's
seed: runs with different seeds see the same series).  Samples are windows of
``window`` steps; the target is every target series ``horizon`` steps after the
window (LSTNet's convention), split 60/20/20 in time, normalised on train.

Model (:mod:`essdsl.tasks.forecast_model`): linear projection in, the compiled
cell, linear projection out of the last step's output.  Loss: mean squared error
of the normalised forecast.  Metrics (:mod:`essdsl.tasks.forecast_metrics`), on
the original scale: RMSE (selects the best epoch, lower is better), MAE, RSE,
CORR.  Baseline the model must beat: persistence (the last value); the table
printed after a run also has the VAR(p) fitted by least squares
(:func:`baseline_rows`).

Batches: a training epoch is every training sample once, in an order shuffled
from ``(seed, epoch)``; a search's architecture steps read validation samples in
passes shuffled from ``(pass)``, endlessly.  Both streams resume from
``(epoch or pass, position)`` alone.  Nothing is carried between batches: every
window starts from a zero state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch

from essdsl.errors import EssdslError
from essdsl.nas.distributed import example_share
from essdsl.tasks.base import Batch, Metric
from essdsl.tasks.forecast_baselines import baseline_table, persistence
from essdsl.tasks.forecast_data import Windows, log_differences, lorenz96, make_windows, read_csv
from essdsl.tasks.forecast_metrics import forecast_metrics, rmse
from essdsl.tasks.forecast_model import Forecaster

TRANSFORMS = ("none", "logdiff")

# Sizes and hyperparameters of a run.  Small: a search of the two-input space on the
# built-in series takes about 30 s on two loaded CPU cores, a genotype's training 15
# epochs about as long.  The weights are trained with the trainer's SGD, gradient norm
# clipped to 0.25 as DARTS does; lr 1 (not the LM's 20: the loss is a mean squared
# error of normalised values, not a cross-entropy over 10,000 words) was the best of
# 0.3/1/3 for an LSTM on the built-in series.
PRESETS = {
    "search": dict(ninp=16, nhid=32, batch_size=32, epochs=3, lr=1.0, clip=0.25, wd=1e-6, eval_batch_size=256),
    "train": dict(ninp=16, nhid=32, batch_size=32, epochs=15, lr=1.0, clip=0.25, wd=1e-6, eval_batch_size=256),
    "dropouts": dict(dropout=0.0, dropouth=0.0, dropoutx=0.0, dropouti=0.0, dropoute=0.0),
    "final_epochs": 15,  # a search's training of its genotype, as long as 'essdsl train'
}


def defaults(kind: str, options: dict) -> dict:
    """The settings a ``kind`` ("search" or "train") run starts from (the registry's hook)."""
    return {**PRESETS[kind], "dropouts": dict(PRESETS["dropouts"]), "final_epochs": PRESETS["final_epochs"]}


def names_list(names) -> Optional[list[str]]:
    """Series names given as a list or as one comma-separated string (a command-line
    option): ``"a, b"`` -> ``["a", "b"]``; None or empty -> None."""
    if names is None:
        return None
    if isinstance(names, str):
        names = names.split(",")
    names = [n.strip() for n in names if n.strip()]
    return names or None


def load_series(
    data: Optional[str] = None,
    data_seed: int = 0,
    target: Optional[Sequence[str]] = None,
    columns: Optional[Sequence[str]] = None,
    time_column: Optional[str] = None,
    transform: str = "none",
    steps: Optional[int] = None,
    variables: Optional[int] = None,
):
    """The series a run forecasts: the CSV file ``data`` or the built-in Lorenz-96."""
    if transform not in TRANSFORMS:
        raise EssdslError(f"unknown transform '{transform}' (one of: {', '.join(TRANSFORMS)})")
    target, columns = names_list(target), names_list(columns)
    if data is None and (columns or time_column or transform != "none"):
        raise EssdslError(
            "columns, time_column and transform apply to a CSV file (the data option); "
            "the built-in series takes target, steps, variables and data_seed"
        )
    if data is None:
        settings = {k: v for k, v in (("steps", steps), ("variables", variables)) if v is not None}
        series = lorenz96(seed=data_seed, **settings)
        if target:
            unknown = [t for t in target if t not in series.columns]
            if unknown:
                raise EssdslError(f"no series {', '.join(unknown)} in the built-in data (series: {', '.join(series.columns)})")
            series.targets = [series.columns.index(t) for t in target]
    else:
        series = read_csv(data, target=target, columns=columns, time_column=time_column)
    if transform == "logdiff":
        series = log_differences(series)
    return series


class WindowStream:
    """Batches of samples in a seeded shuffled order (see the module docstring).

    ``endless``: wrap around at the end of a pass (a search stream), marking the
    first batch of each new pass ``fresh``; otherwise ``next`` returns None at the
    end of the epoch until :meth:`restart`.
    """

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int, seed: int, endless: bool):
        self.inputs, self.targets = inputs, targets
        self.batch_size = max(1, min(batch_size, len(inputs)))
        self.seed, self.endless = seed, endless
        self.epoch, self.position = 0, 0
        self._order_epoch, self._order = -1, None

    def order(self) -> np.ndarray:
        if self._order_epoch != self.epoch:
            self._order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.inputs))
            self._order_epoch = self.epoch
        return self._order

    def next(self, like: Optional[Batch] = None) -> Optional[Batch]:
        if self.position >= len(self.inputs):
            if not self.endless:
                return None
            self.restart()
        fresh = self.position == 0
        index = torch.as_tensor(self.order()[self.position : self.position + self.batch_size], device=self.inputs.device)
        self.position += len(index)
        x, y = self.inputs[index], self.targets[index]
        return Batch(inputs=(x, y), size=y.numel(), fresh=fresh)

    def restart(self) -> None:
        self.epoch += 1
        self.position = 0

    def progress(self) -> tuple[int, int]:
        return self.position, len(self.inputs)

    def steps_per_epoch(self) -> int:
        return -(-len(self.inputs) // self.batch_size)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


@dataclass
class ForecastTask:
    """Forecasting ``windows`` (see the module docstring)."""

    windows: Windows
    dropouts: dict = field(default_factory=lambda: dict(PRESETS["dropouts"]))
    data: Optional[str] = None
    settings: dict = field(default_factory=dict)  # what load() was given, for the manifest

    name = "forecast"
    metrics = (
        Metric("rmse", higher_is_better=False, label="RMSE"),
        Metric("mae", higher_is_better=False, label="MAE"),
        Metric("rse", higher_is_better=False, label="RSE"),
        Metric("corr", higher_is_better=True, label="CORR"),
    )

    def __post_init__(self):
        self._tensors: dict = {}

    @classmethod
    def load(
        cls,
        data: Optional[str] = None,
        seed: int = 0,
        window: int = 12,
        horizon: int = 1,
        dropouts: Optional[dict] = None,
        bptt: Optional[int] = None,
        **series_options,
    ) -> "ForecastTask":
        """The task on CSV file ``data`` (None: the built-in Lorenz-96); ``series_options``
        are :func:`load_series`'s (target, columns, transform, data_seed, ...).  ``seed``
        (the run's) does not change the data; ``bptt`` (a run-wide setting of the
        language model) means nothing here: a sample is one window."""
        series = load_series(data, **series_options)
        settings = dict(window=window, horizon=horizon, **{k: v for k, v in series_options.items() if v is not None})
        extra = {"dropouts": dict(dropouts)} if dropouts is not None else {}
        return cls(make_windows(series, window, horizon), data=data, settings=settings, **extra)

    # -- what the run records and prints
    def describe(self) -> str:
        return self.windows.describe()

    def fingerprint(self) -> dict:
        s = self.windows.series
        return {
            "name": s.name, "source": s.source, "steps": s.steps, "series": list(s.columns),
            "targets": s.target_names, "window": self.windows.window, "horizon": self.windows.horizon,
            "hash": s.digest(),
        }  # fmt: skip

    # -- the model
    @property
    def series_count(self) -> int:
        return len(self.windows.series.columns)

    @property
    def target_count(self) -> int:
        return len(self.windows.series.targets)

    def model_config(self, search: bool):
        from essdsl.compile import ModelConfig

        return ModelConfig(search=search, **self.dropouts)

    def build(self, graph, search: bool, seed: int, source_text: Optional[str] = None):
        """(model, manifest, cell config): the forecaster around ``graph``'s compiled cell,
        its weights drawn from ``seed``; the manifest is the cell's (``essdsl-cell/1``,
        whose ``arch`` entries the searcher reads) plus a ``head`` entry."""
        from essdsl.compile import build_cell, build_manifest

        torch.manual_seed(seed)
        config = self.model_config(search)
        cell = build_cell(graph, config, impl="generated")
        manifest = build_manifest(graph, config, cell, source_text=source_text, target="cell")
        model = self.wrap_cell(cell, manifest["input_size"], manifest["output_size"])
        head = [p for n, p in model.named_parameters() if not n.startswith("rnn.")]
        manifest["head"] = {
            "task": self.name, "series": self.series_count, "targets": self.target_count,
            "window": self.windows.window, "horizon": self.windows.horizon,
            "parameters": sum(p.numel() for p in head),
        }  # fmt: skip
        return model, manifest, config

    def build_model(self, graph, search: bool, seed: int) -> torch.nn.Module:
        """The forecaster around ``graph``'s compiled cell (its weights drawn from ``seed``)."""
        return self.build(graph, search, seed)[0]

    def wrap_cell(self, cell: torch.nn.Module, ninp: int, nhid: int) -> Forecaster:
        """The forecaster around any cell in the cell contract."""
        return Forecaster(cell, self.series_count, self.target_count, ninp, nhid, dropout=self.dropouts.get("dropout", 0.0))

    # -- data
    def split_tensors(self, split: str, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = (split, str(device))
        if key not in self._tensors:
            s = self.windows.split(split)
            self._tensors[key] = (
                torch.as_tensor(s.inputs, dtype=torch.float32, device=device),
                torch.as_tensor(s.targets, dtype=torch.float32, device=device),
            )
        return self._tensors[key]

    def train_stream(self, batch_size: int, seed: int, device: torch.device) -> WindowStream:
        return WindowStream(*self.split_tensors("train", device), batch_size, seed, endless=False)

    def search_stream(self, batch_size: int, device: torch.device) -> WindowStream:
        return WindowStream(*self.split_tensors("valid", device), batch_size, seed=0, endless=True)

    # -- loss and metrics
    def loss(self, model: torch.nn.Module, batch: Batch, carry):
        windows, targets = batch.inputs
        # loss_weight: a shard's share of the whole batch's samples (see shard_batch)
        return torch.mean((model(windows) - targets) ** 2) * batch.extra.get("loss_weight", 1.0), None

    def shard_batch(self, batch: Batch, rank: int, world_size: int) -> Batch:
        """This process's contiguous block of the batch's samples (data-parallel runs).
        Every sample adds the same number of terms to the mean squared error, so the
        shard's mean is weighted by its share of the samples."""
        windows, targets = batch.inputs
        mine, weight = example_share([1] * len(windows), rank, world_size)
        part = targets[mine]
        return Batch(inputs=(windows[mine], part), size=batch.size, lr_scale=batch.lr_scale, fresh=batch.fresh,
                     extra={**batch.extra, "local_size": part.numel(), "loss_weight": weight})  # fmt: skip

    @torch.no_grad()
    def predict(self, model: torch.nn.Module, split: str, batch_size: int = 256) -> np.ndarray:
        """Forecasts of every sample of ``split`` in the original scale (model in eval mode)."""
        device = next(model.parameters()).device
        inputs, _ = self.split_tensors(split, device)
        was_training = model.training
        model.eval()
        try:
            parts = [model(inputs[i : i + batch_size]) for i in range(0, len(inputs), max(1, batch_size))]
        finally:
            model.train(was_training)
        z = torch.cat(parts).double().cpu().numpy()
        return self.windows.normaliser.invert(z, np.asarray(self.windows.series.targets))

    def evaluate(self, model: torch.nn.Module, split: str, batch_size: int) -> dict:
        pred = self.predict(model, split, max(batch_size, 256))
        s = self.windows.split(split)
        cols = np.asarray(self.windows.series.targets)
        z = self.windows.normaliser.apply(pred, cols)
        loss = float(np.mean((z - s.targets) ** 2))
        return {"loss": loss, **forecast_metrics(s.raw_targets, pred)}

    def baseline(self, split: str = "valid") -> Optional[tuple[str, float]]:
        s = self.windows.split(split)
        return "persistence", rmse(s.raw_targets, persistence(s))

    def baseline_rows(self, split: str = "test") -> dict[str, dict]:
        """Persistence and the validation-selected VAR(p) on ``split``: name -> metrics
        (and ``params``), for the table a run ends with."""
        return baseline_table(self.windows, split)

    def split_size(self, split: str) -> int:
        """Samples in ``split`` (what ``essdsl eval`` reports as its size)."""
        return len(self.windows.split(split))

    def comparison(self, model_rows: dict[str, dict], split: str = "test") -> str:
        """The table a run ends with: ``model_rows`` (name -> metrics, params) next to
        persistence and the VAR on ``split``."""
        return comparison_table(model_rows, self.baseline_rows(split), split)

    def chance_loss(self) -> float:
        """The validation loss of forecasting the training mean (0 after normalisation)."""
        return float(np.mean(self.windows.split("valid").targets ** 2))


def comparison_table(model_rows: dict[str, dict], baseline_rows: dict[str, dict], split: str = "test") -> str:
    """A plain-text table of forecasters and baselines on one split (lower RMSE first)."""
    rows = {**model_rows, **baseline_rows}
    header = f"{'model (' + split + ')':<28} {'RMSE':>9} {'MAE':>9} {'RSE':>7} {'CORR':>7} {'params':>9}"
    lines = [header, "-" * len(header)]
    for name, m in sorted(rows.items(), key=lambda kv: kv[1]["rmse"]):
        params = m.get("params")
        lines.append(
            f"{name:<28} {m['rmse']:>9.4f} {m['mae']:>9.4f} {m['rse']:>7.4f} {m['corr']:>7.4f} "
            f"{params if params is not None else '':>9}"
        )
    return "\n".join(lines)
