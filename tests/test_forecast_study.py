"""bench/forecast_study.py: its --space syntax and the table it prints."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("forecast_study", ROOT / "bench" / "forecast_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_space_argument_takes_extra_search_settings(study):
    assert study.parse_space("fixed=spaces/a.space") == ("fixed", Path("spaces/a.space"), {})
    label, path, extra = study.parse_space("grow=spaces/g.space:grow_mode=interleaved,max_nodes=6")
    assert (label, path, extra) == ("grow", Path("spaces/g.space"), {"grow_mode": "interleaved", "max_nodes": 6})
    with pytest.raises(SystemExit, match="LABEL=PATH"):
        study.parse_space("spaces/a.space")


def test_markdown_table_gives_mean_and_sample_std_sorted_by_rmse(study):
    def score(rmse, **extra):
        return dict(rmse=rmse, mae=rmse / 2, rse=0.5, corr=0.9, **extra)

    results = {
        "datasets": {
            "toy": {
                "describe": "toy: 10 steps",
                "rows": {
                    "persistence": {"kind": "baseline", "params": 0, "seeds": {"-": score(2.0)}},
                    "lstm": {"kind": "genotype", "params": 100, "seeds": {"0": score(1.0, train_s=3.0), "1": score(3.0, train_s=5.0)}},
                    "search: fixed": {"kind": "searched", "seeds": {"0": score(0.5, train_s=1, search_s=10, params=50), "1": score(0.7, train_s=1, search_s=12, params=60)}},
                },
            }
        }
    }
    text = study.markdown(results)
    lines = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split("|")[1].strip() for line in lines] == ["search: fixed", "persistence", "lstm"]
    assert "| 2.000 ± 1.414 |" in lines[2]  # mean of 1 and 3, sample std sqrt(2)
    assert "| 0.600 ± 0.141 |" in lines[0] and "| 50–60 | 11.0 | 1.0 |" in lines[0]
    assert lines[1].startswith("| persistence | 2.000 | 1.000 |") and lines[1].endswith("| 0 | – | – |")


def test_mode_setting_rewrites_the_grow_block_in_a_copy(study, tmp_path):
    space = tmp_path / "g.space"
    space.write_text("space g\ncell {\n  grow s {\n    start 2\n    mode then_prune\n  }\n}\n")
    space.write_text(space.read_text().replace("    start 2\n", "    start 2\n    every 2 epochs\n"))
    variant, rest = study.space_variant(space, {"mode": "interleaved", "every": 1, "epochs": 4}, tmp_path / "out")
    assert rest == {"epochs": 4} and "    mode interleaved\n" in variant.read_text() and "    every 1 epochs\n" in variant.read_text()
    assert "mode then_prune" in space.read_text()  # the original is untouched
    assert study.space_variant(space, {"epochs": 4}, tmp_path / "out") == (space, {"epochs": 4})
    (tmp_path / "f.space").write_text("space f\ncell {\n}\n")
    with pytest.raises(SystemExit, match="needs exactly one 'mode' line"):
        study.space_variant(tmp_path / "f.space", {"mode": "interleaved"}, tmp_path / "out")
