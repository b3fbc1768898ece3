"""One rank of a data-parallel test (started by tests/dist_launch.py as torchrun would).

``python tests/dist_worker.py SCENARIO OUTDIR``: runs the scenario, asserts what it
can see from inside a rank, and writes ``OUTDIR/rank<R>.json`` for the test to check."""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from essdsl.nas import distributed as D  # noqa: E402

SPACES = ROOT / "spaces"


def primitives(ctx: D.DistContext) -> dict:
    r, world = ctx.rank, ctx.world_size
    out = {}
    # gradients: a None on one rank counts as zeros; None on every rank stays None
    like = [torch.zeros(2, 3), torch.zeros(4), torch.zeros(1, dtype=torch.float64), torch.zeros(5)]
    grads = [torch.full((2, 3), float(r + 1)), None if r == 0 else torch.full((4,), 4.0), torch.tensor([r * 2.0], dtype=torch.float64), None]
    avg = D.average_gradients(ctx, grads, like)
    assert torch.equal(avg[0], torch.full((2, 3), sum(range(1, world + 1)) / world))
    assert torch.equal(avg[1], torch.full((4,), 4.0 * (world - 1) / world))
    assert avg[2].dtype == torch.float64 and avg[2].item() == sum(2.0 * k for k in range(world)) / world
    assert avg[3] is None
    out["average"] = [avg[0][0, 0].item(), avg[1][0].item(), avg[2].item()]
    # in place on .grad
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.full((3,), float(r))
    D.average_grads_(ctx, [p])
    assert torch.equal(p.grad, torch.full((3,), sum(range(world)) / world))
    # loss mean and stop flag in one all-reduce
    (mean,), stop = D.step_consensus(ctx, [float(r)], stop=(r == world - 1))
    assert mean == sum(range(world)) / world and stop
    (_,), stop = D.step_consensus(ctx, [0.0], stop=False)
    assert not stop
    (nan,), _ = D.step_consensus(ctx, [float("nan") if r == 1 else 1.0])
    assert nan != nan
    # broadcast: every rank ends with rank 0's parameters and buffers (int buffers too)
    torch.manual_seed(100 + r)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    module[1].num_batches_tracked.fill_(7 + r)
    assert D.differing_tensors(ctx, dict(module.state_dict())) != []
    try:
        D.assert_replicas_equal(ctx, dict(module.named_parameters()), "test weights")
        raise AssertionError("differing replicas were not detected")
    except D.DistributedError as exc:
        assert "0.weight" in str(exc) and "differ between processes" in str(exc)
    D.broadcast_state(ctx, module)
    D.assert_replicas_equal(ctx, dict(module.state_dict()), "test weights")
    assert int(module[1].num_batches_tracked) == 7
    out["broadcast_digest"] = D._digest(module[0].weight)
    # gather / take columns round trip
    full = torch.arange(24.0).view(2, 12, 1)
    mine = full[:, D.shard_slice(12, ctx)]
    back = D.gather_columns(ctx, [mine], dim=1)[0]
    assert torch.equal(back, full)
    assert torch.equal(D.take_columns(ctx, [full], dim=1)[0], mine)
    # loss weights for uneven example shards: sum of weights == world size
    s = D.example_slice(7, ctx)
    w = D.loss_weights(ctx, s.stop - s.start)
    (total,), _ = D.step_consensus(ctx, [w])
    assert abs(total - 1.0) < 1e-12
    out["example_slice"] = [s.start, s.stop]
    out["objects"] = D.gather_objects(ctx, r * 10)
    out["decided"] = D.broadcast_object(ctx, {"from": r})
    return out


