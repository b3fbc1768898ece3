"""Compiled genotypes are the cells they claim to be (LSTM, GRU), parameter counts
match the DARTS papers, the TorchScript artifact runs without essdsl, the CLI fails cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from essdsl.lang.check import load_graph
from essdsl.compile import ModelConfig, build_manifest, build_model, generate_source, save_artifact

ROOT = Path(__file__).resolve().parents[1]
NO_DROPOUT = dict(dropout=0.0, dropouth=0.0, dropoutx=0.0, dropouti=0.0, dropoute=0.0)


def run_steps(model, inputs: torch.Tensor, hidden):
    """Run the compiled LM one step at a time with an embedding whose rows ARE the inputs.

    Token ``t*B + b`` embeds to ``inputs[t, b]``, so the cell sees exactly ``inputs``;
    returns the hidden list after every step."""
    T, B, ninp = inputs.shape
    with torch.no_grad():
        model.encoder.weight.copy_(inputs.reshape(T * B, ninp))
    tokens = torch.arange(T * B).view(T, B)
    history = []
    for t in range(T):
        _, hidden = model(tokens[t : t + 1], hidden)
        history.append(hidden)
    return history


@pytest.mark.parametrize("impl", ["generated", "reference"])
def test_lstm_genotype_is_torch_lstmcell(impl):
    ninp, nhid, B, T = 6, 5, 3, 4
    graph = load_graph(ROOT / "genotypes/lstm.space", sizes={"ninp": ninp, "nhid": nhid})
    model = build_model(graph, ModelConfig(vocab=T * B, search=False, **NO_DROPOUT), impl=impl).eval()
    torch.manual_seed(0)
    cell = torch.nn.LSTMCell(ninp, nhid)
    gates = dict(zip("ifgo", range(4)))  # torch stacks the gates as (i, f, g, o)
    with torch.no_grad():
        for node, k in gates.items():
            rows = slice(k * nhid, (k + 1) * nhid)
            weight = torch.cat([cell.weight_ih[rows], cell.weight_hh[rows]], dim=1)  # (nhid, ninp + nhid)
            getattr(model.cell, f"{node}_w0").copy_(weight.t())
            getattr(model.cell, f"{node}_b0").copy_(cell.bias_ih[rows] + cell.bias_hh[rows])
    inputs = torch.randn(T, B, ninp)
    h0, c0 = 0.5 * torch.randn(B, nhid), 0.5 * torch.randn(B, nhid)
    hidden = [h0.unsqueeze(0), c0.unsqueeze(0)]  # states in declaration order: h, c
    history = run_steps(model, inputs, hidden)
    h, c = h0, c0
    with torch.no_grad():
        for t in range(T):
            h, c = cell(inputs[t], (h, c))
            torch.testing.assert_close(history[t][0][0], h, atol=1e-5, rtol=0)
            torch.testing.assert_close(history[t][1][0], c, atol=1e-5, rtol=0)


@pytest.mark.parametrize("impl", ["generated", "reference"])
def test_gru_genotype_is_torch_grucell(impl):
    ninp, nhid, B, T = 4, 6, 2, 5
    graph = load_graph(ROOT / "genotypes/gru.space", sizes={"ninp": ninp, "nhid": nhid})
    model = build_model(graph, ModelConfig(vocab=T * B, search=False, **NO_DROPOUT), impl=impl).eval()
    torch.manual_seed(1)
    cell = torch.nn.GRUCell(ninp, nhid)
    with torch.no_grad():
        for node, k in (("r", 0), ("z", 1)):  # torch stacks (r, z, n)
            rows = slice(k * nhid, (k + 1) * nhid)
            getattr(model.cell, f"{node}_w0").copy_(torch.cat([cell.weight_ih[rows], cell.weight_hh[rows]], 1).t())
            getattr(model.cell, f"{node}_b0").copy_(cell.bias_ih[rows] + cell.bias_hh[rows])
        rows = slice(2 * nhid, 3 * nhid)
        model.cell.n_w0.copy_(cell.weight_ih[rows].t())  # linear(x[t])
        model.cell.n_b0.copy_(cell.bias_ih[rows])
        model.cell.n_w1.copy_(cell.weight_hh[rows].t())  # r * linear(h[t-1]), bias inside the reset
        model.cell.n_b1.copy_(cell.bias_hh[rows])
    inputs = torch.randn(T, B, ninp)
    h0 = 0.5 * torch.randn(B, nhid)
    history = run_steps(model, inputs, [h0.unsqueeze(0)])
    h = h0
    with torch.no_grad():
        for t in range(T):
            h = cell(inputs[t], h)
            torch.testing.assert_close(history[t][0][0], h, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "size, vocab, expected",
    [(300, 10000, 4_810_000), (850, 10000, 22_960_000), (700, 33278, 33_127_878)],
)
def test_darts_v2_parameter_counts(size, vocab, expected):
    graph = load_graph(ROOT / "genotypes/darts_v2.space", sizes={"ninp": size, "nhid": size})
    with torch.device("meta"):
        model = build_model(graph, ModelConfig(vocab=vocab, search=False), impl="generated")
    params = dict(model.named_parameters())
    assert sum(p.numel() for p in params.values()) == expected
    assert not [n for n in params if n.startswith("arch.")]
    assert "decoder_weight" not in params  # tied


def test_supernet_arch_tensors_and_manifest():
    graph = load_graph(ROOT / "spaces/ess_joint.space", sizes={"ninp": 8, "nhid": 8})
    cfg = ModelConfig(vocab=20)
    model = build_model(graph, cfg)
    names = [n for n, _ in model.named_parameters() if n.startswith("arch.")]
    assert names == ["arch.hhat_ops", "arch.xhat_ops", "arch.xhat_combine"] + [f"arch.s{i}_ops" for i in range(1, 9)]
    assert len(model.arch_parameters()) == len(names)
    assert len(model.weight_parameters()) == len(list(model.parameters())) - len(names)
    manifest = build_manifest(graph, cfg, model, path=ROOT / "spaces/ess_joint.space")
    json.dumps(manifest)
    assert set(manifest["arch"]) == set(names)
    s3 = manifest["arch"]["arch.s3_ops"]
    assert s3["edges"] == ["s0", "s1", "s2"] and s3["ops"] == ["tanh", "relu", "sigmoid", "identity", "zero"]
    assert s3["select"] == "edge_softmax" and s3["keep"] == 1 and s3["transform"] == "highway"
    hhat = manifest["arch"]["arch.hhat_ops"]
    assert hhat["select"] == "node_softmax"
    assert hhat["edges"][3:] == ["h[t-1]*h[t-2]", "h[t-1]*x[t]", "h[t-2]*x[t]"]
    assert hhat["mask"][3] == [True, True, False, False]  # pairs offer {identity, tanh} only
    assert manifest["arch"]["arch.xhat_combine"] == {
        "node": "xhat", "kind": "combine", "shape": [2], "choices": ["sum", "product"]
    }  # fmt: skip
    assert manifest["nodes"]["xhat"]["keep"] == 2
    assert manifest["parameters"]["arch"] == sum(p.numel() for p in model.arch_parameters())
    assert manifest["hidden"][0] == {"stream": "h", "kind": "state", "shape": [3, "B", 8], "offsets": [-1, -2, -3]}
    assert len(manifest["space"]["sha256"]) == 64


def test_generated_source_is_plain_torch():
    graph = load_graph(ROOT / "spaces/darts_rnn.space", sizes={"ninp": 8, "nhid": 8})
    source = generate_source(graph, ModelConfig(vocab=20))
    assert "essdsl" not in source.split('"""', 2)[2]  # no import of essdsl after the docstring
    compile(source, "<generated>", "exec")
    assert source.count("torch.softmax") == 8  # once per node per forward, outside the time loop
    loop = source[source.index("for t in range(T):") :]
    assert "torch.softmax" not in loop and "zero" not in loop


