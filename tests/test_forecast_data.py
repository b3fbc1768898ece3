"""Forecast data: CSV series and their errors, Lorenz-96, macrodata, windows and splits."""

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from essdsl.errors import EssdslError
from essdsl.tasks.forecast_data import (
    SeriesDataError,
    lorenz96,
    lorenz96_derivative,
    macrodata,
    make_windows,
    read_csv,
)

MACRODATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "macrodata" / "macrodata.csv"


def write(tmp_path, text: str, name="s.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_csv_time_column_targets_and_values(tmp_path):
    path = write(tmp_path, "date,a,b\n2020-01,1,2.5\n2020-02,3,-4e-1\n\n2020-03, 5 ,6\n")
    s = read_csv(path, target=["b"])
    assert s.columns == ["a", "b"] and s.target_names == ["b"] and s.targets == [1]
    assert s.labels == ["2020-01", "2020-02", "2020-03"]
    np.testing.assert_array_equal(s.values, [[1, 2.5], [3, -0.4], [5, 6]])
    assert s.info["lines"] == [2, 3, 5]  # the blank line 4 is skipped, line numbers are the file's


def test_csv_explicit_time_column_columns_and_bom(tmp_path):
    path = write(tmp_path, "\ufeffa,when,b,c\n1,x,2,3\n4,y,5,6\n")
    s = read_csv(path, columns=["c", "a"], time_column="when")
    assert s.columns == ["a", "c"] and s.target_names == ["a", "c"]
    np.testing.assert_array_equal(s.values, [[1, 3], [4, 6]])


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("a,b\n1,2\n3,\n", 3, "missing value in column 'b'"),
        ("a,b\n1,2\n3,x7\n", 3, "column 'b': 'x7' is not a finite number"),
        ("a,b\n1,nan\n", 2, "column 'b': 'nan' is not a finite number"),
        ("a,b\n1,2\n\n1,inf\n", 4, "'inf' is not a finite number"),
        ("a,b\n1,2\n1,2,3\n", 3, "expected 2 fields as in the header, found 3"),
        ("a,a\n1,2\n", 1, "column name 'a' appears twice"),
        ("a,,c\n1,2,3\n", 1, "column 2 has no name"),
        ("time\n1\n", 1, "no numeric series column"),
        ("a,b\n", 1, "no rows after the header"),
        ('a,b\n1,"2\n', 2, "malformed CSV"),
    ],
)
def test_csv_errors_name_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(SeriesDataError) as info:
        read_csv(path)
    err = info.value
    assert isinstance(err, EssdslError)
    assert str(err).startswith(f"{path}:{line}: error: ")
    assert message in str(err)


def test_csv_errors_without_a_line(tmp_path):
    with pytest.raises(SeriesDataError, match=r"s\.csv: error: empty file"):
        read_csv(write(tmp_path, "\n\n"))
    with pytest.raises(SeriesDataError, match="cannot read"):
        read_csv(tmp_path / "absent.csv")
    with pytest.raises(SeriesDataError, match=r":1: error: target 'z' is not a series column \(series: a, b\)"):
        read_csv(write(tmp_path, "a,b\n1,2\n"), target=["z"])
    (tmp_path / "bad.csv").write_bytes(b"a,b\n1,2\n\xff,3\n")
    with pytest.raises(SeriesDataError, match=r"bad\.csv:3: error: not UTF-8"):
        read_csv(tmp_path / "bad.csv")


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(
        st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=3, max_size=3), min_size=1, max_size=12
    ),
    junk=st.sampled_from(["", "abc", "NaN", "-inf", "1,5", "0x10"]),
    where=st.integers(0, 10**6),
)
def test_csv_round_trip_and_one_bad_cell_is_found(tmp_path_factory, values, junk, where):
    folder = tmp_path_factory.mktemp("csv")
    lines = ["x,y,z"] + [",".join(repr(v) for v in row) for row in values]
    good = write(folder, "\n".join(lines) + "\n", "good.csv")
    np.testing.assert_array_equal(read_csv(good).values, np.asarray(values))
    row, col = divmod(where % (3 * len(values)), 3)
    cells = [repr(v) for v in values[row]]
    cells[col] = f'"{junk}"' if "," in junk else junk
    lines[row + 1] = ",".join(cells)
    bad = write(folder, "\n".join(lines) + "\n", "bad.csv")
    with pytest.raises(SeriesDataError) as info:
        read_csv(bad)
    assert str(info.value).startswith(f"{bad}:{row + 2}: error: ")
    assert "xyz"[col] in str(info.value)


