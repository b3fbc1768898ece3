"""essdsl.nas.sample: uniform over exactly what `essdsl stats` counts, reproducible, and every sample a valid genotype."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from essdsl.lang.check import check_text, load_graph, load_graph_text
from essdsl.nas.sample import SampleError, architecture_choices, draw, enumerate_all, node_choice, sample_ranks
from essdsl.lang.stats import architecture_count, node_architectures

ROOT = Path(__file__).resolve().parent.parent
SPACES = {p.stem: p for p in (ROOT / "spaces").glob("*.space")}

# 2 choices at s1; at s2: keep 2 of {s0 (2 ops), s1 (2 ops), s0*s1 (1 op)} -> e_2(2, 2, 1) = 8, times 2 combiners.
def _space(name: str, nodes: str) -> str:
    """A highway-transform space with input x[t], state h[t-1], node s0 and the given nodes."""
    return f"""space {name}
defaults {{
  transform highway
  select edge_softmax
  norm batchnorm
}}
cell {{
  input x[t] : ninp
  state h[t-1] : nhid
  node s0 = highway(tanh, x[t], h[t-1], carry = h[t-1])
{nodes}}}
"""


TINY = _space("tiny", """  node s1 = mix { from s0 ops {tanh, relu, zero} }
  node s2 = mix {
    from s0, s1 ops {tanh, identity, zero}
    from s0 * s1 ops {identity}
    keep 2
    combine {sum, product}
  }
  h[t] = mean(s1..s2)