def batchnorm(ctx: D.DistContext) -> dict:
    """SyncedBatchNorm on the shards == BatchNorm1d on the whole batch: output, input
    gradient, running statistics; 2-D and 3-D inputs."""
    out = {}
    for shape in [(8, 5), (6, 3, 4)]:
        torch.manual_seed(0)
        x = torch.randn(*shape) * 3 + 1
        up = torch.randn(*shape)  # the gradient from above, one per element
        ref = torch.nn.BatchNorm1d(shape[1])
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.uniform_(-1, 1)
        ours = copy.deepcopy(ref)
        D.sync_batchnorm(torch.nn.ModuleList([ours]))  # converted in place inside the list
        mine = x[D.shard_slice(shape[0], ctx)].clone().requires_grad_(True)
        whole = x.clone().requires_grad_(True)
        holder = torch.nn.ModuleList([ours])
        D.sync_batchnorm(holder)
        synced = holder[0]
        assert isinstance(synced, D.SyncedBatchNorm) and synced.weight is ours.weight
        y_ref = ref(whole)
        (y_ref * up).sum().backward()
        y = synced(mine)
        (y * up[D.shard_slice(shape[0], ctx)]).sum().backward()
        grads = D.average_gradients(ctx, [synced.weight.grad * ctx.world_size, synced.bias.grad * ctx.world_size], [synced.weight, synced.bias])
        s = D.shard_slice(shape[0], ctx)
        diff = {
            "out": (y - y_ref[s]).abs().max().item(),
            "grad_in": (mine.grad - whole.grad[s]).abs().max().item(),
            "grad_weight": (grads[0] - ref.weight.grad).abs().max().item(),
            "grad_bias": (grads[1] - ref.bias.grad).abs().max().item(),
            "running_mean": (synced.running_mean - ref.running_mean).abs().max().item(),
            "running_var": (synced.running_var - ref.running_var).abs().max().item(),
        }
        assert all(v < 1e-5 for v in diff.values()), diff
        assert int(synced.num_batches_tracked) == int(ref.num_batches_tracked) == 1
        synced.eval(), ref.eval()
        assert torch.allclose(synced(x), ref(x), atol=1e-6)
        out[str(len(shape))] = diff
    return out


def _lm_steps(model, train, valid, steps, bptt, ctx, clip=0.25):
    """A few first-order bilevel steps (Adam on the architecture from a validation
    segment, then clipped SGD on the weights), gradients averaged over the ranks."""
    from essdsl.tasks.base import is_arch_parameter
    from essdsl.tasks.corpus import get_batch

    weights = {n: p for n, p in model.named_parameters() if not is_arch_parameter(n)}
    arch = {n: p for n, p in model.named_parameters() if is_arch_parameter(n)}
    w_opt = torch.optim.SGD(list(weights.values()), lr=2.0, weight_decay=5e-7)
    a_opt = torch.optim.Adam(list(arch.values()), lr=3e-2, betas=(0.9, 0.999), weight_decay=1e-3)
    hidden = model.init_hidden(train.size(1))
    v_hidden = model.init_hidden(valid.size(1))
    losses, arch_trace = [], []
    model.train()
    for step in range(steps):
        pos = step * bptt
        tokens, targets = get_batch(train, pos, bptt)
        v_tokens, v_targets = get_batch(valid, pos, bptt)
        logits, v_new = model(v_tokens, v_hidden)
        v_loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), v_targets.reshape(-1))
        grads = D.average_gradients(ctx, torch.autograd.grad(v_loss, list(arch.values())), list(arch.values()))
        for p, g in zip(arch.values(), grads):
            p.grad = g
        a_opt.step()
        a_opt.zero_grad(set_to_none=True)
        v_hidden = [h.detach() for h in v_new]
        logits, new = model(tokens, hidden)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        w_opt.zero_grad(set_to_none=True)
        loss.backward()
        for p in arch.values():
            p.grad = None
        D.average_grads_(ctx, weights.values())
        torch.nn.utils.clip_grad_norm_(list(weights.values()), clip)
        w_opt.step()
        hidden = [h.detach() for h in new]
        (mean_loss, mean_v), _ = D.step_consensus(ctx, [loss.item(), v_loss.item()])
        D.assert_replicas_equal(ctx, {n: p for n, p in arch.items()})  # bitwise, after every step
        losses.append([mean_loss, mean_v])
        arch_trace.append({n: p.detach().clone() for n, p in arch.items()})
    return losses, arch_trace, hidden


