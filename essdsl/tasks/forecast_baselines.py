"""The baselines a forecaster is compared with, on the same samples and metrics.

* **Persistence**: the forecast is the last value in the input window
  (``y[tau] = x[tau - horizon]``), the "no change" forecast.
* **VAR(p)** (vector autoregression), fitted by ordinary least squares on the
  training rows (normalised as the model sees them; the fit is affine-invariant):
  ``x[t] = c + A_1 x[t-1] + ... + A_p x[t-p] + e[t]`` over every series; a forecast
  ``horizon`` steps ahead iterates the fitted recursion from the window's last ``p``
  rows.  :func:`select_var` picks ``p`` by RMSE on the validation samples.

numpy's least squares is the whole fit (no statsmodels dependency): the VAR here
needs no standard errors or information criteria, only coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from essdsl.tasks.forecast_data import SplitWindows, Windows
from essdsl.tasks.forecast_metrics import forecast_metrics, rmse


def persistence(split: SplitWindows) -> np.ndarray:
    """Persistence forecasts of one split, original scale: (samples, targets)."""
    return split.last_raw.copy()


@dataclass
class VAR:
    """Coefficients of a fitted VAR(p): ``intercept`` (m,), ``coefs`` (p, m, m) with
    ``coefs[k-1] = A_k`` (row: equation, column: lagged series)."""

    intercept: np.ndarray
    coefs: np.ndarray

    @property
    def order(self) -> int:
        return int(self.coefs.shape[0])

    @classmethod
    def fit(cls, rows: np.ndarray, order: int) -> "VAR":
        """Least-squares fit on ``rows`` (steps, series)."""
        rows = np.asarray(rows, dtype=np.float64)
        steps, m = rows.shape
        if order < 1:
            raise ValueError("a VAR needs at least one lag")
        if steps - order < 1 + m * order:
            raise ValueError(f"{steps} rows are too few to fit a VAR({order}) of {m} series")
        design = np.concatenate(
            [np.ones((steps - order, 1))] + [rows[order - k : steps - k] for k in range(1, order + 1)], axis=1
        )
        beta, *_ = np.linalg.lstsq(design, rows[order:], rcond=None)  # (1 + m p, m)
        intercept = beta[0]
        coefs = beta[1:].reshape(order, m, m).transpose(0, 2, 1)
        return cls(intercept, coefs)

    def step(self, history: np.ndarray) -> np.ndarray:
        """One-step forecasts from ``history`` (..., >= p steps, m): the next row."""
        out = np.broadcast_to(self.intercept, history.shape[:-2] + self.intercept.shape).copy()
        for k in range(1, self.order + 1):
            out += history[..., -k, :] @ self.coefs[k - 1].T
        return out

    def forecast(self, history: np.ndarray, horizon: int) -> np.ndarray:
        """The row ``horizon`` steps after the end of ``history`` (iterating :meth:`step`)."""
        if history.shape[-2] < self.order:
            raise ValueError(f"a VAR({self.order}) needs {self.order} past steps, the window has {history.shape[-2]}")
        hist = history[..., -self.order :, :]
        for _ in range(horizon):
            nxt = self.step(hist)
            hist = np.concatenate([hist[..., 1:, :], nxt[..., None, :]], axis=-2)
        return hist[..., -1, :]


def var_predict(windows: Windows, model: VAR, split: str) -> np.ndarray:
    """VAR forecasts of the target series of one split, original scale."""
    s = windows.split(split)
    cols = np.asarray(windows.series.targets)
    z = model.forecast(s.inputs, windows.horizon)[:, cols]
    return windows.normaliser.invert(z, cols)


def select_var(windows: Windows, max_order: int = 8) -> tuple[VAR, dict[int, float]]:
    """The VAR fitted on the training rows whose order (1..min(window, max_order))
    has the lowest validation RMSE, and every tried order's validation RMSE."""
    rows = windows.normaliser.apply(windows.train_rows)
    valid = windows.split("valid")
    scores: dict[int, float] = {}
    best = None
    for order in range(1, min(windows.window, max_order) + 1):
        try:
            model = VAR.fit(rows, order)
        except ValueError:
            break  # more lags only need more rows
        scores[order] = rmse(valid.raw_targets, var_predict(windows, model, "valid"))
        if best is None or scores[order] < scores[best.order]:
            best = model
    if best is None:
        raise ValueError("the training rows are too few for any VAR")
    return best, scores


def baseline_table(windows: Windows, split: str = "test", max_order: int = 8) -> dict[str, dict]:
    """Metrics of persistence and of the validation-selected VAR on ``split``:
    name -> {rmse, mae, rse, corr, params, ...}."""
    s = windows.split(split)
    out = {"persistence": dict(forecast_metrics(s.raw_targets, persistence(s)), params=0)}
    try:
        var, scores = select_var(windows, max_order)
    except ValueError:
        return out
    m = var.coefs.shape[1]
    out[f"VAR({var.order})"] = dict(
        forecast_metrics(s.raw_targets, var_predict(windows, var, split)),
        params=m + var.order * m * m,
        order=var.order,
        valid_rmse_by_order=scores,
    )
    return out
