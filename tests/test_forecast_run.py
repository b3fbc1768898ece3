"""The forecast task through the task registry and the library's trainer: options
as the command line gives them, a search that resumes to the same result, a
derived genotype that trains."""

from pathlib import Path

import pytest
import torch

from essdsl import tasks
from essdsl.lang.check import load_graph_text
from essdsl.lang.parse import parse_space
from essdsl.nas.derive import derive_choices, genotype_text
from essdsl.nas.runconfig import RunConfig
from essdsl.nas.trainer import Trainer
from essdsl.tasks.base import arch_key, is_arch_parameter
from forecast_helpers import one_thread  # noqa: F401 - a fixture

ROOT = Path(__file__).resolve().parents[1]
MACRODATA = ROOT / ".." / "shared" / "data" / "macrodata" / "macrodata.csv"
SIZES = {"ninp": 6, "nhid": 6}

pytestmark = pytest.mark.usefixtures("one_thread")


def small_task(seed=0):
    options = tasks.parse_options("forecast", ["steps=120", "variables=4", "window=4", "target=x0,x3"])
    return tasks.create("forecast", seed, options)


def test_registry_options_and_the_macrodata_preset():
    task = small_task()
    assert task.name == "forecast" and task.windows.series.target_names == ["x0", "x3"]
    assert task.settings["window"] == 4
    with pytest.raises(tasks.TaskError, match="has no option 'bptt'"):
        tasks.parse_options("forecast", ["bptt=3"])
    with pytest.raises(tasks.TaskError, match="fixes window=8"):
        tasks.parse_options("macrodata", ["window=3"])
    if MACRODATA.exists():
        macro = tasks.create("macrodata", 0, {"data": str(MACRODATA)})
        assert macro.windows.series.columns == ["realgdp", "realcons", "realinv"] and macro.windows.window == 8


def search(task, space_text, epochs, run_dir, resume=False):
    graph = load_graph_text(space_text, "darts_rnn.space", SIZES)
    model, manifest, _ = task.build(graph, True, 0, space_text)
    cfg = RunConfig(search=True, epochs=epochs, batch_size=16, eval_batch_size=64, lr=1.0, clip=0.25, seed=0)
    trainer = Trainer(model=model, task=task, cfg=cfg, run_dir=run_dir, manifest=manifest)
    if resume:
        trainer.resume()
    trainer.run()
    return trainer, model, manifest


def test_search_resumes_to_the_same_result_and_its_genotype_trains(tmp_path):
    space_text = (ROOT / "spaces" / "darts_rnn.space").read_text()
    task = small_task()
    straight, model, manifest = search(task, space_text, 2, tmp_path / "a")
    search(task, space_text, 1, tmp_path / "b")
    resumed, resumed_model, _ = search(task, space_text, 2, tmp_path / "b", resume=True)
    assert [r["valid_rmse"] for r in resumed.history] == [r["valid_rmse"] for r in straight.history]
    for (n, p), (_, q) in zip(model.named_parameters(), resumed_model.named_parameters()):
        assert torch.equal(p, q), n
    assert {"valid_rmse", "valid_mae", "valid_rse", "valid_corr", "valid_loss"} <= set(straight.history[-1])

    arch = {arch_key(n): p.detach() for n, p in model.named_parameters() if is_arch_parameter(n)}
    genotype = genotype_text(parse_space(space_text, "darts_rnn.space"), derive_choices(manifest, arch), sizes=SIZES)
    graph = load_graph_text(genotype, "genotype.space", SIZES)
    final, _, _ = task.build(graph, False, 0, genotype)
    assert not any(is_arch_parameter(n) for n, _ in final.named_parameters())
    cfg = RunConfig(search=False, epochs=1, batch_size=16, eval_batch_size=64, lr=1.0, clip=0.25, seed=0)
    trained = Trainer(model=final, task=task, cfg=cfg, run_dir=tmp_path / "final", manifest={})
    history = trained.run()
    assert history[-1]["valid_rmse"] > 0 and (tmp_path / "final" / "checkpoint.pt").exists()


def essdsl_cli(*args, timeout=300):
    import subprocess
    import sys

    env = {**__import__("os").environ, "ESSDSL_COMPILE": "0"}
    return subprocess.run([sys.executable, "-m", "essdsl", *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


@pytest.mark.slow
def test_cli_search_forecast_with_no_data_ends_with_a_table_against_the_baselines(tmp_path):
    small = ["--task-option", "steps=200", "--task-option", "variables=4", "--ninp", "8", "--nhid", "8", "--threads", "1"]
    proc = essdsl_cli("search", "spaces/two_input_rnn.space", "--task", "forecast", *small, "--max-steps", "4",
                      "--final-epochs", "1", "--out", str(tmp_path / "run"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.lstrip().startswith(("#", "genotype")) and "h[t] = highway(tanh, " in proc.stdout
    err = proc.stderr
    assert "(persistence RMSE" in err and "model (test)" in err and "VAR(" in err and "trained genotype" in err
    assert (tmp_path / "run" / "metrics.jsonl").exists() and (tmp_path / "run" / "final" / "model.pt").exists()
    proc = essdsl_cli("eval", str(tmp_path / "run" / "final"), "--split", "test")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("test rmse ") and "samples)" in proc.stdout
    proc = essdsl_cli("plot", str(tmp_path / "run"))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "plots" / "forecast.png").exists() and (tmp_path / "run" / "plots" / "arch_s1_combine.png").exists()
    proc = essdsl_cli("compare", str(tmp_path / "run"), "--json")
    assert proc.returncode == 0, proc.stderr


def test_cli_rejects_a_bad_csv_at_its_line_and_writes_nothing(tmp_path):
    (tmp_path / "bad.csv").write_text("time,a,b\n1,1,2\n2,3,\n")
    proc = essdsl_cli("train", "genotypes/gru.space", "--task", "forecast", "--task-option", f"data={tmp_path / 'bad.csv'}",
                      "--epochs", "1", "--out", str(tmp_path / "run"))  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"{tmp_path / 'bad.csv'}:3: error: missing value in column 'b'"
    assert not (tmp_path / "run").exists()
