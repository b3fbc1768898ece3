"""The CUDA path: CUDA graphs (torch.compile mode reduce-overhead) for the time
step, bf16 autocast, a search on the GPU, and the GPU benchmark.

The CUDA tests skip when torch sees no GPU (CI has none); the checks that need
no GPU (which mode a device gets, clear messages when CUDA is asked for but
absent) always run.
"""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from essdsl.lang.check import load_graph
from essdsl.nas.execution import compile_mode as _compile_mode
from essdsl.compile import ModelConfig, build_model
from essdsl.compile.fast import autocast, compile_step

ROOT = Path(__file__).resolve().parent.parent
NO_DROPOUT = dict(dropout=0, dropouth=0, dropoutx=0, dropouti=0, dropoute=0)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: GPU path not exercised here")


def _essdsl(*args):
    return subprocess.run([sys.executable, "-m", "essdsl", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_cuda_gets_cuda_graphs_and_cpu_gets_inductor_default():
    assert _compile_mode(True, SimpleNamespace(type="cuda")) == "reduce-overhead"
    assert _compile_mode(True, SimpleNamespace(type="cpu")) == "default"
    assert _compile_mode(False, SimpleNamespace(type="cuda")) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_asking_for_cuda_without_a_gpu_is_a_clear_message():
    bench = _essdsl("bench", "spaces/darts_rnn.space", "--device", "cuda", "--nhid", "16")
    assert bench.returncode == 1
    assert "no CUDA device" in bench.stderr and "skipped" in bench.stderr
    assert "Traceback" not in bench.stderr
    search = _essdsl("search", "spaces/darts_rnn.space", "--device", "cuda", "--nhid", "16", "--max-steps", "1")
    assert search.returncode != 0
    assert "no CUDA device" in search.stderr and "Traceback" not in search.stderr


def _model(device, seed=0):
    torch.manual_seed(seed)
    graph = load_graph(ROOT / "spaces/darts_rnn.space", {"ninp": 32, "nhid": 32})
    model = build_model(graph, ModelConfig(vocab=50, search=True, **NO_DROPOUT)).train()
    with torch.no_grad():
        for p in model.arch_parameters():
            p.normal_(0, 1.0)
    return model.to(device)


def _step(model, tokens, bf16=False):
    model.zero_grad(set_to_none=True)
    with autocast(tokens.device.type, bf16):
        logits, hidden = model(tokens, model.init_hidden(tokens.size(1)))
        logits = logits.float() if bf16 else logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 50), tokens.roll(-1, 0).reshape(-1))
    loss.backward()
    return float(loss.detach()), {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()}


@needs_cuda
def test_cuda_graph_step_matches_cpu_eager():
    tokens = torch.randint(0, 50, (6, 8))
    cpu = _model("cpu")
    gpu = _model("cuda")
    gpu.load_state_dict(cpu.state_dict())
    compile_step(gpu, mode="reduce-overhead")
    expected_loss, expected_grads = _step(cpu, tokens)
    for _ in range(3):  # warm-up, record, replay: every call gives the same numbers
        torch.compiler.cudagraph_mark_step_begin()
        loss, grads = _step(gpu, tokens.cuda())
        assert loss == pytest.approx(expected_loss, rel=1e-4)
        for name, grad in expected_grads.items():
            torch.testing.assert_close(grads[name], grad, atol=1e-4, rtol=1e-3, msg=name)


@needs_cuda
def test_cuda_bf16_keeps_arch_weights_fp32_and_stays_close():
    tokens = torch.randint(0, 50, (6, 8), device="cuda")
    model = _model("cuda")
    fp32_loss, _ = _step(model, tokens)
    bf16_loss, grads = _step(model, tokens, bf16=True)
    assert all(p.dtype == torch.float32 for p in model.arch_parameters())
    assert abs(bf16_loss - fp32_loss) < 0.05 * fp32_loss
    assert all(torch.isfinite(g).all() for g in grads.values())


@needs_cuda
def test_search_and_bench_run_on_cuda(tmp_path):
    run = _essdsl("search", "spaces/darts_rnn.space", "--device", "cuda", "--nhid", "16", "--max-steps", "3",
                  "--synthetic-tokens", "4000", "--out", str(tmp_path / "run"))  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run" / "genotype.space").exists()
    bench = _essdsl("bench", "spaces/darts_rnn.space", "--device", "cuda", "--nhid", "32", "--batch", "8",
                    "--no-reference", "--repeats", "1")  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert "generated+compile" in bench.stdout


def test_reduce_overhead_marks_each_forward_and_uncompiles_cleanly():
    """The CUDA-graph wiring, run on CPU (torch skips CUDA graphs for CPU tensors):
    forward starts a new cudagraph generation, numbers equal eager, and
    uncompile_step restores the class's forward and step."""
    from essdsl.compile.fast import is_compiled, uncompile_step

    tokens = torch.randint(0, 50, (5, 4))
    eager = _model("cpu").double()
    fast = _model("cpu").double()
    fast.load_state_dict(eager.state_dict())
    compile_step(fast, mode="reduce-overhead")
    assert "forward" in fast.__dict__ and is_compiled(fast)
    expected_loss, expected_grads = _step(eager, tokens)
    loss, grads = _step(fast, tokens)
    assert loss == pytest.approx(expected_loss, rel=1e-10)
    for name, grad in expected_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-10, rtol=1e-8, msg=name)
    uncompile_step(fast)
    assert "forward" not in fast.__dict__ and not is_compiled(fast)
