"""Data-parallel primitives (essdsl/nas/distributed.py): in-process rules, then 2 ranks
on gloo (CPU) started as torchrun would (tests/dist_launch.py, tests/dist_worker.py)."""

import copy
import json
import os
import signal
import time

import pytest
import torch

from dist_launch import WORKER, run_worker, start_ranks, wait_all
from essdsl.nas import distributed as D

TWO = D.DistContext(rank=1, world_size=2, backend="gloo")  # rules only; no process group


def read_ranks(outdir, world=2):
    return [json.loads((outdir / f"rank{r}.json").read_text()) for r in range(world)]


# ----------------------------------------------------------------- in one process
def test_shard_rule_takes_equal_contiguous_column_blocks_and_refuses_uneven_batches():
    assert D.shard_slice(8, TWO) == slice(4, 8)
    assert D.shard_slice(8, D.DistContext(rank=0, world_size=2)) == slice(0, 4)
    data = torch.arange(24).view(3, 8)
    assert torch.equal(D.shard_columns(data, TWO), data[:, 4:])
    assert D.shard_columns(data, D.SINGLE) is data
    with pytest.raises(D.DistributedError, match=r"--batch-size 7 is not divisible by the 2 processes.*multiple of 2"):
        D.shard_slice(7, TWO)


def test_example_slices_cover_every_example_once():
    for count in range(0, 12):
        for world in (1, 2, 3, 5):
            slices = [D.example_slice(count, D.DistContext(rank=r, world_size=world)) for r in range(world)]
            covered = [i for s in slices for i in range(s.start, s.stop)]
            assert covered == list(range(count))
            assert max(s.stop - s.start for s in slices) - min(s.stop - s.start for s in slices) <= 1


def test_one_process_helpers_are_the_identity():
    ctx = D.setup(env={})  # no torchrun variables: a plain run
    assert ctx is D.SINGLE and ctx.is_main and not ctx.enabled and ctx.launch() == {"world_size": 1, "backend": "none"}
    grads = [torch.ones(2), None]
    assert D.average_gradients(ctx, grads, [torch.zeros(2), torch.zeros(3)]) == grads
    assert D.step_consensus(ctx, [2.5], stop=True) == ([2.5], True)
    assert D.loss_weights(ctx, 3) == 1.0 and D.gather_objects(ctx, 4) == [4] and D.broadcast_object(ctx, 5) == 5
    model = torch.nn.Linear(2, 2)
    assert D.prepare_replica(model, ctx) is model and D.differing_tensors(ctx, dict(model.named_parameters())) == []


@pytest.mark.parametrize(
    "env, message",
    [
        ({"RANK": "0", "WORLD_SIZE": "x"}, "are not integers"),
        ({"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is outside WORLD_SIZE=2"),
        ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR and MASTER_PORT not set"),
        ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "x", "MASTER_PORT": "1", D.TIMEOUT_ENV: "-1"}, "not a positive number"),
    ],
)
def test_bad_launch_environments_get_a_clear_message(env, message):
    with pytest.raises(D.DistributedError, match=message):
        D.setup("cpu", env=env)


def test_world_size_one_under_torchrun_is_a_plain_run():
    assert D.setup("cpu", env={"RANK": "0", "WORLD_SIZE": "1"}) is D.SINGLE


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_a_gpu_is_refused():
    env = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    with pytest.raises(D.DistributedError, match="no CUDA device"):
        D.setup("cuda", env=env)


class _Normed(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 4)
        self.norm = torch.nn.BatchNorm1d(4, affine=False)
        self.norms = torch.nn.ModuleDict({"n": torch.nn.BatchNorm1d(4)})

    def forward(self, x):
        return self.norms["n"](self.norm(self.linear(x)))


def test_synced_batchnorm_keeps_names_state_and_parameters_and_is_plain_batchnorm_alone():
    torch.manual_seed(0)
    model = _Normed()
    reference = copy.deepcopy(model)
    before = model.state_dict()
    weight = model.norms["n"].weight
    assert D.sync_batchnorm(model) == 2
    assert isinstance(model.norm, D.SyncedBatchNorm) and isinstance(model.norms["n"], D.SyncedBatchNorm)
    assert model.norms["n"].weight is weight and list(model.state_dict()) == list(before)
    x = torch.randn(6, 3)
    assert torch.equal(model(x), reference(x))  # no process group: torch's own batch norm
    assert torch.equal(model.norm.running_var, reference.norm.running_var)
    assert D.sync_batchnorm(model) == 0  # already converted


def test_dropout_batch_dimension_rule():
    assert D._batch_dim("dropoute", [100, 1]) is None
    assert D._batch_dim("dropouti", [1, 4, 8]) == 1
    assert D._batch_dim("dropouth.s1", [4, 8]) == 0