def lm(ctx: D.DistContext) -> dict:
    """The shard rule end to end on a compiled supernet with BatchNorm and every
    dropout: N ranks with global batch B == one process with batch B (computed by
    each rank itself on an untouched copy, from the same random state)."""
    from essdsl.compile import ModelConfig, build_model
    from essdsl.lang.check import load_graph
    from essdsl.tasks.corpus import batchify, synthetic_corpus

    space = os.environ.get("DIST_SPACE", "darts_rnn")
    impl = os.environ.get("DIST_IMPL", "generated")
    corpus = synthetic_corpus(0, train=2000, valid=800, test=100)
    graph = load_graph(SPACES / f"{space}.space", {"ninp": 8, "nhid": 8})
    cfg = ModelConfig(vocab=corpus.vocab, search=True, dropout=0.2, dropouth=0.2, dropoutx=0.2, dropouti=0.2, dropoute=0.1)
    torch.manual_seed(ctx.rank)  # different on purpose: prepare_replica must broadcast rank 0's
    model = build_model(graph, cfg, impl=impl)
    D.prepare_replica(model, ctx)
    reference = build_model(graph, cfg, impl=impl)
    reference.load_state_dict(model.state_dict())
    batch, bptt, steps = 4 * ctx.world_size, 6, 4
    train, valid = batchify(corpus.train, batch), batchify(corpus.valid, batch)
    torch.manual_seed(1234)
    start = torch.get_rng_state()
    losses, trace, hidden = _lm_steps(model, D.shard_columns(train, ctx), D.shard_columns(valid, ctx), steps, bptt, ctx)
    after_dist = torch.get_rng_state()
    torch.set_rng_state(start)
    ref_losses, ref_trace, ref_hidden = _lm_steps(reference, train, valid, steps, bptt, D.SINGLE)
    assert torch.equal(after_dist, torch.get_rng_state()), "the ranks drew other random numbers than the one-process run"
    loss_diff = max(abs(a - b) for la, lb in zip(losses, ref_losses) for a, b in zip(la, lb))
    arch_diff = max((t[n] - rt[n]).abs().max().item() for t, rt in zip(trace, ref_trace) for n in t)
    full_hidden = D.gather_columns(ctx, hidden, dim=1)
    hidden_diff = max((a - b).abs().max().item() for a, b in zip(full_hidden, ref_hidden))
    buffers_diff = max(((a - b).abs().max().item() for a, b in zip(model.buffers(), reference.buffers()) if a.is_floating_point()), default=0.0)
    return {
        "losses": losses, "ref_losses": ref_losses, "loss_diff": loss_diff, "arch_diff": arch_diff,
        "hidden_diff": hidden_diff, "buffers_diff": buffers_diff,
        "arch_moved": max((trace[-1][n] - ref_trace[0][n]).abs().max().item() for n in trace[-1]),
    }


def primitives_and_batchnorm(ctx: D.DistContext) -> dict:
    return {**primitives(ctx), "batchnorm": batchnorm(ctx)}


def peer_lost(ctx: D.DistContext) -> dict:
    """The last rank dies (DIST_FAULT=die) or stops answering (DIST_FAULT=hang) at step
    2; the others must leave their collective with PeerLost instead of waiting for ever."""
    fault, last = os.environ["DIST_FAULT"], ctx.world_size - 1
    start = time.monotonic()
    for step in range(5):
        if ctx.rank == last and step == 2:
            if fault == "die":
                os._exit(3)
            time.sleep(600)
        try:
            D.step_consensus(ctx, [1.0])
        except D.PeerLost as exc:
            print(f"rank {ctx.rank}: {exc}", file=sys.stderr)
            return {"lost_at_step": step, "seconds": time.monotonic() - start, "message": str(exc)}
    raise AssertionError("no collective failed although a rank was gone")


