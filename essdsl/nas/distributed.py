"""Data-parallel search and training under ``torchrun``: one architecture across all processes.

Every process holds a full replica of the model (weights *and* architecture weights) and
takes its shard of each batch.  Nothing here wraps the model in
``torch.nn.parallel.DistributedDataParallel``: DDP averages gradients in hooks that fire
during ``loss.backward()`` of its own forward, while the bilevel step computes its
gradients with ``torch.autograd.grad`` (up to four passes for one second-order step,
two of them at perturbed weights), and growth replaces parameters under a built
wrapper.  Instead every gradient list the search uses is averaged explicitly with
:func:`average_gradients` (one flattened all-reduce per list), so each process applies
the same update and the replicas never drift apart.

What makes a run on N processes with global batch B *equal* to a one-process run with
batch B (same seed), not only similar:

* **equal shards** — the LM's batchified corpus (rows x B columns) is cut into N
  contiguous column blocks (:func:`shard_slice`); B must be divisible by N, since the
  mean of per-shard mean losses is the global mean only for equal shards.  Examples
  (tagging, forecasting) may be split unevenly: :func:`example_share` (in the task's
  ``shard_batch``) rescales each shard's mean loss so that averaging still gives the
  global mean's gradient (their dropout masks are the one-process run's only for
  equal shards, see :func:`shard_dropout_masks`);
* **the same random numbers** — every process keeps the one-process random state
  (same seed, same draws in the same order).  Dropout masks with a batch dimension are
  drawn for the whole global batch and each process keeps its columns
  (:func:`shard_dropout_masks`), so process r applies exactly the masks the
  one-process run applies to those columns;
* **global BatchNorm statistics** — the supernet normalises node states over the batch;
  :class:`SyncedBatchNorm` all-reduces the per-feature sums (in float64) so each
  process normalises with the global batch's mean and variance, and its backward
  all-reduces through the same sums.  ``torch.nn.SyncBatchNorm`` refuses CPU tensors,
  hence this one; it is exact on any backend, at the price of one small all-reduce
  per normalisation per time step, forward and backward.

Process group: :func:`setup` reads torchrun's environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) and starts NCCL on CUDA, gloo on
CPU.  Without that environment the run is one process and every helper here is the
identity.  Only rank 0 prints and writes (:attr:`DistContext.is_main`).

Stopping: a stop request (SIGINT, SIGTERM) on any rank is combined with the step's
loss in one all-reduce (:func:`step_consensus`), so every rank stops after the same
step and rank 0 writes the checkpoint.  A rank that dies closes its sockets and the
others' next collective fails at once; a rank that hangs is given up after
:data:`TIMEOUT_ENV` seconds (default :data:`DEFAULT_TIMEOUT_S`).  Either way the
collective raises :class:`PeerLost` and every remaining rank exits without writing.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import math
import os
import signal
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from essdsl.errors import EssdslError

TIMEOUT_ENV = "ESSDSL_DIST_TIMEOUT"
BATCHNORM_ENV = "ESSDSL_DIST_BATCHNORM"  # "global" (default: exact) or "local" (per-process statistics)
DEFAULT_TIMEOUT_S = 300.0
TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(EssdslError):
    """A data-parallel run cannot start or continue; the message says why."""


class PeerLost(DistributedError):
    """A collective failed: another rank died, hung past the timeout, or stopped early."""


# ----------------------------------------------------------------- the process group
@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the run: rank, world size, backend and its device.

    The default is the single-process run (world size 1, no process group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str = ""  # "gloo" | "nccl"; "" for one process
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    timeout_s: float = DEFAULT_TIMEOUT_S

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 prints progress and writes the run folder; the other ranks write nothing."""
        return self.rank == 0

    def launch(self) -> dict:
        """What the run manifest records about the launch."""
        return {"world_size": self.world_size, "backend": self.backend or "none"}


SINGLE = DistContext()
_current: DistContext = SINGLE


def current() -> DistContext:
    """The context :func:`setup` made for this process (:data:`SINGLE` before or without
    it).  The trainer and the bilevel step read it at each step, so a model or an
    optimizer rebuilt in the middle of a run (growth) is averaged like the first."""
    return _current


