"""derive's genotype check raises an error that carries the checker's diagnostics."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from essdsl.compile import ModelConfig, build_manifest
from essdsl.errors import CheckError, EssdslError
from essdsl.lang.check import load_graph
from essdsl.nas.derive import DeriveError, GenotypeCheckError, derive_choices, genotype_text

ROOT = Path(__file__).resolve().parents[1]


def test_a_genotype_that_does_not_check_raises_with_its_diagnostics():
    graph = load_graph(ROOT / "spaces/ess_joint.space", sizes={"ninp": 8, "nhid": 8})
    manifest = build_manifest(graph, ModelConfig(vocab=10))
    arch = {name: torch.zeros(entry["shape"]) for name, entry in manifest["arch"].items()}
    pair = manifest["arch"]["arch.hhat_ops"]["edges"].index("h[t-1]*x[t]")
    arch["arch.hhat_ops"][pair, manifest["arch"]["arch.hhat_ops"]["ops"].index("tanh")] = 10.0  # keep the pair h[t-1]*x[t]
    choices = derive_choices(manifest, arch)
    assert genotype_text(graph.space, choices, sizes={"ninp": 8, "nhid": 8})  # at the searched sizes it checks
    with pytest.raises(GenotypeCheckError) as caught:
        genotype_text(graph.space, choices, sizes={"ninp": 6, "nhid": 10})  # h (10) * x (6) has no size
    exc = caught.value
    assert isinstance(exc, DeriveError) and isinstance(exc, CheckError) and isinstance(exc, EssdslError)
    errors = [d for d in exc.diagnostics if d.severity == "error"]
    assert errors and all(d.code == "dim-conflict" for d in errors)
    assert "a Hadamard pair needs equal sizes, but h[t-1] has 10, x[t] has 6" in errors[0].message
    assert errors[0].line > 0 and exc.source.startswith("genotype ")
    assert exc.source.splitlines()[errors[0].line - 1].lstrip().startswith("node hhat")
    assert str(exc).startswith("the derived genotype does not check: size conflict in 'hhat'")
    assert "<genotype>:" in exc.render()