def search_run(ctx: D.DistContext, run_dir, order="first", max_steps=4, epochs=1, stop=None, resume=False, die=None, train_tokens=1200,
               replace_at=None, batchnorm="global") -> dict:
    """A search through the real Trainer (the LM task, darts_rnn at nhid 8, global batch
    8, dropouts on); every step checks bitwise-equal architecture weights across ranks.
    ``stop`` = (rank, step): that rank alone asks to stop after that step; ``die`` the
    same, but the rank exits at once.  ``replace_at``: before that step every rank
    replaces the model by a new one with other weights on each rank and rebuilds the
    optimizers, as growth does (the trainer must make rank 0's the replica again)."""
    from essdsl.lang.check import load_graph
    from essdsl.nas.derive import derive_choices
    from essdsl.nas.runconfig import Interrupted, RunConfig
    from essdsl.nas.trainer import Trainer
    from essdsl.tasks.corpus import synthetic_corpus
    from essdsl.tasks.lm import LanguageModelTask

    corpus = synthetic_corpus(0, train=train_tokens, valid=400, test=100)
    task = LanguageModelTask(corpus, bptt=8, dropouts=dict(dropout=0.2, dropouth=0.1, dropoutx=0.2, dropouti=0.1, dropoute=0.0))
    graph = load_graph(SPACES / "darts_rnn.space", {"ninp": 8, "nhid": 8})
    model, manifest, _ = task.build(graph, True, seed=0)
    cfg = RunConfig(epochs=epochs, max_steps=max_steps, batch_size=8, eval_batch_size=10, bptt=8, order=order, seed=0, lr=5.0, arch_lr=0.03)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    os.environ[D.BATCHNORM_ENV] = batchnorm
    trainer_class = Trainer
    if replace_at is not None:
        from essdsl.nas.bilevel import BilevelOptimizer, arch_masks, split_parameters

        class Replacing(Trainer):
            def _train_step(self):
                if self.step == replace_at and not getattr(self, "replaced", False):
                    self.replaced = True
                    self.model = task.build(graph, True, seed=100 + ctx.rank)[0]  # differs per rank on purpose
                    self.weights, self.arch = split_parameters(self.model)
                    self.w_opt = self._sgd()
                    self.bilevel = BilevelOptimizer(self.weights, self.arch, arch_masks(self.manifest, self.arch), self.cfg, list(self.model.buffers()))
                return super()._train_step()

        trainer_class = Replacing
    trainer = trainer_class(model, task, cfg, run_dir, manifest)
    trace = []

    def on_step(info):
        arch = {n: p for n, p in trainer.model.named_parameters() if n.startswith("arch.")}
        D.assert_replicas_equal(ctx, arch)  # bitwise, after every step
        trace.append({"step": info.step, "loss": info.loss, "arch": {n: p.detach().flatten().tolist() for n, p in arch.items()}})
        if stop is not None and (ctx.rank, info.step) == tuple(stop):
            trainer.request_stop()
        if die is not None and (ctx.rank, info.step) == tuple(die):
            os._exit(9)

    trainer.on_step = on_step
    if resume:
        trainer.resume()
    interrupted = None
    try:
        history = trainer.run()
    except Interrupted as exc:
        history, interrupted = trainer.history, str(exc.checkpoint)
    arch = {n: p for n, p in trainer.model.named_parameters() if n.startswith("arch.")}
    os.environ.pop(D.BATCHNORM_ENV)
    buffers_differ = D.differing_tensors(ctx, {n: b for n, b in trainer.model.named_buffers()})
    choices = {node: ([(e.label, e.op) for e in c.edges or ()], c.combine) for node, c in derive_choices(manifest, arch).items()}
    return {"history": history, "trace": trace, "interrupted": interrupted, "step": trainer.step, "genotype": repr(sorted(choices.items())),
            "buffers_differ": buffers_differ}  # fmt: skip