def launched_by_torchrun(env=None) -> bool:
    """Whether this process was started by torchrun (or a launcher setting its variables)."""
    env = os.environ if env is None else env
    return "WORLD_SIZE" in env and "RANK" in env


def timeout_seconds(env=None) -> float:
    env = os.environ if env is None else env
    text = env.get(TIMEOUT_ENV)
    if text is None:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise DistributedError(f"{TIMEOUT_ENV}={text!r} is not a positive number of seconds")
    return value


def setup(device: Optional[str] = None, env=None) -> DistContext:
    """Join the process group torchrun describes in the environment, or return
    :data:`SINGLE` when there is none (a plain ``python -m essdsl`` run).

    ``device``: "cpu" or "cuda" (default: CUDA when available).  CUDA runs use NCCL,
    one GPU per process (``LOCAL_RANK``); CPU runs use gloo."""
    env = os.environ if env is None else env
    if not launched_by_torchrun(env):
        return SINGLE
    try:
        rank, world, local = int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", env["RANK"]))
    except ValueError:
        raise DistributedError(f"RANK={env.get('RANK')!r}, WORLD_SIZE={env.get('WORLD_SIZE')!r} are not integers") from None
    if not (world >= 1 and 0 <= rank < world):
        raise DistributedError(f"RANK={rank} is outside WORLD_SIZE={world}")
    if world == 1:
        return SINGLE
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
    if missing:
        raise DistributedError(f"{' and '.join(missing)} not set: start data-parallel runs with torchrun")
    want_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    if want_cuda:
        if not torch.cuda.is_available():
            raise DistributedError("--device cuda asked for, but torch sees no CUDA device")
        if local >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK {local} has no GPU: this node has {torch.cuda.device_count()}; "
                "give torchrun --nproc_per_node at most that many"
            )
        backend, dev = "nccl", torch.device("cuda", local)
        torch.cuda.set_device(dev)
    else:
        backend, dev = "gloo", torch.device("cpu")
    timeout = timeout_seconds(env)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world,
            timeout=datetime.timedelta(seconds=timeout),
        )
    global _current
    _current = DistContext(rank=rank, world_size=world, local_rank=local, backend=backend, device=dev, timeout_s=timeout)
    return _current


def teardown(ctx: DistContext) -> None:
    """Leave the process group (idempotent; nothing to do for one process)."""
    global _current
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
    _current = SINGLE


@contextlib.contextmanager
def collective(what: str):
    """Turn a failed collective (a peer died, hung past the timeout, or left) into
    :class:`PeerLost` with what was being exchanged."""
    try:
        yield
    except RuntimeError as exc:  # DistBackendError and gloo's errors are RuntimeErrors
        raise PeerLost(
            f"lost contact with another process while exchanging {what} ({str(exc).splitlines()[0][:200]}); "
            "every process stops; the last checkpoint written is intact"
        ) from None


# ----------------------------------------------------------------- gradients and parameters
def _groups(tensors: Sequence[torch.Tensor]) -> dict:
    """Indices of ``tensors`` by (dtype, device): one flat buffer each."""
    groups: dict = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.dtype, t.device), []).append(i)
    return groups


def average_gradients(ctx: DistContext, grads: Sequence[Optional[torch.Tensor]], like: Sequence[torch.Tensor]) -> list:
    """The mean of ``grads`` over all processes, one flattened all-reduce per dtype.

    ``like`` are the tensors the gradients belong to (their shapes size the buffer,
    so a None entry — no gradient on this process — counts as zeros and every
    process sends a buffer of the same size).  An entry stays None only where it
    is None on every process."""
    grads = list(grads)
    if not ctx.enabled:
        return grads
    if len(grads) != len(like):
        raise ValueError(f"{len(grads)} gradients for {len(like)} tensors")
    out: list = [None] * len(grads)
    for (dtype, device), index in _groups(like).items():
        present = torch.tensor([grads[i] is not None for i in index], dtype=dtype, device=device)
        parts = [present]
        for i in index:
            g = grads[i]
            parts.append(torch.zeros(like[i].numel(), dtype=dtype, device=device) if g is None else g.detach().reshape(-1).to(dtype))
        flat = torch.cat(parts)
        with collective("gradients"):
            dist.all_reduce(flat)
        counts, offset = flat[: len(index)], len(index)
        flat = flat[offset:].div_(ctx.world_size)
        offset = 0
        for k, i in enumerate(index):
            n = like[i].numel()
            if counts[k] > 0:
                out[i] = flat[offset : offset + n].view_as(like[i]).clone()
            offset += n
    return out


