"""Multivariate time-series data for the ``forecast`` task.

Sources
-------
* **CSV** (:func:`read_csv`): a header line, then one row per time step, oldest
  first.  An optional *time column* (named with ``time_column``, or a first column
  headed ``time``, ``date``, ``datetime``, ``timestamp``, ``period`` or ``index``)
  is kept as labels and never used as a series; every other column must be
  numeric.  An empty field, ``NaN``/``inf`` or a value that is not a number is
  rejected as ``file:line: error: message`` (:class:`SeriesDataError`), never
  silently filled.  ``columns`` restricts the series read; ``target`` names the
  series to forecast (default: all of them).  Every series read is a model input.
* **Lorenz-96** (:func:`lorenz96`): the built-in default, generated from a seed
  (see the function for every constant), so that ``--task forecast`` runs without
  a data folder.
* **macrodata** (:func:`macrodata`): US quarterly macro data, the classic VAR
  setting: 100 x log-differences (quarterly growth in percent) of realgdp,
  realcons and realinv; 202 steps.

Windows and splits (:class:`Windows`)
-------------------------------------
A sample forecasts the target series at step ``tau`` from the ``window`` steps
ending ``horizon`` steps earlier: inputs are rows ``tau - horizon - window + 1 ..
tau - horizon`` (every series), the target is row ``tau`` (target series only);
``horizon = 1`` is the next step.  This is the LSTNet convention (Lai et al. 2018):
one value per series at distance ``horizon``, not the whole path.

The series is cut chronologically into train / valid / test by row (default
0.6 / 0.2 / 0.2, as LSTNet).  A sample belongs to the split of its target row; its
inputs may reach back into the previous split (those values are in the past at
forecast time), but no target of one split is ever inside another split.
Normalisation (per series: subtract the mean, divide by the standard deviation)
is fitted on the training rows only and applied to all rows; metrics are computed
after mapping predictions back to the original scale.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from essdsl.tasks.corpus import DataError

SPLITS = ("train", "valid", "test")
TIME_COLUMN_NAMES = ("time", "date", "datetime", "timestamp", "period", "index")
MACRODATA_SERIES = ("realgdp", "realcons", "realinv")


class SeriesDataError(DataError):
    """A series file cannot be used.  Rendered ``file:line: error: message`` when the
    problem has a line (``file: error: message`` otherwise)."""

    def __init__(self, path: str, message: str, line: int = 0):
        self.path = str(path)
        self.line = line
        self.detail = message
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: error: {message}", located=True)


@dataclass
class Series:
    """A multivariate series: ``values[t, i]`` is series ``columns[i]`` at step ``t``.

    ``targets`` indexes the columns to forecast.  ``labels`` are the time column's
    entries (empty when there is none).  ``lines[t]`` is the source line of step
    ``t`` (0 for generated data), for messages about a step.
    """

    name: str
    columns: list[str]
    values: np.ndarray  # (steps, series) float64
    targets: list[int]
    source: str = ""
    labels: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return int(self.values.shape[0])

    @property
    def target_names(self) -> list[str]:
        return [self.columns[i] for i in self.targets]

    def digest(self) -> str:
        """sha256 of the values, columns and targets: what identifies the data in a run."""
        h = hashlib.sha256()
        h.update(np.ascontiguousarray(self.values, dtype="<f8").tobytes())
        h.update(repr((self.columns, self.targets)).encode())
        return h.hexdigest()


# ------------------------------------------------------------------------- CSV
def _is_number(text: str) -> Optional[float]:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def read_csv(
    path,
    target: Optional[Sequence[str]] = None,
    columns: Optional[Sequence[str]] = None,
    time_column: Optional[str] = None,
) -> Series:
    """Read a CSV series (see the module docstring); every problem is a
    :class:`SeriesDataError` naming the file and line."""
    path = Path(path)
    shown = str(path)
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise SeriesDataError(shown, "is a directory, expected a CSV file") from None
    except OSError as exc:
        raise SeriesDataError(shown, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SeriesDataError(shown, "not UTF-8 text", line) from None
    reader = csv.reader(io.StringIO(text, newline=""), skipinitialspace=True, strict=True)
    try:
        rows = []
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as exc:
        raise SeriesDataError(shown, f"malformed CSV: {exc}", reader.line_num) from None
    rows = [(n, r) for n, r in rows if any(cell.strip() for cell in r)]  # blank lines carry nothing
    if not rows:
        raise SeriesDataError(shown, "empty file: expected a header line and rows of numbers")
    header_line, header = rows[0]
    header = [h.strip() for h in header]
    for k, name in enumerate(header):
        if not name:
            raise SeriesDataError(shown, f"column {k + 1} has no name in the header", header_line)
        if name in header[:k]:
            raise SeriesDataError(shown, f"column name '{name}' appears twice in the header", header_line)
    if time_column is None and header[0].lower() in TIME_COLUMN_NAMES:
        time_column = header[0]
    if time_column is not None and time_column not in header:
        raise SeriesDataError(shown, f"no time column '{time_column}' (columns: {', '.join(header)})", header_line)
    series_names = [h for h in header if h != time_column]
    if columns:
        for name in columns:
            if name not in series_names:
                raise SeriesDataError(shown, f"no column '{name}' (series: {', '.join(series_names)})", header_line)
        series_names = [h for h in series_names if h in set(columns)]
    if not series_names:
        raise SeriesDataError(shown, "no numeric series column (only a time column)", header_line)
    target = list(target) if target else list(series_names)
    for name in target:
        if name not in series_names:
            raise SeriesDataError(shown, f"target '{name}' is not a series column (series: {', '.join(series_names)})", header_line)
    index = {name: header.index(name) for name in series_names}
    time_index = header.index(time_column) if time_column is not None else None
    body = rows[1:]
    if not body:
        raise SeriesDataError(shown, "no rows after the header", header_line)
    values = np.empty((len(body), len(series_names)), dtype=np.float64)
    labels, lines = [], []
    for t, (line, row) in enumerate(body):
        if len(row) != len(header):
            raise SeriesDataError(shown, f"expected {len(header)} fields as in the header, found {len(row)}", line)
        for j, name in enumerate(series_names):
            cell = row[index[name]].strip()
            if not cell:
                raise SeriesDataError(shown, f"missing value in column '{name}'", line)
            value = _is_number(cell)
            if value is None:
                raise SeriesDataError(shown, f"column '{name}': '{cell[:40]}' is not a finite number", line)
            values[t, j] = value
        if time_index is not None:
            labels.append(row[time_index].strip())
        lines.append(line)
    return Series(
        name=path.stem,
        columns=series_names,
        values=values,
        targets=[series_names.index(name) for name in target],
        source=shown,
        labels=labels,
        info={"lines": lines},
    )


def log_differences(series: Series, scale: float = 100.0) -> Series:
    """``scale * (log x[t] - log x[t-1])`` of every column (one step shorter); a value
    that is not positive is an error at its source line."""
    bad = np.argwhere(series.values <= 0)
    if bad.size:
        t, j = bad[0]
        lines = series.info.get("lines") or []
        line = lines[t] if t < len(lines) else 0
        raise SeriesDataError(
            series.source or series.name,
            f"column '{series.columns[j]}': {series.values[t, j]:g} has no logarithm (log-differences need positive values)",
            line,
        )
    values = scale * np.diff(np.log(series.values), axis=0)
    info = dict(series.info, transform=f"{scale:g} * log-difference")
    if "lines" in info:
        info["lines"] = info["lines"][1:]
    return Series(
        name=series.name,
        columns=list(series.columns),
        values=values,
        targets=list(series.targets),
        source=series.source,
        labels=series.labels[1:],
        info=info,
    )


def macrodata(path, target: Optional[Sequence[str]] = None) -> Series:
    """The classic VAR setting on statsmodels' US macrodata (quarterly, 1959Q1-2009Q3):
    100 x log-differences of realgdp, realcons and realinv (percent growth per quarter),
    all three forecast unless ``target`` narrows them."""
    raw = read_csv(path, target=target or MACRODATA_SERIES, columns=MACRODATA_SERIES)
    out = log_differences(raw)
    out.name = "macrodata"
    return out


# ------------------------------------------------------------------- Lorenz-96
def lorenz96_derivative(x: np.ndarray, forcing: np.ndarray) -> np.ndarray:
    """dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F_i, indices cyclic (Lorenz 1996)."""
    return (np.roll(x, -1) - np.roll(x, 2)) * np.roll(x, 1) - x + forcing


def rk4_step(x: np.ndarray, forcing: np.ndarray, dt: float) -> np.ndarray:
    """One classical Runge-Kutta step of :func:`lorenz96_derivative`."""
    k1 = lorenz96_derivative(x, forcing)
    k2 = lorenz96_derivative(x + 0.5 * dt * k1, forcing)
    k3 = lorenz96_derivative(x + 0.5 * dt * k2, forcing)
    k4 = lorenz96_derivative(x + dt * k3, forcing)
    return x + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)


def lorenz96(
    steps: int = 2000,
    variables: int = 8,
    forcing: float = 8.0,
    forcing_spread: float = 0.5,
    noise: float = 0.1,
    dt: float = 0.05,
    substeps: int = 5,
    spinup: int = 500,
    seed: int = 0,
) -> Series:
    """The built-in default series: Lorenz-96 with ``variables`` coupled variables.

    * Forcing ``F_i = forcing + forcing_spread * u_i``, ``u_i`` uniform in [-1, 1]
      drawn from ``seed`` (F = 8 is chaotic; the spread makes the variables differ).
    * Start ``x_i = F_i + 0.01 * N(0, 1)``; integrate with RK4 at step
      ``dt / substeps``; drop the first ``spinup`` samples (the transient); keep one
      sample every ``dt`` time units (0.05 = "6 hours" in Lorenz's scaling).
    * Observations ``x + noise * N(0, 1)``, i.i.d. per value, from the same seed.

    Deterministic for a given set of arguments; the values are float64.
    """
    if steps < 1 or variables < 4:
        raise DataError("Lorenz-96 needs at least 1 step and 4 variables")
    rng = np.random.default_rng(seed)
    f = forcing + forcing_spread * rng.uniform(-1.0, 1.0, size=variables)
    x = f + 0.01 * rng.standard_normal(variables)
    h = dt / substeps
    out = np.empty((steps, variables), dtype=np.float64)
    for t in range(spinup + steps):
        for _ in range(substeps):
            x = rk4_step(x, f, h)
        if t >= spinup:
            out[t - spinup] = x
    clean = out.copy()
    out += noise * rng.standard_normal(out.shape)
    settings = dict(
        steps=steps, variables=variables, forcing=forcing, forcing_spread=forcing_spread,
        noise=noise, dt=dt, substeps=substeps, spinup=spinup, seed=seed,
    )  # fmt: skip
    return Series(
        name="lorenz96",
        columns=[f"x{i}" for i in range(variables)],
        values=out,
        targets=list(range(variables)),
        source="builtin:lorenz96(" + ", ".join(f"{k}={v}" for k, v in settings.items()) + ")",
        info={"settings": settings, "forcing": f.tolist(), "clean": clean},
    )


# --------------------------------------------------------------------- windows
@dataclass
class Normaliser:
    """Per-series affine map fitted on the training rows: z = (x - mean) / std."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, rows: np.ndarray) -> "Normaliser":
        mean = rows.mean(axis=0)
        std = rows.std(axis=0)
        # A series constant over the training rows carries no scale; leave it unscaled
        # rather than dividing by zero.
        std = np.where(std > 0, std, 1.0)
        return cls(mean, std)

    def apply(self, x: np.ndarray, cols=slice(None)) -> np.ndarray:
        return (x - self.mean[cols]) / self.std[cols]

    def invert(self, z: np.ndarray, cols=slice(None)) -> np.ndarray:
        return z * self.std[cols] + self.mean[cols]


@dataclass
class SplitWindows:
    """The samples of one split: ``inputs`` (n, window, series) and ``targets``
    (n, targets), both normalised; ``raw_targets`` and ``last_raw`` in the original
    scale (``last_raw``: the last input row's target series, what persistence says)."""

    inputs: np.ndarray
    targets: np.ndarray
    raw_targets: np.ndarray
    last_raw: np.ndarray
    target_rows: np.ndarray  # the row index tau of each sample's target

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


@dataclass
class Windows:
    """A series cut into train/valid/test samples (see the module docstring)."""

    series: Series
    window: int
    horizon: int
    bounds: tuple[int, int]  # first valid row, first test row
    normaliser: Normaliser
    splits: dict

    def split(self, name: str) -> SplitWindows:
        if name not in SPLITS:
            raise DataError(f"unknown split '{name}' (one of: {', '.join(SPLITS)})")
        return self.splits[name]

    @property
    def train_rows(self) -> np.ndarray:
        return self.series.values[: self.bounds[0]]

    def describe(self) -> str:
        sizes = ", ".join(f"{s} {len(self.splits[s]):,}" for s in SPLITS)
        targets = ", ".join(self.series.target_names)
        if len(targets) > 60:
            targets = f"{len(self.series.targets)} series"
        return (
            f"{self.series.name}: {self.series.steps:,} steps x {len(self.series.columns)} series, "
            f"forecast {targets} {self.horizon} step(s) ahead from {self.window}; samples {sizes}"
        )


def make_windows(series: Series, window: int, horizon: int = 1, fractions=(0.6, 0.2)) -> Windows:
    """Cut ``series`` into normalised samples (see the module docstring)."""
    if window < 1:
        raise DataError(f"the input window must be at least 1 step, not {window}")
    if horizon < 1:
        raise DataError(f"the horizon must be at least 1 step, not {horizon}")
    train_frac, valid_frac = fractions
    if not (0 < train_frac and 0 < valid_frac and train_frac + valid_frac < 1):
        raise DataError(f"split fractions {train_frac}/{valid_frac} leave no test rows")
    n = series.steps
    valid_start = int(train_frac * n)
    test_start = int((train_frac + valid_frac) * n)
    first_target = window + horizon - 1
    counts = (valid_start - first_target, test_start - valid_start, n - test_start)
    if min(counts) < 1:
        raise DataError(
            f"{series.source or series.name}: {n} steps are too few for a window of {window} and a horizon of "
            f"{horizon} (train/valid/test samples: {counts[0]}/{counts[1]}/{counts[2]})"
        )
    norm = Normaliser.fit(series.values[:valid_start])
    z = norm.apply(series.values)
    tcols = np.asarray(series.targets)
    starts = {"train": first_target, "valid": valid_start, "test": test_start}
    ends = {"train": valid_start, "valid": test_start, "test": n}
    offsets = np.arange(window) - (window - 1) - horizon  # input rows relative to tau
    splits = {}
    for name in SPLITS:
        taus = np.arange(starts[name], ends[name])
        rows = taus[:, None] + offsets[None, :]
        splits[name] = SplitWindows(
            inputs=z[rows],
            targets=z[taus][:, tcols],
            raw_targets=series.values[taus][:, tcols],
            last_raw=series.values[taus - horizon][:, tcols],
            target_rows=taus,
        )
    return Windows(series, window, horizon, (valid_start, test_start), norm, splits)