""")


@pytest.fixture(scope="module")
def tiny():
    return load_graph_text(TINY, "tiny.space")


def _key(choices) -> tuple:
    """A choice vector as a hashable value: (node, kept (edge, op) pairs, combiner) per mixed node."""
    return tuple((n, tuple((e.label, e.op) for e in c.edges or ()), c.combine) for n, c in choices.items())


def _choice_is_valid(spec, choice) -> bool:
    if choice.edges is not None:
        if len(choice.edges) != spec.keep or len({e.index for e in choice.edges}) != spec.keep:
            return False
        if any(e.op == "zero" or e.op not in spec.edges[e.index].ops for e in choice.edges):
            return False
    return choice.combine is None or choice.combine in spec.combine


@pytest.mark.parametrize("name", ["darts_rnn", "idarts_rnn", "ess_joint"])
def test_unranking_is_a_bijection_onto_each_nodes_counted_choices(name):
    # Every rank of every mixed node gives a distinct valid choice, so the space's
    # ranks [0, architecture_count) are exactly the architectures stats counts.
    graph = load_graph(SPACES[name])
    for spec in graph.mixed_nodes():
        total = node_architectures(spec)
        choices = [node_choice(spec, r) for r in range(total)]
        assert all(_choice_is_valid(spec, c) for c in choices)
        assert len({_key({spec.name: c}) for c in choices}) == total
        with pytest.raises(ValueError):
            node_choice(spec, total)


def test_every_architecture_of_a_tiny_space_once(tiny):
    assert architecture_count(tiny) == 32
    samples = list(enumerate_all(tiny, "tiny.space", "0" * 64))
    assert len(samples) == 32
    assert len({_key(architecture_choices(tiny, s.rank)) for s in samples}) == 32
    # distinct choice vectors give distinct genotype texts here (no node is left unused)
    bodies = {s.text.split("cell {", 1)[1] for s in samples}
    assert len(bodies) == 32
    with pytest.raises(SampleError, match="32 architectures, more than the 10"):
        list(enumerate_all(tiny, "tiny.space", "0" * 64, limit=10))


def test_draws_are_uniform_over_the_counted_architectures(tiny):
    # Count every outcome of 6400 draws (200 expected per architecture) and apply
    # Pearson's chi-square test at p = 0.001 (Wilson–Hilferty quantile of chi2 with 31 dof).
    count = architecture_count(tiny)
    draws = 200 * count
    outcomes = Counter(_key(architecture_choices(tiny, r)) for r in sample_ranks(count, draws, seed=7))
    assert len(outcomes) == count  # every architecture occurs
    expected = draws / count
    chi2 = sum((outcomes[k] - expected) ** 2 / expected for k in outcomes)
    dof, z = count - 1, 3.090  # z: the standard normal's 0.999 quantile
    critical = dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3
    assert chi2 < critical, (chi2, critical, outcomes.most_common(3))


def test_per_node_marginals_follow_the_product_of_counts(tiny):
    # Uniform over the product means a node's options are hit in proportion to the
    # number of architectures containing them: s2's combiner is sum in exactly half.
    count = architecture_count(tiny)
    ranks = sample_ranks(count, 4000, seed=3)
    combiners = Counter(architecture_choices(tiny, r)["s2"].combine for r in ranks)
    assert abs(combiners["sum"] - 2000) < 4 * math.sqrt(4000 * 0.25)


def test_same_seed_same_genotypes_other_seed_others():
    graph = load_graph(SPACES["ess_joint"])
    first = [s.text for s in draw(graph, "ess_joint.space", "a" * 64, 3, seed=11)]
    again = [s.text for s in draw(graph, "ess_joint.space", "a" * 64, 3, seed=11)]
    other = [s.text for s in draw(graph, "ess_joint.space", "a" * 64, 3, seed=12)]
    assert first == again
    assert first != other
    assert "seed = 11" in first[0] and "index = 2" in first[2]


@pytest.mark.parametrize("name", ["darts_rnn", "idarts_rnn", "ess_joint"])
def test_every_sample_checks_as_a_genotype(name):
    graph = load_graph(SPACES[name])
    for s in draw(graph, str(SPACES[name]), "b" * 64, 6, seed=5):
        g, report = check_text(s.text, f"sample{s.index}.space")
        assert report.ok, [d.message for d in report.diagnostics]
        assert g.kind == "genotype" and architecture_count(g) == 1


def test_samples_compile_and_run_one_step():
    import torch

    from essdsl.compile import ModelConfig, build_model

    sizes = {"ninp": 8, "nhid": 8}
    for name in ("darts_rnn", "ess_joint"):
        graph = load_graph(SPACES[name])
        for s in draw(graph, name, "c" * 64, 2, seed=1):
            model = build_model(load_graph_text(s.text, "sample.space", sizes), ModelConfig(vocab=20, search=False), impl="generated")
            assert not [n for n, _ in model.named_parameters() if n.startswith("arch.")]
            tokens = torch.randint(0, 20, (5, 2))
            out = model(tokens, model.init_hidden(2))
            logits = out[0] if isinstance(out, tuple) else out
            assert torch.isfinite(logits).all()


def _essdsl(*args, cwd=ROOT):
    result = subprocess.run([sys.executable, "-m", "essdsl", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_cli_sample_writes_checkable_files_with_provenance(tmp_path):
    space = tmp_path / "tiny.space"
    space.write_text(TINY)
    result = _essdsl("sample", space, "-n", "3", "--seed", "2", "-o", tmp_path / "s")
    assert result.returncode == 0, result.stderr
    files = [Path(line) for line in result.stdout.split()]
    assert len(files) == 3 and all(f.exists() for f in files)
    import hashlib

    text = files[0].read_text()
    assert hashlib.sha256(space.read_bytes()).hexdigest() in text and "seed = 2" in text
    check = _essdsl("check", *files)
    assert check.returncode == 0, check.stderr
    every = _essdsl("sample", space, "--all", "-o", tmp_path / "all")
    assert every.returncode == 0 and len(every.stdout.split()) == 32


def test_cli_sample_refusals(tmp_path):
    big = _essdsl("sample", SPACES["darts_rnn"], "--all", "-o", tmp_path)
    assert big.returncode == 1 and "2,642,411,520 architectures" in big.stderr
    genotype = _essdsl("sample", ROOT / "genotypes" / "lstm.space", "-n", "2", "-o", tmp_path)
    assert genotype.returncode == 1 and "nothing to sample" in genotype.stderr
    both = _essdsl("sample", SPACES["darts_rnn"], "-n", "2", "--all", "-o", tmp_path)
    assert both.returncode == 1 and "either -n N" in both.stderr
    assert not list(tmp_path.iterdir())


PRUNABLE = _space("prunable", """  node a = mix { from s0 ops {tanh, relu} }
  node b = mix { from s0, a ops {tanh, relu} }
  h[t] = b
""")


def test_uniform_over_choice_vectors_when_pruning_merges_genotypes():
    # 'a' is read only as a candidate of 'b': when b keeps s0, a is pruned and its
    # two ops give the same genotype. stats counts 2 × 4 = 8 choice vectors; the
    # sample is uniform over those, i.e. over 6 distinct genotypes, 2 of them twice as likely.
    import essdsl.nas.derive

    if not hasattr(essdsl.nas.derive, "prune_unread_nodes"):
        pytest.skip("this derive does not prune unread nodes yet")
    graph = load_graph_text(PRUNABLE, "prunable.space")
    assert architecture_count(graph) == 8
    samples = list(enumerate_all(graph, "prunable.space", "d" * 64))
    bodies = Counter(s.text.split("cell {", 1)[1] for s in samples)
    assert len(samples) == 8 and sorted(bodies.values()) == [1, 1, 1, 1, 2, 2]
    assert all(check_text(s.text, "p.space")[1].ok for s in samples)
