"""Forecast metrics (LSTNet's definitions, checked by hand) and the baselines."""

import math

import numpy as np
import pytest

from essdsl.tasks.forecast_baselines import VAR, baseline_table, persistence, select_var, var_predict
from essdsl.tasks.forecast_data import Series, lorenz96, make_windows
from essdsl.tasks.forecast_metrics import corr, forecast_metrics, mae, rmse, rse


def test_metrics_on_a_hand_computed_example():
    # two series, three samples; errors y - p: series 0 = (0, -1, 1), series 1 = (-2, 2, 0)
    y = np.array([[1.0, 0.0], [2.0, 2.0], [3.0, 1.0]])
    p = np.array([[1.0, 2.0], [3.0, 0.0], [2.0, 1.0]])
    # squared errors sum to 1 + 1 + 4 + 4 = 10 over 6 values
    assert rmse(y, p) == pytest.approx(math.sqrt(10 / 6))
    assert mae(y, p) == pytest.approx(6 / 6)
    # mean of all y = 9/6 = 1.5; sum of squared deviations = .25+.25+2.25+.25+2.25+.25 = 5.5
    assert rse(y, p) == pytest.approx(math.sqrt(10) / math.sqrt(5.5))
    # series 0: dy = (-1, 0, 1), dp = (-1, 1, 0): corr = 1 / sqrt(2 * 2) = 0.5
    # series 1: dy = (-1, 1, 0), dp = (1, -1, 0): corr = -2 / 2 = -1;  mean = -0.25
    assert corr(y, p) == pytest.approx(-0.25)
    assert forecast_metrics(y, p) == {"rmse": rmse(y, p), "mae": mae(y, p), "rse": rse(y, p), "corr": corr(y, p)}


def test_corr_leaves_out_constant_truth_and_scores_constant_forecasts_zero():
    y = np.array([[1.0, 5.0, 0.0], [2.0, 5.0, 1.0], [4.0, 5.0, 3.0]])
    p = np.array([[2.0, 1.0, 7.0], [4.0, 2.0, 7.0], [8.0, 3.0, 7.0]])
    # series 0: perfectly correlated (1); series 1: constant truth, left out;
    # series 2: constant forecast, 0
    assert corr(y, p) == pytest.approx(0.5)
    assert rse(y, y) == 0 and rmse(y, y) == 0
    # a perfect forecast up to an affine map is fully correlated but not error-free
    assert corr(y[:, [0]], 3 * y[:, [0]] - 1) == pytest.approx(1.0)


def simulate_var(coefs, intercept, steps, noise, seed):
    rng = np.random.default_rng(seed)
    p, m, _ = coefs.shape
    x = np.zeros((steps + 100, m))
    for t in range(p, len(x)):
        x[t] = intercept + sum(coefs[k] @ x[t - 1 - k] for k in range(p)) + noise * rng.standard_normal(m)
    return x[100:]


def test_var_least_squares_recovers_a_known_var1():
    a = np.array([[0.5, 0.2, 0.0], [-0.3, 0.4, 0.1], [0.0, 0.25, -0.6]])
    c = np.array([1.0, -0.5, 0.2])
    x = simulate_var(a[None], c, steps=4000, noise=0.3, seed=0)
    fit = VAR.fit(x, 1)
    np.testing.assert_allclose(fit.coefs[0], a, atol=0.04)
    np.testing.assert_allclose(fit.intercept, c, atol=0.06)
    # the forecast iterates the fitted recursion: two steps by hand
    hist = x[:5]
    one = fit.intercept + fit.coefs[0] @ hist[-1]
    two = fit.intercept + fit.coefs[0] @ one
    np.testing.assert_allclose(fit.forecast(hist, 2), two)
    with pytest.raises(ValueError, match="too few"):
        VAR.fit(x[:4], 1)


def test_var_order_selection_finds_a_second_order_process():
    a1 = np.array([[0.1, 0.0], [0.0, 0.1]])
    a2 = np.array([[-0.7, 0.0], [0.2, -0.6]])
    x = simulate_var(np.stack([a1, a2]), np.zeros(2), steps=1500, noise=1.0, seed=1)
    series = Series("var2", ["a", "b"], x, [0, 1])
    w = make_windows(series, window=4)
    best, scores = select_var(w, max_order=4)
    assert best.order >= 2 and scores[2] < 0.9 * scores[1]
    np.testing.assert_allclose(best.coefs[1], a2, atol=0.1)  # normalised scale is close to raw here


def test_baselines_on_lorenz96_with_a_target_subset():
    s = lorenz96(steps=600, variables=6, seed=0)
    s.targets = [0, 4]
    w = make_windows(s, window=6, horizon=1)
    test = w.split("test")
    np.testing.assert_array_equal(persistence(test), s.values[test.target_rows - 1][:, [0, 4]])
    table = baseline_table(w)
    (var_name,) = [k for k in table if k.startswith("VAR")]
    assert table["persistence"]["params"] == 0
    # the dynamics are smooth at dt = 0.05: a linear model of the last steps beats "no change"
    assert table[var_name]["rmse"] < table["persistence"]["rmse"]
    assert var_predict(w, VAR.fit(w.normaliser.apply(w.train_rows), 1), "test").shape == (len(test), 2)
