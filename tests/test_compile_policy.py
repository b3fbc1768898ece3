"""The compile policy of essdsl.compile.fast: compile only where the run repays it."""

import torch

from essdsl.lang.check import load_graph
from essdsl.compile import ModelConfig, build_model
from essdsl.compile.fast import decide_compile, mark_compiled, _marker_path, time_eager_step

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_short_runs_stay_eager_and_long_ones_compile():
    # the README demo on 2 quiet cores: ~300 search steps of ~0.2 s per pass
    demo = decide_compile(0.2, 300, 2.0, 6, "cpu", cached=False)
    assert not demo.compile and "running eagerly" in demo.reason and "--compile to force" in demo.reason
    # the same run once torch's cache holds its variants: loading them costs less than the saving
    assert decide_compile(0.2, 300, 2.0, 6, "cpu", cached=True).compile
    # a PTB search: 50 epochs of ~100 steps at seconds per step
    ptb = decide_compile(3.0, 5000, 2.0, 6, "cpu", cached=False)
    assert ptb.compile and "5,000 steps" in ptb.reason and "--no-compile to skip" in ptb.reason
    assert "\n" not in ptb.reason and "\n" not in demo.reason  # one line


def test_timing_an_eager_step_leaves_the_model_and_the_random_state_alone(tmp_path, monkeypatch):
    graph = load_graph(ROOT / "spaces" / "darts_rnn.space", {"ninp": 8, "nhid": 8})
    torch.manual_seed(0)
    model = build_model(graph, ModelConfig(vocab=20, search=True, dropout=0.2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    seconds = time_eager_step(model, batch_size=4, bptt=5, vocab=20, device=torch.device("cpu"))
    assert seconds > 0
    assert torch.equal(torch.get_rng_state(), rng)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics too
    assert all(p.grad is None for p in model.parameters())

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    marker = _marker_path("some model")
    assert marker is not None and not marker.exists()
    mark_compiled("some model")
    assert marker.exists() and str(marker).startswith(str(tmp_path))