def average_grads_(ctx: DistContext, params: Iterable[torch.Tensor]) -> None:
    """Replace each parameter's ``.grad`` by its mean over the processes (in place)."""
    params = list(params)
    if not ctx.enabled:
        return
    for p, g in zip(params, average_gradients(ctx, [p.grad for p in params], params)):
        p.grad = g


def step_consensus(ctx: DistContext, means: Sequence[float] = (), stop: bool = False) -> tuple[list[float], bool]:
    """One all-reduce per step: the mean over processes of ``means`` (e.g. the shard's
    loss) and whether any process asked to stop.  A NaN on one process makes the mean
    NaN on all, so every process takes the same rollback decision."""
    means = [float(v) for v in means]
    if not ctx.enabled:
        return means, bool(stop)
    buf = torch.tensor([*means, 1.0 if stop else 0.0], dtype=torch.float64, device=ctx.device)
    with collective("the step's loss and stop flag"):
        dist.all_reduce(buf)
    values = (buf[:-1] / ctx.world_size).tolist()
    return values, bool(buf[-1].item() > 0)


def loss_weights(ctx: DistContext, local_size: int) -> float:
    """The factor for this process's mean loss so that averaging the gradients of the
    scaled losses gives the gradient of the global mean: ``local_size · N / total``
    (1 for equal shards).  For shards of examples that cannot be split evenly."""
    if not ctx.enabled:
        return 1.0
    buf = torch.tensor([float(local_size)], dtype=torch.float64, device=ctx.device)
    with collective("shard sizes"):
        dist.all_reduce(buf)
    total = float(buf.item())
    if total <= 0:
        raise DistributedError("every process got an empty shard")
    return local_size * ctx.world_size / total