def search(ctx: D.DistContext) -> dict:
    """DIST_SEARCH: a JSON list of search_run options, run one after the other in RUN_DIR
    (default OUTDIR/run<i>)."""
    outdir = Path(sys.argv[2])
    runs = json.loads(os.environ.get("DIST_SEARCH", "[{}]"))
    out = {"runs": [search_run(ctx, options.pop("run_dir", outdir / f"run{i}"), **options) for i, options in enumerate(runs)]}
    if os.environ.get("DIST_BILEVEL64"):
        out["bilevel64"] = bilevel64(ctx)
    return out


def bilevel64(ctx: D.DistContext) -> dict:
    """One architecture gradient in float64 (first and second order, both Hessian-vector
    rules, a large step size so the finite-difference term matters): the ranks' averaged
    gradient against the one-process gradient each rank computes on an untouched copy
    from the same random state.  float64 leaves no rounding for the finite difference
    to amplify, so any mistake in what is averaged shows."""
    from essdsl.lang.check import load_graph
    from essdsl.nas.bilevel import BilevelOptimizer, arch_masks, split_parameters
    from essdsl.nas.runconfig import RunConfig
    from essdsl.tasks.corpus import synthetic_corpus
    from essdsl.tasks.lm import LanguageModelTask

    corpus = synthetic_corpus(0, train=600, valid=300, test=100)
    task = LanguageModelTask(corpus, bptt=6, dropouts=dict(dropout=0.2, dropouth=0.1, dropoutx=0.2, dropouti=0.1, dropoute=0.0))
    graph = load_graph(SPACES / "darts_rnn.space", {"ninp": 8, "nhid": 8})
    out = {}
    for order, hvp in [("first", "paper"), ("second", "paper"), ("second", "official")]:
        model, manifest, _ = task.build(graph, True, seed=0)
        model.double()
        reference = copy.deepcopy(model)
        D.prepare_replica(model, ctx)
        cfg = RunConfig(batch_size=8, bptt=6, order=order, hvp=hvp, clip=1e9)
        results = []
        for m, parallel in [(model, ctx), (reference, D.SINGLE)]:
            weights, arch = split_parameters(m)
            bilevel = BilevelOptimizer(weights, arch, arch_masks(manifest, arch), cfg, list(m.buffers()))
            train = D.shard_stream(task, task.train_stream(8, 0, torch.device("cpu")), parallel)
            search = D.shard_stream(task, task.search_stream(8, torch.device("cpu")), parallel)
            batch = train.next()
            val = search.next(like=batch)
            torch.manual_seed(7)
            loss_fn = lambda b, carry, m=m: task.loss(m, b, carry)
            grads, val_loss, _ = bilevel.arch_gradient(loss_fn, (batch, None), (val, None), 50.0)
            results.append((grads, float(val_loss)))
        (grads, loss), (ref_grads, ref_loss) = results
        gap = max(((g - r).abs().max() / r.abs().max()).item() for g, r in zip(grads, ref_grads))
        assert gap < 1e-9 and abs(loss - ref_loss) < 1e-12, (order, hvp, gap, loss, ref_loss)
        out[f"{order}/{hvp}"] = gap
    return out


def varied_ner(folder: Path) -> Path:
    """A tiny CoNLL-2003 folder whose sentences do not all end in the same token: with
    every column equal at a time step (tests/test_tagging_task.py's data, read
    backwards), a BatchNorm's variance there is zero and its output is rounding noise
    divided by sqrt(eps), which no two summation orders reproduce."""
    people, places, verbs = ["Peter", "Anna", "Maria", "John"], ["Paris", "Rome", "Berlin", "Madrid"], ["visited", "saw", "left"]
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 40), ("dev", 12), ("test", 8)):
        lines = ["-DOCSTART- -X- -X- O", ""]
        for i in range(n):
            lines += [f"{people[i % 4]} NNP I-NP I-PER"] + ([f"{people[(i + 1) % 4]} NNP I-NP B-PER"] if i % 3 == 0 else [])
            lines += [f"{verbs[i % 3]} VBD I-VP O", f"{places[(i * 3) % 4]} NNP I-NP I-LOC"] + [". . O O" if i % 2 else "! . O O", ""]
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return folder