def test_stop_signals_set_the_flag_and_restore_the_handlers():
    calls = []
    before = signal.getsignal(signal.SIGTERM)
    with D.StopSignals(lambda: calls.append(1)) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert stop.requested and calls == [1]
        os.kill(os.getpid(), signal.SIGTERM)  # a second SIGTERM: still one request
        time.sleep(0.05)
        assert calls == [1]
    assert signal.getsignal(signal.SIGTERM) == before


# ----------------------------------------------------------------- two ranks on gloo
def test_two_ranks_average_broadcast_gather_and_synced_batchnorm(tmp_path):
    run_worker("primitives", tmp_path)
    ranks = read_ranks(tmp_path)
    assert [r["rank"] for r in ranks] == [0, 1] and {r["backend"] for r in ranks} == {"gloo"}
    assert ranks[0]["average"] == ranks[1]["average"] == [1.5, 2.0, 1.0]
    assert ranks[0]["broadcast_digest"] == ranks[1]["broadcast_digest"]
    assert [r["example_slice"] for r in ranks] == [[0, 4], [4, 7]]
    assert ranks[1]["objects"] == [0, 10] and ranks[1]["decided"] == {"from": 0}
    for r in ranks:
        for diff in r["batchnorm"].values():
            assert max(diff.values()) < 1e-5


@pytest.mark.slow  # the same claim through the Trainer runs in the fast set (test_two_rank_search_...)
@pytest.mark.parametrize("space", ["darts_rnn"])
def test_two_ranks_with_global_batch_b_equal_one_process_with_batch_b(tmp_path, space):
    """Supernet with BatchNorm and every dropout: each rank checks bitwise-equal
    architecture weights after every step and compares itself to the one-process
    run it computes from the same random state."""
    run_worker("lm", tmp_path, DIST_SPACE=space)
    for r in read_ranks(tmp_path):
        assert r["arch_moved"] > 1e-2  # the architecture did move: the comparison means something
        assert r["loss_diff"] < 1e-5, r
        assert r["arch_diff"] < 1e-4, r
        assert r["hidden_diff"] < 1e-5 and r["buffers_diff"] < 1e-5, r


@pytest.mark.parametrize("fault, limit", [("die", 10.0), ("hang", 15.0)])
def test_a_lost_rank_makes_the_others_exit_instead_of_hanging(tmp_path, fault, limit):
    timeout = 3
    procs = start_ranks([str(WORKER), "peer_lost", str(tmp_path)], 2, DIST_FAULT=fault, **{D.TIMEOUT_ENV: timeout})
    try:
        (code, _, stderr), = wait_all(procs[:1], 60)
    finally:
        procs[1].kill()
        procs[1].wait()
    assert code == 0, stderr
    result = read_ranks(tmp_path, 1)[0]
    assert result["lost_at_step"] == 2 and "lost contact with another process" in result["message"]
    if fault == "die":  # the dead peer's sockets close: noticed at once
        assert result["seconds"] < limit
    else:  # a silent peer: given up after the timeout
        assert timeout - 0.5 <= result["seconds"] < limit


# ----------------------------------------------------------------- through the trainer
def _arch_gap(trace, reference):
    """Largest difference of any architecture weight at any step, and how far they moved."""
    gap = max(abs(x - y) for a, b in zip(trace, reference) for n in a["arch"] for x, y in zip(a["arch"][n], b["arch"][n]))
    moved = max(abs(x - y) for n in reference[-1]["arch"] for x, y in zip(reference[-1]["arch"][n], reference[0]["arch"][n]))
    return gap, moved


@pytest.fixture(scope="module")
def one_process_searches(tmp_path_factory):
    """The one-process runs the two-rank runs must equal (same seed, same global batch 8)."""
    from dist_worker import search_run

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("single")
    return {order: search_run(D.SINGLE, root / order, order=order) for order in ("first", "second")}