def broadcast_state(ctx: DistContext, module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every process (at the start, and
    after a model is replaced, e.g. by growth), one broadcast per dtype."""
    if not ctx.enabled:
        return
    tensors = [t for t in (*module.parameters(), *module.buffers())]
    for (dtype, device), index in _groups(tensors).items():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in index])
        with collective("the model's parameters"):
            dist.broadcast(flat, src=src)
        offset = 0
        with torch.no_grad():
            for i in index:
                n = tensors[i].numel()
                tensors[i].copy_(flat[offset : offset + n].view_as(tensors[i]))
                offset += n


def _digest(t: torch.Tensor) -> str:
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def differing_tensors(ctx: DistContext, named: dict) -> list[str]:
    """Names of the tensors in ``named`` that are not bitwise equal on every process."""
    if not ctx.enabled:
        return []
    mine = {name: _digest(t) for name, t in named.items()}
    everyone: list = [None] * ctx.world_size
    with collective("tensor digests"):
        dist.all_gather_object(everyone, mine)
    first = everyone[0]
    return sorted({name for other in everyone[1:] for name in set(first) | set(other) if first.get(name) != other.get(name)})


def assert_replicas_equal(ctx: DistContext, named: dict, what: str = "architecture weights") -> None:
    """Raise :class:`DistributedError` unless every tensor in ``named`` is bitwise equal
    on every process (the invariant data-parallel search keeps after every step)."""
    differ = differing_tensors(ctx, named)
    if differ:
        raise DistributedError(f"the {what} differ between processes: {', '.join(differ)}")


# ----------------------------------------------------------------- shards
def shard_slice(total: int, ctx: DistContext, what: str = "--batch-size") -> slice:
    """This process's contiguous block of ``total`` columns; ``total`` must be a multiple
    of the world size (equal shards: the mean of the shards' mean losses is then the
    global mean)."""
    if total % ctx.world_size:
        raise DistributedError(
            f"{what} {total} is not divisible by the {ctx.world_size} processes: each process takes an "
            f"equal share of the batch, so that the run equals a one-process run with {what} {total}; "
            f"use a multiple of {ctx.world_size}"
        )
    share = total // ctx.world_size
    return slice(ctx.rank * share, (ctx.rank + 1) * share)


def shard_columns(data: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The LM shard rule: this process's columns of a batchified corpus (rows x B)."""
    if not ctx.enabled:
        return data
    return data[:, shard_slice(data.size(1), ctx)]


def example_slice(count: int, ctx: DistContext) -> slice:
    """This process's contiguous block of ``count`` examples (tagging, forecasting):
    sizes differ by at most one; weight the losses with :func:`loss_weights`."""
    base, extra = divmod(count, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return slice(start, start + base + (1 if ctx.rank < extra else 0))


def example_share(units: Sequence[int], rank: int, world_size: int) -> tuple[slice, float]:
    """For a task's ``shard_batch``: this process's block of a batch's examples
    (:func:`example_slice`) and the factor for its mean loss, ``local · N / whole``
    (what :func:`loss_weights` computes with a collective), where ``units[i]`` counts
    the terms example ``i`` adds to the batch's mean loss (a sentence's tokens; 1 per
    forecast window).  Every process holds the whole batch, so no collective is needed.

    A batch with fewer examples than processes is refused: a process with no examples
    would still have to run every BatchNorm and gradient exchange of the step."""
    count = len(units)
    if count < world_size:
        raise DistributedError(
            f"a batch of {count} example{'s' if count != 1 else ''} cannot be split between {world_size} processes "
            "(each needs at least one): use a --batch-size of at least the number of processes, one whose last "
            "batch of an epoch (what is left over) also holds one example per process, or run on fewer processes"
        )
    mine = example_slice(count, DistContext(rank=rank, world_size=world_size))
    whole = float(sum(units))
    return mine, float(sum(units[mine])) * world_size / whole


def gather_columns(ctx: DistContext, tensors: Sequence[torch.Tensor], dim: int) -> list[torch.Tensor]:
    """Every process's shard of each tensor, concatenated along ``dim`` in rank order
    (e.g. the carried hidden state, so a checkpoint holds the whole batch's)."""
    if not ctx.enabled:
        return list(tensors)
    out = []
    for t in tensors:
        parts = [torch.empty_like(t) for _ in range(ctx.world_size)]
        with collective("hidden states"):
            dist.all_gather(parts, t.contiguous())
        out.append(torch.cat(parts, dim))
    return out


def take_columns(ctx: DistContext, tensors: Sequence[torch.Tensor], dim: int) -> list[torch.Tensor]:
    """This process's shard (along ``dim``) of whole-batch tensors: :func:`gather_columns`
    undone, e.g. a checkpoint's hidden state on resume."""
    if not ctx.enabled:
        return list(tensors)
    out = []
    for t in tensors:
        s = shard_slice(t.size(dim), ctx, what="the checkpoint's batch")
        out.append(t.narrow(dim, s.start, s.stop - s.start).clone())
    return out


def shard_lm_batch(batch, ctx: DistContext):
    """The LM's shard of a segment: this process's columns of tokens and targets.
    ``size`` stays the global batch's token count (the trainer's epoch loss and
    tokens/s are the whole run's); ``extra["local_size"]`` is this shard's."""
    from essdsl.tasks.base import Batch

    tokens, targets = batch.inputs
    cut = shard_slice(tokens.size(1), ctx)
    mine = targets[:, cut]
    return Batch(inputs=(tokens[:, cut], mine), size=batch.size, lr_scale=batch.lr_scale, fresh=batch.fresh,
                 extra={**batch.extra, "local_size": mine.numel()})  # fmt: skip


def batch_sharder(task, ctx: DistContext) -> Callable:
    """How ``task``'s batches are cut into shares: the task's own ``shard_batch(batch,
    rank, world_size)`` when it has one, the column rule for the language model; a task
    with neither is refused (its batches' layout is its own business)."""
    own = getattr(task, "shard_batch", None)
    if own is not None:
        return lambda batch: own(batch, ctx.rank, ctx.world_size)
    if getattr(task, "name", None) == "lm":
        return lambda batch: shard_lm_batch(batch, ctx)
    raise DistributedError(
        f"the task '{getattr(task, 'name', type(task).__name__)}' does not say how to split its batches between "
        "processes (a shard_batch(batch, rank, world_size) method); run it on one process"
    )


class ShardedStream:
    """A task's batch stream as one process sees it: the same batches in the same order
    (positions and random lengths advance identically on every process), each cut to
    this process's share."""

    def __init__(self, stream, cut: Callable):
        self.stream, self.cut = stream, cut

    def next(self, like=None):
        batch = self.stream.next(like)
        return None if batch is None else self.cut(batch)

    def restart(self) -> None:
        self.stream.restart()

    def progress(self) -> tuple[int, int]:
        return self.stream.progress()

    def state_dict(self) -> dict:
        return self.stream.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)

    def __getattr__(self, name):  # optional extras of the task's stream (steps_per_epoch)
        return getattr(self.stream, name)


def shard_stream(task, stream, ctx: DistContext):
    """``stream`` (None stays None) cut to this process's share (unchanged for one process)."""
    if stream is None or not ctx.enabled:
        return stream
    return ShardedStream(stream, batch_sharder(task, ctx))


def carries_of_all(ctx: DistContext, carries: dict) -> dict:
    """What a checkpoint keeps of the carried state (LM: the hidden states): every
    process's share, with the world size that cut them (rank 0 writes the file)."""
    if not ctx.enabled:
        return carries
    return {"world_size": ctx.world_size, "ranks": gather_objects(ctx, carries)}


def own_carries(ctx: DistContext, carries: dict) -> dict:
    """This process's carried state from a checkpoint's (see :func:`carries_of_all`);
    a checkpoint cut for another number of processes is refused."""
    written = carries.get("world_size", 1) if isinstance(carries, dict) else 1
    if written != ctx.world_size:
        launch = "one process (no torchrun)" if written == 1 else f"torchrun --nproc_per_node={written} (or {written} processes in all)"
        raise DistributedError(
            f"this checkpoint was written by a run on {written} process{'es' if written != 1 else ''} and this run has "
            f"{ctx.world_size}; each process carries its own share of the state between steps, so resume it with {launch}"
        )
    return carries["ranks"][ctx.rank] if written > 1 else carries


def same_on_all(ctx: DistContext, path):
    """Rank 0's ``path`` on every process (a default run folder holds a timestamp,
    which the ranks could read a second apart)."""
    from pathlib import Path

    return Path(broadcast_object(ctx, str(path)))


def check_same_launch(ctx: DistContext, run: dict) -> None:
    """Refuse to resume a run on another number of processes than it was started on
    (its manifest's ``launch``): each process carries its share of the batch's state."""
    started = int((run.get("launch") or {}).get("world_size", 1))
    if started != ctx.world_size:
        how = "without torchrun (one process)" if started == 1 else f"with torchrun --nproc_per_node={started} (or {started} processes over all nodes)"
        raise DistributedError(
            f"refusing to resume: this run was started on {started} process{'es' if started != 1 else ''} and this launch has "
            f"{ctx.world_size}; each process carries its share of the batch's state between steps, so resume it {how}"
        )


def compile_refusal(ctx: DistContext) -> str:
    """Why a data-parallel run does not use torch.compile ("" in one process)."""
    if not ctx.enabled:
        return ""
    return ("running eagerly: data-parallel runs do not use torch.compile (the all-reduce of the synced BatchNorm sits "
            "inside the compiled time step; not supported here)")  # fmt: skip


class RemoteError(DistributedError):
    """Another rank (rank 0) failed; it printed why."""


def on_main(ctx: DistContext, action: Callable[[], Any]) -> Any:
    """Run ``action`` on rank 0 only and hand its result to every process (reading a
    checkpoint once for all).  When it raises an essdsl error, rank 0 re-raises it and
    the other ranks raise :class:`RemoteError` with the same message, instead of
    waiting for a result that never comes."""
    if not ctx.enabled:
        return action()
    if ctx.is_main:
        try:
            box = ("ok", action())
        except EssdslError as exc:
            broadcast_object(ctx, ("error", str(exc)))
            raise
        return broadcast_object(ctx, box)[1]
    kind, value = broadcast_object(ctx, None)
    if kind == "error":
        raise RemoteError(value)
    return value


# ----------------------------------------------------------------- dropout masks
def _batch_dim(key: str, shape: Sequence[int]) -> Optional[int]:
    """Which dimension of a dropout mask runs over the batch: none for the embedding's
    row mask, the middle one of (1, B, n) locked masks, the first of (B, n) state masks."""
    if key == "dropoute" or len(shape) < 2:
        return None
    return len(shape) - 2


def _sharded_mask(ctx: DistContext, model: nn.Module, key: str, shape, p: float, like: torch.Tensor) -> torch.Tensor:
    if key in model.mask_override:
        return model.mask_override[key]
    dim = _batch_dim(key, shape)
    if dim is None:
        return like.new_empty(list(shape)).bernoulli_(1.0 - p) / (1.0 - p)
    local = shape[dim]
    full = list(shape)
    full[dim] = local * ctx.world_size
    mask = like.new_empty(full).bernoulli_(1.0 - p) / (1.0 - p)
    return mask.narrow(dim, ctx.rank * local, local)


def shard_dropout_masks(model: nn.Module, ctx: DistContext) -> int:
    """Make every compiled cell/LM inside ``model`` draw its dropout masks for the global
    batch and keep this process's columns, so the masks (and the random state after
    them) are those of the one-process run.  Returns how many modules were changed.

    Works on the generated models (``_mask(key, shape, p, like)``) and the reference
    interpreter (``_bernoulli_mask(shape, p, like, key)``); equal shards assumed."""
    if not ctx.enabled:
        return 0
    changed = 0
    for module in model.modules():
        if not hasattr(module, "mask_override"):
            continue
        if callable(getattr(type(module), "_mask", None)):

            def generated(key, shape, p, like, _m=module):
                return _sharded_mask(ctx, _m, key, shape, p, like)

            module._mask = generated
            changed += 1
        elif callable(getattr(type(module), "_bernoulli_mask", None)):

            def reference(shape, p, like, key="", _m=module):
                return _sharded_mask(ctx, _m, key, shape, p, like)

            module._bernoulli_mask = reference
            changed += 1
    return changed


# ----------------------------------------------------------------- BatchNorm over all processes
class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; its gradient is the sum over processes of the gradients."""

    @staticmethod
    def forward(fctx, tensor: torch.Tensor):
        out = tensor.clone()
        with collective("BatchNorm statistics"):
            dist.all_reduce(out)
        return out

    @staticmethod
    def backward(fctx, grad: torch.Tensor):
        grad = grad.contiguous().clone()
        with collective("BatchNorm gradients"):
            dist.all_reduce(grad)
        return grad


class SyncedBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (all processes).

    The per-feature sum and sum of squares are all-reduced in float64 (one all-reduce
    forward, one backward), so normalisation, running statistics and gradients equal
    those of ``nn.BatchNorm1d`` on the concatenated batch up to rounding.  Eval mode
    and single-process runs use the running statistics / plain batch norm."""

    def _check_input_dim(self, input):
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(input)
        dims = [0, *range(2, input.dim())]
        count_local = input.numel() // input.size(1)
        x64 = input.double()
        stats = torch.cat([x64.sum(dims), (x64 * x64).sum(dims), x64.new_tensor([float(count_local)])])
        stats = _AllReduceSum.apply(stats)
        c = input.size(1)
        count = stats[-1].detach()
        mean = stats[:c] / count
        var = (stats[c : 2 * c] / count - mean * mean).clamp_min(0.0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * (count / max(float(count) - 1.0, 1.0))
                self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.to(self.running_var.dtype), alpha=factor)
        shape = [1, c] + [1] * (input.dim() - 2)
        invstd = torch.rsqrt(var + self.eps).to(input.dtype).view(shape)
        out = (input - mean.to(input.dtype).view(shape)) * invstd
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def sync_batchnorm(model: nn.Module) -> int:
    """Replace every BatchNorm in ``model`` by a :class:`SyncedBatchNorm` that shares its
    parameters and buffers (state-dict names and values unchanged).  Returns how many."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SyncedBatchNorm):
                synced = SyncedBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
                for attr in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                    setattr(synced, attr, getattr(child, attr))
                synced.train(child.training)
                setattr(parent, name, synced)
                replaced += 1
    return replaced


def batchnorm_mode(env=None) -> str:
    """``global`` (the default): BatchNorm normalises with the whole batch's statistics
    (:class:`SyncedBatchNorm`), so N processes equal one; ``local``: each process uses
    its shard's statistics, as DDP does by default — no all-reduce per normalisation
    and time step (the cost of ``global`` on a busy CPU), but the run then differs from
    the one-process run, and the running statistics are averaged after each step."""
    env = os.environ if env is None else env
    mode = env.get(BATCHNORM_ENV, "global")
    if mode not in ("global", "local"):
        raise DistributedError(f"{BATCHNORM_ENV}={mode!r}: use 'global' (exact, the default) or 'local'")
    return mode


def prepare_replica(model: nn.Module, ctx: DistContext) -> nn.Module:
    """Everything a model needs before a data-parallel step: rank 0's parameters and
    buffers on every process, global BatchNorm statistics (unless :func:`batchnorm_mode`
    says local), global-batch dropout masks.  Called at the start and again whenever
    the model is replaced (growth)."""
    if ctx.enabled:
        broadcast_state(ctx, model)
        if batchnorm_mode() == "global":
            sync_batchnorm(model)
        shard_dropout_masks(model, ctx)
    return model


def average_buffers_(ctx: DistContext, model: nn.Module) -> None:
    """Make the floating-point buffers (BatchNorm running statistics) the mean over the
    processes, one all-reduce per dtype: needed only where each process normalised with
    its own statistics (``local``), so that evaluation and checkpoints agree."""
    if not ctx.enabled or batchnorm_mode() == "global":
        return
    buffers = [b for b in model.buffers() if b.is_floating_point()]
    for b, mean in zip(buffers, average_gradients(ctx, buffers, buffers)):
        if mean is not None:
            b.copy_(mean)


# ----------------------------------------------------------------- stopping
class StopSignals:
    """Context manager: SIGINT or SIGTERM sets :attr:`requested` (and calls
    ``on_request`` once); a second SIGINT interrupts at once unless
    ``interrupt_on_repeat`` is off (under torchrun, which forwards the terminal's
    Ctrl-C to every rank a second time).  The caller shares the
    flag with the other processes through :func:`step_consensus` after each step, so a
    signal on any rank stops every rank after the same step.  (torchrun forwards a
    Ctrl-C or SIGTERM to every worker and kills them 30 s later.)"""

    def __init__(self, on_request: Callable[[], None] = lambda: None, interrupt_on_repeat: bool = True):
        self.on_request = on_request
        self.interrupt_on_repeat = interrupt_on_repeat
        self.requested = False
        self.count = 0
        self.previous: dict = {}

    def _handler(self, signum, frame):
        self.count += 1
        if self.count > 1 and signum == signal.SIGINT and self.interrupt_on_repeat:
            raise KeyboardInterrupt
        if not self.requested:
            self.requested = True
            self.on_request()

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not in the main thread: no handler, no stop by signal
                pass
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
        return False


def barrier(ctx: DistContext, what: str = "the other processes") -> None:
    if ctx.enabled:
        with collective(what):
            dist.barrier()


def broadcast_object(ctx: DistContext, value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every process (decisions that must agree)."""
    if not ctx.enabled:
        return value
    box = [value]
    with collective("a decision of rank 0"):
        dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_objects(ctx: DistContext, value: Any) -> list:
    """Every process's ``value``, in rank order, on every process."""
    if not ctx.enabled:
        return [value]
    box: list = [None] * ctx.world_size
    with collective("per-process state"):
        dist.all_gather_object(box, value)
    return box


__all__ = [
    "DEFAULT_TIMEOUT_S",
    "DistContext",
    "RemoteError",
    "ShardedStream",
    "batch_sharder",
    "check_same_launch",
    "compile_refusal",
    "same_on_all",
    "carries_of_all",
    "current",
    "on_main",
    "own_carries",
    "shard_lm_batch",
    "shard_stream",
    "DistributedError",
    "PeerLost",
    "SINGLE",
    "StopSignals",
    "SyncedBatchNorm",
    "TIMEOUT_ENV",
    "BATCHNORM_ENV",
    "assert_replicas_equal",
    "average_buffers_",
    "batchnorm_mode",
    "average_gradients",
    "average_grads_",
    "barrier",
    "broadcast_object",
    "broadcast_state",
    "differing_tensors",
    "example_share",
    "example_slice",
    "gather_columns",
    "gather_objects",
    "launched_by_torchrun",
    "loss_weights",
    "prepare_replica",
    "setup",
    "shard_columns",
    "shard_dropout_masks",
    "shard_slice",
    "step_consensus",
    "sync_batchnorm",
    "take_columns",
    "teardown",
]