def examples_run(ctx: D.DistContext, task_name: str, run_dir, max_steps: int = 3, batch_size: int = 7) -> dict:
    """A first-order search through the real Trainer on a task whose shards are blocks
    of examples (tagging: tiny NER with a CRF, both directions; forecast: Lorenz-96),
    darts_rnn at nhid 8 with BatchNorm, global batch 7 (uneven shards on 2 ranks: 4
    and 3) and every dropout off (plain ``nn.Dropout`` masks of the heads are drawn per
    process, so they cannot equal the one-process run's).  Every step checks bitwise
    equal architecture weights across ranks."""
    from essdsl.lang.check import load_graph
    from essdsl.nas.runconfig import RunConfig
    from essdsl.nas.trainer import Trainer

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if task_name == "tagging":
        from essdsl.tasks.tagging import TaggingTask, settings_for

        folder = varied_ner(run_dir / f"ner{ctx.rank}")
        task = TaggingTask(settings_for("ner", data=str(folder), min_count=1, dropout=0.0, cell_dropout=0.0))
        graph = load_graph(SPACES / "darts_rnn.space", {"ninp": 8, "nhid": 8})
    else:
        from essdsl.tasks.forecast import ForecastTask

        task = ForecastTask.load(data_seed=1, steps=120, variables=4, window=5,
                                 dropouts=dict(dropout=0.0, dropouth=0.0, dropoutx=0.0, dropouti=0.0, dropoute=0.0))  # fmt: skip
        graph = load_graph(SPACES / "darts_rnn.space", {"ninp": 8, "nhid": 8})
    model, manifest, _ = task.build(graph, True, seed=0)
    cfg = RunConfig(epochs=1, max_steps=max_steps, batch_size=batch_size, eval_batch_size=16, order="first", seed=0, lr=1.0, arch_lr=0.03)
    trainer = Trainer(model, task, cfg, run_dir / "run", manifest)
    trace = []

    def on_step(info):
        arch = {n: p for n, p in trainer.model.named_parameters() if ".arch." in n or n.startswith("arch.")}
        D.assert_replicas_equal(ctx, arch)  # bitwise, after every step
        trace.append({"step": info.step, "loss": info.loss, "arch": {n: p.detach().flatten().tolist() for n, p in arch.items()}})

    trainer.on_step = on_step
    history = trainer.run()
    return {"trace": trace, "valid_loss": history[0]["valid_loss"]}


def examples(ctx: D.DistContext) -> dict:
    """DIST_TASK (tagging | forecast): :func:`examples_run` in OUTDIR."""
    return examples_run(ctx, os.environ["DIST_TASK"], Path(sys.argv[2]))


SCENARIOS = {"bilevel64": bilevel64, "search": search, "primitives": primitives_and_batchnorm, "lm": lm, "peer_lost": peer_lost, "examples": examples}


def main() -> None:
    scenario, outdir = sys.argv[1], Path(sys.argv[2])
    torch.set_num_threads(1)
    ctx = D.setup(os.environ.get("DIST_DEVICE", "cpu"))
    try:
        result = SCENARIOS[scenario](ctx)
        result["rank"], result["world_size"], result["backend"] = ctx.rank, ctx.world_size, ctx.backend
        outdir.mkdir(parents=True, exist_ok=True)
        (outdir / f"rank{ctx.rank}.json").write_text(json.dumps(result))
    finally:
        D.teardown(ctx)


if __name__ == "__main__":
    main()