def test_lorenz96_is_seeded_and_matches_an_adaptive_integrator():
    a, b = lorenz96(steps=50, seed=3, spinup=100), lorenz96(steps=50, seed=3, spinup=100)
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, lorenz96(steps=50, seed=4, spinup=100).values)
    assert a.values.shape == (50, 8) and a.targets == list(range(8))
    noise = a.values - a.info["clean"]
    assert 0.05 < noise.std() < 0.2  # noise = 0.1
    # The RK4 trajectory against scipy's adaptive Runge-Kutta from the same state.
    from scipy.integrate import solve_ivp

    forcing = np.asarray(a.info["forcing"])
    clean = a.info["clean"]
    ref = solve_ivp(
        lambda t, x: lorenz96_derivative(x, forcing), (0, 0.05 * 10), clean[0], rtol=1e-10, atol=1e-10,
        t_eval=np.arange(11) * 0.05, method="DOP853",
    )  # fmt: skip
    # RK4 at step 0.01 is accurate to ~1e-5 over these 0.5 time units (chaos amplifies
    # the local error); a wrong derivative or index would be off by O(1).
    np.testing.assert_allclose(ref.y.T, clean[:11], atol=1e-4)


def test_windows_split_chronologically_with_normalisation_fitted_on_train():
    s = lorenz96(steps=100, variables=4, seed=0)
    s.targets = [1, 3]
    w = make_windows(s, window=5, horizon=2)
    assert w.bounds == (60, 80)
    train, valid, test = (w.split(n) for n in ("train", "valid", "test"))
    assert (len(train), len(valid), len(test)) == (60 - 6, 20, 20)
    assert train.target_rows[0] == 6 and valid.target_rows[0] == 60 and test.target_rows[-1] == 99
    # the normaliser saw the training rows only
    np.testing.assert_allclose(w.normaliser.mean, s.values[:60].mean(axis=0))
    np.testing.assert_allclose(w.normaliser.std, s.values[:60].std(axis=0))
    # one sample by hand: target row 70, inputs rows 64..68 (horizon 2)
    k = 70 - 60
    z = (s.values - s.values[:60].mean(axis=0)) / s.values[:60].std(axis=0)
    np.testing.assert_allclose(valid.inputs[k], z[64:69])
    np.testing.assert_allclose(valid.targets[k], z[70, [1, 3]])
    np.testing.assert_array_equal(valid.raw_targets[k], s.values[70, [1, 3]])
    np.testing.assert_array_equal(valid.last_raw[k], s.values[68, [1, 3]])
    assert "samples train 54, valid 20, test 20" in w.describe()


def test_windows_refuse_too_short_series_and_bad_settings():
    s = lorenz96(steps=20, variables=4)
    with pytest.raises(EssdslError, match="too few for a window of 12"):
        make_windows(s, window=12)
    with pytest.raises(EssdslError, match="horizon must be at least 1"):
        make_windows(s, window=2, horizon=0)


@pytest.mark.skipif(not MACRODATA.exists(), reason="../shared/data is not here")
def test_macrodata_log_differences():
    s = macrodata(MACRODATA)
    assert s.columns == ["realgdp", "realcons", "realinv"] and s.steps == 202
    assert s.values[0, 0] == pytest.approx(100 * math.log(2778.801 / 2710.349))
    assert s.values[0, 2] == pytest.approx(100 * math.log(310.859 / 286.898))
    assert s.info["lines"][0] == 3  # the first difference is dated by the row it ends on
    assert macrodata(MACRODATA, target=["realinv"]).target_names == ["realinv"]


def test_log_differences_reject_non_positive_values_at_their_line(tmp_path):
    path = write(tmp_path, "realgdp,realcons,realinv\n1,1,1\n2,2,2\n3,0,3\n")
    with pytest.raises(SeriesDataError, match=r"s\.csv:4: error: column 'realcons': 0 has no logarithm"):
        macrodata(path)
