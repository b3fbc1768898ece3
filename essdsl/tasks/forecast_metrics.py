"""Forecast metrics as the LSTNet line of work defines them (Lai et al., SIGIR 2018,
"Modeling Long- and Short-Term Temporal Patterns with Deep Neural Networks", §4.3).

``y`` (truth) and ``p`` (prediction) are arrays of shape (samples, series) in the
original scale of the data:

* ``RMSE = sqrt(mean((y - p)^2))`` over every value;
* ``MAE  = mean(|y - p|)`` over every value;
* ``RSE  = sqrt(sum((y - p)^2)) / sqrt(sum((y - mean(y))^2))`` with ``mean(y)`` the
  mean of *all* values (one number, not per series): RMSE scaled by the spread of
  the test values, so 1 is as good as predicting the overall mean;
* ``CORR = (1/n) sum_i corr_i`` with ``corr_i`` the Pearson correlation over time
  of series ``i``'s truth and prediction; series whose truth is constant are
  left out (as the LSTNet code does).

Two details of the reference code (github.com/laiguokun/LSTNet, ``utils.py`` and
``main.py``) that we do *not* copy: its RSE denominator multiplies the unbiased
standard deviation of all values by ``sqrt((rows - 1) / rows)`` (rows, not values),
a slightly different number from the paper's formula, which we follow; and a
series whose *prediction* is constant gives 0/0 there, here it counts as
correlation 0 (a constant forecast explains none of the variation).
"""

from __future__ import annotations

import numpy as np

METRIC_NAMES = ("rmse", "mae", "rse", "corr")


def _pair(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"truth {y.shape} and prediction {p.shape} differ in shape")
    if y.ndim == 1:  # one series
        y, p = y[:, None], p[:, None]
    if y.ndim != 2 or y.shape[0] == 0:
        raise ValueError(f"expected (samples, series) arrays with at least one sample, got {y.shape}")
    return y, p


def rmse(y, p) -> float:
    y, p = _pair(y, p)
    return float(np.sqrt(np.mean((y - p) ** 2)))


def mae(y, p) -> float:
    y, p = _pair(y, p)
    return float(np.mean(np.abs(y - p)))


def rse(y, p) -> float:
    y, p = _pair(y, p)
    spread = np.sqrt(np.sum((y - y.mean()) ** 2))
    if spread == 0:
        return float("nan")  # every test value equal: no scale to relate the error to
    return float(np.sqrt(np.sum((y - p) ** 2)) / spread)


def corr(y, p) -> float:
    y, p = _pair(y, p)
    dy = y - y.mean(axis=0)
    dp = p - p.mean(axis=0)
    sy = np.sqrt(np.mean(dy**2, axis=0))
    sp = np.sqrt(np.mean(dp**2, axis=0))
    keep = sy > 0
    if not keep.any():
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        per_series = np.where(sp > 0, np.mean(dy * dp, axis=0) / (sy * sp), 0.0)
    return float(np.mean(per_series[keep]))


def forecast_metrics(y, p) -> dict[str, float]:
    """Every metric of :data:`METRIC_NAMES` of one prediction."""
    return {"rmse": rmse(y, p), "mae": mae(y, p), "rse": rse(y, p), "corr": corr(y, p)}
