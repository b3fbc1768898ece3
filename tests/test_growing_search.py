"""Growth during search (essdsl/nas/growing.py) on the built-in corpus: the family grows
on schedule in both modes with the loss on a fixed batch unchanged by each growth, the
training step is rebuilt once per growth, every growth is in the metrics, and a run
interrupted after a growth resumes with the grown model and ends with the genotype of
an uninterrupted run."""

from __future__ import annotations

import math

import pytest
import torch

from essdsl.compile import build_manifest
from essdsl.lang.check import check_text, load_graph_text
from essdsl.nas.derive import arch_summary, derive_choices, genotype_text
from essdsl.nas.growing import Grower, GrowingTrainer, growth_marks
from essdsl.nas.runconfig import Interrupted, RunConfig
from essdsl.tasks.corpus import synthetic_corpus
from essdsl.tasks.lm import LanguageModelTask

SIZES = {"ninp": 8, "nhid": 8}


def space_text(mode: str, when: str) -> str:
    return f"""space tiny_grow
ops unary = {{tanh, relu, sigmoid, identity, zero}}
defaults {{ transform project combine {{sum, product}} keep 2 norm batchnorm dim nhid }}
cell {{
  input x[t] : ninp
  state h[t-1] : nhid
  grow s {{
    from x[t], h[t-1], s ops unary
    start 1
    max 3
    {when}
    mode {mode}
  }}
  h[t] = highway(tanh, s, carry = h[t-1])
}}
"""


@pytest.fixture(scope="module")
def corpus():
    return synthetic_corpus(0, train=1200, valid=600, test=200)


def make(corpus, run_dir, mode="then_prune", when="every 1 epochs", epochs=3, builds=None):
    base = load_graph_text(space_text(mode, when), sizes=SIZES)
    task = LanguageModelTask(corpus, bptt=8, dropouts=dict(dropout=0.1, dropouth=0.1, dropoutx=0.1, dropouti=0.1, dropoute=0.0))
    cfg = task.model_config(True)
    model, manifest, _ = task.build(base, True, 0)
    # each growth builds from its own seed: a resumed run rebuilds the same model
    grower = Grower(base, lambda g: task.build(g, True, 1000 + len(grower.events))[0])
    run_cfg = RunConfig(epochs=epochs, max_steps=None, batch_size=8, eval_batch_size=10, bptt=8, seed=0)
    return GrowingTrainer(
        model, task, run_cfg, run_dir, manifest, grower=grower,
        rebuild_step=(lambda m: builds.append(m)) if builds is not None else None,
        manifest_of=lambda g, m: build_manifest(g, cfg, m),  # the full LM manifest (the CLI keeps only its arch entries)
        describe_with=lambda manifest, m: arch_summary(manifest, {n: p for n, p in m.named_parameters() if n.startswith("arch.")}),
    )


def genotype_of(trainer) -> str:
    arch = {n: p for n, p in trainer.model.named_parameters() if n.startswith("arch.")}
    return genotype_text(trainer.grower.space(), derive_choices(trainer.manifest, arch), sizes=SIZES)


def test_then_prune_grows_every_epoch_keeping_the_loss(tmp_path, corpus):
    torch.set_num_threads(1)
    builds = []
    trainer = make(corpus, tmp_path, builds=builds)
    history = trainer.run()
    events = [e for record in history for e in record.get("growth", [])]
    assert [(e["epoch"], e["size_before"], e["size_after"]) for e in events] == [(1, 1, 2), (2, 2, 3)]
    for e in events:
        assert abs(e["loss_after"] - e["loss_before"]) <= 1e-5 * max(1.0, abs(e["loss_before"])), e  # float32
        assert e["pruned"] == {}
    assert len(builds) == 1 + len(events)  # the step is rebuilt once per growth, not per step
    assert trainer.step > 10
    assert "s3" in trainer.grower.graph.dag and "arch.s3_ops" in dict(trainer.model.named_parameters())
    assert all(math.isfinite(r["valid_ppl"]) for r in history) and history[-1]["growth_size"] == 3
    graph, report = check_text(genotype_of(trainer), sizes=SIZES)
    assert report.ok and graph.kind == "genotype" and "s3" in graph.dag
    assert growth_marks(history) == [(1.0, "+s2"), (2.0, "+s3")]


def test_interleaved_grows_within_an_epoch_and_prunes_first(tmp_path, corpus):
    trainer = make(corpus, tmp_path, mode="interleaved", when="every 6 steps", epochs=1)
    history = trainer.run()
    (record,) = history
    events = record["growth"]
    assert [(e["step"], e["size_after"]) for e in events] == [(6, 2), (12, 3)]
    assert list(events[0]["pruned"]) == ["s1"] and list(events[1]["pruned"]) == ["s2"]
    for e in events:
        assert abs(e["loss_after"] - e["loss_before"]) <= 1e-5 * max(1.0, abs(e["loss_before"])), e
    pruned = trainer.grower.graph.spec("s1")
    assert len(pruned.edges) == 2 and not pruned.has_op_choice and "arch.s1_ops" not in dict(trainer.model.named_parameters())
    marks = growth_marks(history)
    assert [label for _, label in marks] == ["+s2", "+s3"] and all(0 < x < 1 for x, _ in marks)
    check_text(genotype_of(trainer), sizes=SIZES)[1].ok


def test_resume_after_a_growth_ends_with_the_same_genotype(tmp_path, corpus):
    reference = make(corpus, tmp_path / "a")
    reference.run()
    expected = genotype_of(reference)

    first = make(corpus, tmp_path / "b")
    first.on_epoch = lambda record: first.request_stop() if record["epoch"] == 2 else None
    with pytest.raises(Interrupted):
        first.run()
    assert first.grower.state.size == 3  # stopped after the second growth

    resumed = make(corpus, tmp_path / "b")
    assert resumed.grower.state.size == 1
    resumed.resume()
    assert resumed.grower.state.size == 3 and "s3" in resumed.grower.graph.dag
    resumed.run()
    assert genotype_of(resumed) == expected
    for name, p in reference.model.named_parameters():
        assert torch.equal(p, dict(resumed.model.named_parameters())[name]), name


def test_plateau_grows_only_when_validation_stops_improving(corpus, tmp_path):
    grower = make(corpus, tmp_path, when="plateau 2 epochs").grower
    assert not grower.due_at_epoch_end(2, [3.0, 2.5])  # too early: nothing to compare with
    assert not grower.due_at_epoch_end(3, [3.0, 2.5, 2.4])  # still improving
    assert grower.due_at_epoch_end(3, [3.0, 3.1, 3.2])  # two epochs without beating 3.0


def test_a_rollback_to_a_state_before_a_growth_rebuilds_the_smaller_model(tmp_path, corpus):
    trainer = make(corpus, tmp_path, epochs=1)
    before = trainer.state()
    trainer.run()
    assert trainer.grower.state.size == 2 and "arch.s2_ops" in dict(trainer.model.named_parameters())
    trainer.restore(before)
    params = dict(trainer.model.named_parameters())
    assert trainer.grower.state.size == 1 and "arch.s2_ops" not in params and trainer.grower.events == []
    for name, value in before.model.items():
        assert torch.equal(trainer.model.state_dict()[name], value), name
    assert set(trainer.arch) == {"arch.s1_ops", "arch.s1_combine"}  # the optimizers hold the smaller model's tensors
    assert {id(p) for g in trainer.bilevel.optimizer.param_groups for p in g["params"]} == {id(p) for p in trainer.arch.values()}