def test_two_rank_search_equals_the_one_process_search_and_stops_and_resumes_together(tmp_path, one_process_searches):
    """Through the Trainer and the bilevel step, 2 ranks of global batch 8 against one
    process of batch 8 (same seed):

    * every step the architecture weights are bitwise equal on both ranks (checked
      inside the ranks); loss, validation loss and the genotype equal the one-process
      run's; the architecture weights too, within float32 tolerance for the first
      order, and within the finite difference's amplified rounding for the second
      (``bilevel64`` below shows the second-order gradient exact in float64);
    * a model replaced mid-run with other weights on each rank (what growth does, with
      its optimizers rebuilt) is rank 0's on both ranks from its first step on;
    * with per-process BatchNorm statistics (ESSDSL_DIST_BATCHNORM=local) the replicas
      and their running statistics stay equal, though the run is no longer the
      one-process run;
    * a stop asked on rank 1 alone (SIGTERM there) stops both ranks after the same
      step (the next step's exchange carries it) with one checkpoint, and resuming it on 2 ranks ends exactly where the
      uninterrupted run ends."""
    resumable = str(tmp_path / "stopped")
    runs = [{"order": "first"}, {"order": "second"}, {"stop": [1, 2], "run_dir": resumable}, {"resume": True, "run_dir": resumable},
            {"replace_at": 2}, {"batchnorm": "local"}]  # fmt: skip
    run_worker("search", tmp_path, DIST_SEARCH=json.dumps(runs), DIST_BILEVEL64=1)
    ranks = read_ranks(tmp_path)
    for i, (order, tolerance) in enumerate([("first", 1e-3), ("second", 5e-2)]):
        reference = one_process_searches[order]
        for rank in ranks:
            run = rank["runs"][i]
            assert [t["step"] for t in run["trace"]] == [1, 2, 3, 4]
            assert max(abs(a["loss"] - b["loss"]) for a, b in zip(run["trace"], reference["trace"])) < 1e-5
            gap, moved = _arch_gap(run["trace"], reference["trace"])
            assert moved > 1e-2 and gap < tolerance * moved, (order, gap, moved)
            assert abs(run["history"][0]["valid_loss"] - reference["history"][0]["valid_loss"]) < 1e-5
            assert run["genotype"] == reference["genotype"]
        assert ranks[0]["runs"][i]["trace"] == ranks[1]["runs"][i]["trace"]  # the same numbers on both ranks
    for rank in ranks:
        stopped, resumed, uninterrupted = rank["runs"][2], rank["runs"][3], rank["runs"][0]
        # asked on rank 1 after step 2, shared by the exchange of step 3: both stop after step 3
        assert stopped["interrupted"] and stopped["step"] == 3
        assert resumed["interrupted"] is None and [t["step"] for t in resumed["trace"]] == [4]
        assert stopped["trace"] + resumed["trace"] == uninterrupted["trace"]  # bit for bit
        assert resumed["genotype"] == uninterrupted["genotype"]
        replaced = rank["runs"][4]  # the bitwise check after every step passed inside the rank
        assert [t["step"] for t in replaced["trace"]] == [1, 2, 3, 4] and replaced["trace"][2]["arch"] != uninterrupted["trace"][2]["arch"]
        # float64: the averaged architecture gradient is the one-process gradient
        assert set(rank["bilevel64"]) == {"first/paper", "second/paper", "second/official"}
        assert max(rank["bilevel64"].values()) < 1e-9
    assert (tmp_path / "stopped" / "checkpoint.pt").exists()
    assert ranks[0]["runs"][4]["trace"] == ranks[1]["runs"][4]["trace"]
    for rank in ranks:
        assert all(run["buffers_differ"] == [] for run in rank["runs"])
        local, exact = rank["runs"][5], rank["runs"][0]
        assert [t["step"] for t in local["trace"]] == [1, 2, 3, 4] and local["trace"][1]["loss"] != exact["trace"][1]["loss"]
    assert ranks[0]["runs"][5]["trace"] == ranks[1]["runs"][5]["trace"]


def test_own_carries_refuse_a_checkpoint_of_another_world_size():
    two = {"world_size": 2, "ranks": [{"train": 0, "search": None}, {"train": 1, "search": None}]}
    assert D.own_carries(TWO, two) == {"train": 1, "search": None}
    with pytest.raises(D.DistributedError, match=r"written by a run on 2 processes and this run has 1.*resume it with torchrun --nproc_per_node=2"):
        D.own_carries(D.SINGLE, two)
    with pytest.raises(D.DistributedError, match=r"written by a run on 1 process and this run has 2.*resume it with one process \(no torchrun\)"):
        D.own_carries(D.DistContext(rank=0, world_size=2), {"train": None, "search": None})
    assert D.own_carries(D.SINGLE, {"train": None, "search": None}) == {"train": None, "search": None}


def test_a_task_without_a_shard_rule_is_refused():
    class Tagging:
        name = "tagging"

    with pytest.raises(D.DistributedError, match="'tagging' does not say how to split its batches"):
        D.batch_sharder(Tagging(), TWO)

    class Own:
        name = "forecast"

        def shard_batch(self, batch, rank, world):
            return (batch, rank, world)

    assert D.batch_sharder(Own(), TWO)("b") == ("b", 1, 2)


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="NCCL needs 2 CUDA devices (one per rank)")
def test_two_ranks_on_nccl(tmp_path):
    """The same primitives over NCCL, one GPU per rank (skipped without 2 GPUs)."""
    run_worker("primitives", tmp_path, DIST_DEVICE="cuda")
    assert {r["backend"] for r in read_ranks(tmp_path)} == {"nccl"}