def test_torchscript_artifact_runs_without_essdsl(tmp_path):
    graph = load_graph(ROOT / "spaces/ess_joint.space", sizes={"ninp": 8, "nhid": 8})
    model = build_model(graph, ModelConfig(vocab=20)).eval()
    artifact = save_artifact(model, tmp_path / "model.pt")
    tokens = torch.randint(0, 20, (3, 2))
    hidden = model.init_hidden(2)
    hidden[0].normal_()
    with torch.no_grad():
        expected, _ = model(tokens, hidden)
    torch.save({"tokens": tokens, "hidden": hidden, "expected": expected}, tmp_path / "io.pt")
    script = textwrap.dedent(
        f"""
        import os, sys, warnings
        warnings.simplefilter("ignore")
        import torch
        # An editable install puts the project on sys.path: take it off again.
        sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "essdsl"))]
        for name in [m for m in sys.modules if m == "essdsl" or m.startswith("essdsl.")]:
            del sys.modules[name]
        try:
            import essdsl
            raise SystemExit("essdsl is importable")
        except ImportError:
            pass
        data = torch.load({str(tmp_path / 'io.pt')!r})
        model = torch.jit.load({str(artifact)!r})
        model.eval()
        with torch.no_grad():
            logits, hidden = model(data["tokens"], data["hidden"])
        assert len(model.init_hidden(2)) == 2
        print(float((logits - data["expected"]).abs().max()))
        """
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    result = subprocess.run(
        [sys.executable, "-I", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    if "essdsl is importable" in result.stdout + result.stderr:
        pytest.skip("essdsl is installed into site-packages, so it cannot be hidden from the subprocess")
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.strip().splitlines()[-1]) < 1e-6


def _cli(*args, cwd):
    # PYTHONPATH: run this checkout's essdsl, not whichever one the venv has installed
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", "from essdsl.cli import main; main()", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_cli_compile_bad_file_reports_position_and_exits_1(tmp_path):
    bad = tmp_path / "bad.space"
    bad.write_text("space bad\ncell {\n  input x : ninp\n  state h[t-1] : nhid\n  h[t] = tanh(y)\n}\n")
    result = _cli("compile", str(bad), cwd=tmp_path)
    assert result.returncode == 1
    assert f"{bad}:5:15: error:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "build").exists()


def test_cli_compile_writes_artifact_and_manifest(tmp_path):
    result = _cli("compile", str(ROOT / "genotypes/darts_v2.space"), "--ninp", "8", "--nhid", "8", "--vocab", "30", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "build" / "darts_v2.manifest.json").read_text())
    assert manifest["arch"] == {} and manifest["sizes"] == {"ninp": 8, "nhid": 8, "vocab": 30}
    assert (tmp_path / "build" / "darts_v2.pt").stat().st_size > 0
    assert "parameters" in result.stdout
    emitted = _cli("compile", str(ROOT / "genotypes/darts_v2.space"), "--emit-python", "-o", "x.pt", cwd=tmp_path)
    assert emitted.returncode == 0 and "class DartsV2Model(nn.Module)" in emitted.stdout
    assert not (tmp_path / "x.pt").exists()


def test_cli_compile_reference_writes_a_state_dict_the_generated_module_loads(tmp_path):
    result = _cli("compile", str(ROOT / "spaces/darts_rnn.space"), "--ninp", "8", "--nhid", "8", "--vocab", "20",
                  "--impl", "reference", "-o", "ref.pt", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    manifest = json.loads((tmp_path / "ref.manifest.json").read_text())
    assert manifest["artifact"] == "state_dict" and manifest["implementation"] == "reference"
    graph = load_graph(ROOT / "spaces/darts_rnn.space", sizes={"ninp": 8, "nhid": 8})
    model = build_model(graph, ModelConfig(vocab=20))
    model.load_state_dict(torch.load(tmp_path / "ref.pt"))
