"""Generic bilevel search (DARTS family) and plain training of a recurrent LM.

The searcher knows nothing about the space it runs.  It sees a model that
follows the compiled-model contract::

    hidden = model.init_hidden(B)              # list of tensors
    logits, hidden = model(tokens, hidden)     # (T, B) long -> (T, B, V)

and splits ``model.named_parameters()`` into architecture weights (names that
start with ``arch.``) and model weights (everything else).  The manifest (see
``essdsl.compile.build_manifest``) tells which architecture slots are masked.

Bilevel step (DARTS, Liu et al. 2019), per training segment:

* architecture: Adam on ∇α L_val, first order (at the current w) or second
  order: ``w' = w − η (clip(∇w L_train(w, α)) + wd·w)`` (the weight step, clipped
  as the official ``architect.py`` does), then
  ``∇α L_val(w', α) − η · [∇α L_train(w⁺, α) − ∇α L_train(w⁻, α)] / 2ε`` with
  ``w± = w ± ε ∇w' L_val(w', α)`` and ``ε = 0.01 / ‖∇w' L_val‖``.  Every
  training-loss evaluation of one architecture step replays the same dropout
  masks (the random state is restored before each), so the finite difference
  differentiates one function and not two noisy samples of it.  ``RunConfig.hvp
  = "official"`` instead perturbs w' along ``clip(∇w' L_val) + wd·w'`` as the
  official code does (docs/semantics.md, "Differences from the official DARTS code");
* weights: SGD with gradient clipping, lr scaled by ``seq_len / bptt``.

:class:`Trainer` runs either mode (``search=False`` trains weights only, the
final-training recipe, with optional switch to averaged SGD), checkpoints every
epoch and on Ctrl-C, resumes to the same result, and rolls back with a halved
learning rate when the loss stops being finite.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import math
import random
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from essdsl.nas import runfiles
from essdsl.files import atomic_write_bytes, atomic_write_text
from essdsl.tasks.corpus import Corpus, batchify, expected_seq_len, get_batch, sample_seq_len
from essdsl.errors import EssdslError

ARCH_PREFIX = "arch."
CHECKPOINT_FORMAT = "essdsl-checkpoint-1"
MAX_ROLLBACKS = 3
ABSURD_LOSS_FACTOR = 10.0  # see usable_validation_loss


class RunError(EssdslError):
    """A run cannot start or continue; the message says why and what to do."""


class Interrupted(EssdslError):
    """Raised after a requested stop (Ctrl-C) once the checkpoint is written."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint
        super().__init__(f"interrupted; state saved to {checkpoint}")


class Diverged(RunError):
    """The loss stayed non-finite after the allowed rollbacks."""


# ----------------------------------------------------------------- configuration
@dataclass
class RunConfig:
    """Hyperparameters of a search (``search=True``) or a final training run."""

    search: bool = True
    epochs: int = 50
    max_steps: Optional[int] = None
    batch_size: int = 256
    eval_batch_size: int = 10
    bptt: int = 35
    lr: float = 20.0
    wd: float = 5e-7
    clip: float = 0.25
    arch_lr: float = 3e-3
    arch_wd: float = 1e-3
    arch_beta1: float = 0.9
    arch_beta2: float = 0.999
    order: str = "first"  # "first" | "second"
    # second order's Hessian-vector product: "paper" (DARTS eq. 7: perturb w along
    # grad_w' L_val) or "official" (quark0/darts rnn/architect.py: perturb w' along
    # clip(grad_w' L_val) + wd w', divide by 2 eps + 1e-10); docs/semantics.md
    hvp: str = "paper"
    seed: int = 0
    asgd: bool = False  # train mode: switch to averaged SGD when valid stalls
    nonmono: int = 5

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunConfig":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


# ----------------------------------------------------------------- files
def atomic_torch_save(obj, path) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path) -> dict:
    """The checkpoint at ``path``, verified (see :func:`essdsl.nas.runfiles.load_checkpoint`:
    checksum, ``torch.load(weights_only=True)``, schema); a clear RunError otherwise."""
    try:
        return runfiles.load_checkpoint(path, CHECKPOINT_FORMAT)
    except runfiles.RunFileError as exc:
        raise RunError(str(exc)) from None


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_fingerprint(corpus: Corpus) -> str:
    h = hashlib.sha256()
    for split in (corpus.train, corpus.valid, corpus.test):
        h.update(split.tobytes())
    h.update(str(corpus.vocab).encode())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------- arch helpers
def split_parameters(model: torch.nn.Module) -> tuple[dict, dict]:
    """(model weights, architecture weights) as name -> parameter dicts."""
    weights, arch = {}, {}
    for name, p in model.named_parameters():
        (arch if name.startswith(ARCH_PREFIX) else weights)[name] = p
    return weights, arch


def arch_masks(manifest: dict, arch: dict) -> dict:
    """Boolean masks of the valid slots of each ops tensor (True = a real choice)."""
    masks = {}
    entries = (manifest or {}).get("arch", {})
    for name, p in arch.items():
        entry = entries.get(name)
        if entry and entry.get("kind") == "ops" and "mask" in entry:
            masks[name] = torch.tensor(entry["mask"], dtype=torch.bool, device=p.device)
    return masks


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def detach_hidden(hidden):
    return [h.detach() for h in hidden]


@contextlib.contextmanager
def frozen(params):
    """Take no gradient of ``params`` for a while (``requires_grad`` off, restored after).

    For gradients of the architecture weights alone: eager autograd already skips
    what no requested input needs, but a ``torch.compile``d step's backward is one
    node that computes the gradient of every input that requires one.  With the
    model weights frozen it is compiled (once more, cached) without the weight
    gradients: a third of the cell's GEMM work."""
    params = list(params)
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _rng_state(device: torch.device):
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def clip_by_total_norm(grads, max_norm: float) -> list:
    """``grads`` scaled to total 2-norm ``max_norm`` when above it (``clip_grad_norm_``'s
    rule on plain tensors; None entries stay None)."""
    present = [g for g in grads if g is not None]
    if not present or not math.isfinite(max_norm):
        return list(grads)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in present]))
    coef = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    return [None if g is None else g * coef for g in grads]


# ----------------------------------------------------------------- the bilevel step
class BilevelOptimizer:
    """Architecture step of the bilevel problem (first or second order).

    ``loss_fn(tokens, targets, hidden) -> (loss, new_hidden)`` evaluates the
    model with its *current* parameters.
    """

    def __init__(self, weights: dict, arch: dict, masks: dict, cfg: RunConfig, buffers: Optional[list] = None):
        self.weights = list(weights.values())
        # BatchNorm statistics: the official second-order step runs its training pass at w
        # on the model and the other three passes on a copy; so only that first pass
        # may move the model's statistics
        self.buffers = list(buffers or [])
        self.arch_names = list(arch)
        self.arch = list(arch.values())
        self.masks = [masks.get(n) for n in self.arch_names]
        self.cfg = cfg
        self.optimizer = torch.optim.Adam(
            self.arch, lr=cfg.arch_lr, betas=(cfg.arch_beta1, cfg.arch_beta2), weight_decay=cfg.arch_wd
        )

    def arch_gradient(self, loss_fn, train_batch, val_batch, eta: float):
        """Return (arch gradients, val loss, new val hidden)."""
        if self.cfg.order == "second":
            return self.second_order_gradient(loss_fn, train_batch, val_batch, eta)
        tokens, targets, hidden = val_batch
        with frozen(self.weights):
            loss, new_hidden = loss_fn(tokens, targets, hidden)
            grads = torch.autograd.grad(loss, self.arch)
        return list(grads), loss.detach(), new_hidden

    def second_order_gradient(self, loss_fn, train_batch, val_batch, eta: float):
        w, wd = self.weights, self.cfg.wd
        device = w[0].device
        tr_tokens, tr_targets, tr_hidden = train_batch
        rng = _rng_state(device)
        train_loss, _ = loss_fn(tr_tokens, tr_targets, tr_hidden)
        saved_buffers = [b.detach().clone() for b in self.buffers]  # after this pass, as in the official code
        # the unrolled step is the weight optimiser's step: gradient clipped as in weight_update
        g_train = clip_by_total_norm(torch.autograd.grad(train_loss, w, allow_unused=True), self.cfg.clip)
        saved = [p.detach().clone() for p in w]
        with torch.no_grad():
            for p, g in zip(w, g_train):
                step = p * wd if g is None else g + p * wd
                p.sub_(eta * step)
        try:
            val_tokens, val_targets, val_hidden = val_batch
            val_loss, new_hidden = loss_fn(val_tokens, val_targets, val_hidden)
            grads = torch.autograd.grad(val_loss, self.arch + w, allow_unused=True)
            d_arch = [torch.zeros_like(a) if g is None else g for a, g in zip(self.arch, grads[: len(self.arch)])]
            d_w = [torch.zeros_like(p) if g is None else g for p, g in zip(w, grads[len(self.arch) :])]
            base, direction, denominator_extra = saved, d_w, 0.0
            if self.cfg.hvp == "official":
                base = [p.detach().clone() for p in w]  # around the unrolled weights w'
                direction = [g + wd * p for g, p in zip(clip_by_total_norm(d_w, self.cfg.clip), base)]
                denominator_extra = 1e-10
            norm = torch.sqrt(sum((g.double() ** 2).sum() for g in direction)).item()
            if norm == 0.0 or not math.isfinite(norm):
                return d_arch, val_loss.detach(), new_hidden
            eps = 0.01 / norm
            grad_plus = self._arch_grad_at(loss_fn, train_batch, base, direction, eps, rng)
            grad_minus = self._arch_grad_at(loss_fn, train_batch, base, direction, -eps, rng)
            denominator = 2 * eps + denominator_extra
            result = [da - eta * (gp - gm) / denominator for da, gp, gm in zip(d_arch, grad_plus, grad_minus)]
            return result, val_loss.detach(), new_hidden
        finally:
            with torch.no_grad():
                for p, s in zip(w, saved):
                    p.copy_(s)
                for b, s in zip(self.buffers, saved_buffers):
                    b.copy_(s)

    def _arch_grad_at(self, loss_fn, train_batch, base, direction, eps, rng):
        with torch.no_grad():
            for p, b, d in zip(self.weights, base, direction):
                p.copy_(b + eps * d)
        _set_rng_state(rng, self.weights[0].device)
        with frozen(self.weights):
            loss, _ = loss_fn(*train_batch)
            grads = torch.autograd.grad(loss, self.arch, allow_unused=True)
        return [torch.zeros_like(a) if g is None else g for a, g in zip(self.arch, grads)]

    def step(self, grads) -> None:
        for p, g, m in zip(self.arch, grads, self.masks):
            g = g.detach().clone()
            if m is not None:
                g[~m] = 0.0
            p.grad = g
        masked_values = [p.detach()[~m].clone() if m is not None else None for p, m in zip(self.arch, self.masks)]
        self.optimizer.step()
        with torch.no_grad():
            for p, m, v in zip(self.arch, self.masks, masked_values):
                if m is not None:
                    p[~m] = v  # masked slots never move
                p.grad = None


# ----------------------------------------------------------------- the trainer
@dataclass
class StepInfo:
    epoch: int
    epochs: int
    step: int
    total_steps: Optional[int]
    position: int
    rows: int
    loss: float
    tokens_per_s: float
    steps_per_epoch: int


@dataclass
class Trainer:
    """One search or training run of ``model`` on ``corpus``, checkpointed in ``run_dir``.

    ``describe_arch(model) -> dict`` (search only) returns extra per-epoch
    metrics from the architecture weights (derived genotype, entropies, θ); it
    is supplied by the caller so the trainer stays space-agnostic.  ``loss``
    is the training loss (:func:`cross_entropy`, or that under torch.compile);
    validation always uses the eager :func:`cross_entropy`.
    """

    model: torch.nn.Module
    corpus: Corpus
    cfg: RunConfig
    run_dir: Path
    manifest: dict = field(default_factory=dict)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    checkpoint_name: str = "checkpoint.pt"
    describe_arch: Optional[Callable[[torch.nn.Module], dict]] = None
    on_step: Optional[Callable[[StepInfo], None]] = None
    on_epoch: Optional[Callable[[dict], None]] = None
    extra_state: dict = field(default_factory=dict)  # stored in every checkpoint (e.g. what eval needs)
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = cross_entropy  # of training steps (e.g. a compiled one)
    # More per-epoch entries computed from the epoch's record (e.g. search health against
    # the unigram model); stored with the record, so checkpoints and metrics keep them.
    assess_epoch: Optional[Callable[[dict], dict]] = None

    def __post_init__(self):
        self.run_dir = Path(self.run_dir)
        self.model.to(self.device)
        weights, arch = split_parameters(self.model)
        if self.cfg.search and not arch:
            raise RunError("the model has no architecture weights (arch.*): nothing to search; use 'essdsl train' for a genotype")
        if not self.cfg.search:
            for p in arch.values():
                p.requires_grad_(False)
            arch = {}
        self.weights, self.arch = weights, arch
        self.train_data = batchify(self.corpus.train, self.cfg.batch_size).to(self.device)
        self.search_data = batchify(self.corpus.valid, self.cfg.batch_size).to(self.device) if self.cfg.search else None
        self.valid_data = batchify(self.corpus.valid, self.cfg.eval_batch_size).to(self.device)
        self.seq_rng = random.Random(self.cfg.seed)
        torch.manual_seed(self.cfg.seed)
        self.w_opt = self._sgd()
        self.bilevel = (
            BilevelOptimizer(weights, arch, arch_masks(self.manifest, arch), self.cfg, list(self.model.buffers()))
            if self.cfg.search
            else None
        )
        self.epoch = 0
        self.step = 0
        self.position = 0
        self.search_position = 0
        self.lr = self.cfg.lr
        self.rollbacks = 0
        self.asgd_active = False
        self.best_valid = math.inf
        self.valid_history: list[float] = []
        self.history: list[dict] = []
        self.hidden = None
        self.search_hidden = None
        self.elapsed = 0.0
        self.epoch_loss_sum = 0.0
        self.epoch_tokens = 0
        self.best_state: Optional[dict] = None
        self.last_length = 0
        self.notes: list[str] = []
        self._stop_requested = False
        self._good_state: Optional[dict] = None

    # -- optimizers
    def _sgd(self):
        return torch.optim.SGD(list(self.weights.values()), lr=self.cfg.lr, weight_decay=self.cfg.wd)

    def _asgd(self):
        return torch.optim.ASGD(list(self.weights.values()), lr=self.lr, t0=0, lambd=0.0, weight_decay=self.cfg.wd)

    @property
    def steps_per_epoch(self) -> int:
        """Expected steps in one epoch (the BPTT length varies per step, DARTS-style)."""
        return max(1, math.ceil((self.train_data.size(0) - 2) / expected_seq_len(self.cfg.bptt)))

    @property
    def checkpoint_path(self) -> Path:
        return self.run_dir / self.checkpoint_name

    # -- loss
    def loss_fn(self, tokens, targets, hidden):
        logits, new_hidden = self.model(tokens, hidden)
        return self.loss(logits, targets), detach_hidden(new_hidden)

    # -- state
    def state_dict(self) -> dict:
        py_version, py_state, py_gauss = self.seq_rng.getstate()
        return {
            "format": CHECKPOINT_FORMAT,
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "w_opt": copy.deepcopy(self.w_opt.state_dict()),
            "w_opt_kind": "asgd" if self.asgd_active else "sgd",
            "a_opt": copy.deepcopy(self.bilevel.optimizer.state_dict()) if self.bilevel else None,
            "progress": {
                "epoch": self.epoch,
                "step": self.step,
                "position": self.position,
                "search_position": self.search_position,
                "lr": self.lr,
                "rollbacks": self.rollbacks,
                "best_valid": self.best_valid,
                "valid_history": list(self.valid_history),
                "elapsed": self.elapsed,
                "epoch_loss_sum": self.epoch_loss_sum,
                "epoch_tokens": self.epoch_tokens,
            },
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                "python": [py_version, list(py_state), py_gauss],
            },
            "hidden": [h.detach().cpu().clone() for h in self.hidden] if self.hidden is not None else None,
            "search_hidden": [h.detach().cpu().clone() for h in self.search_hidden] if self.search_hidden is not None else None,
            "history": copy.deepcopy(self.history),
            "best_model": self.best_state,
            "config": self.cfg.to_dict(),
            **self.extra_state,
        }

    def load_state_dict(self, state: dict) -> None:
        try:
            self.model.load_state_dict(state["model"])
            progress = state["progress"]
            self.asgd_active = state.get("w_opt_kind") == "asgd"
            self.lr = float(progress["lr"])
            self.w_opt = self._asgd() if self.asgd_active else self._sgd()
            self.w_opt.load_state_dict(state["w_opt"])
            if self.bilevel is not None:
                self.bilevel.optimizer.load_state_dict(state["a_opt"])
            self.epoch = int(progress["epoch"])
            self.step = int(progress["step"])
            self.position = int(progress["position"])
            self.search_position = int(progress["search_position"])
            self.rollbacks = int(progress["rollbacks"])
            self.best_valid = float(progress["best_valid"])
            self.valid_history = list(progress["valid_history"])
            self.elapsed = float(progress["elapsed"])
            self.epoch_loss_sum = float(progress["epoch_loss_sum"])
            self.epoch_tokens = int(progress["epoch_tokens"])
            rng = state["rng"]
            torch.set_rng_state(rng["torch"])
            if rng.get("cuda") is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], self.device)
            version, internal, gauss = rng["python"]
            self.seq_rng.setstate((version, tuple(internal), gauss))
            self.hidden = [h.to(self.device) for h in state["hidden"]] if state["hidden"] is not None else None
            self.search_hidden = (
                [h.to(self.device) for h in state["search_hidden"]] if state["search_hidden"] is not None else None
            )
            self.history = list(state["history"])
            self.best_state = state.get("best_model")
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise RunError(f"checkpoint does not match this model or is damaged ({type(exc).__name__}: {str(exc)[:200]})") from None

    def save_checkpoint(self) -> Path:
        state = self.state_dict()
        runfiles.save_checkpoint(state, self.checkpoint_path)  # with its sha256 in the run manifest
        self._good_state = state
        return self.checkpoint_path

    def resume(self) -> None:
        self.load_state_dict(load_checkpoint(self.checkpoint_path))
        self._good_state = self.state_dict()

    # -- evaluation
    @torch.no_grad()
    def evaluate(self, data: Optional[torch.Tensor] = None) -> float:
        """Mean cross-entropy (nats per token) on ``data`` (default: valid)."""
        data = self.valid_data if data is None else data
        return evaluate_loss(self.model, data, self.cfg.bptt, self._averaged_weights() if self.asgd_active else None)

    def _averaged_weights(self):
        averaged = {}
        for name, p in self.weights.items():
            st = self.w_opt.state.get(p, {})
            if "ax" in st:
                averaged[name] = st["ax"]
        return averaged

    # -- one step
    def _train_step(self) -> float:
        cfg = self.cfg
        seq_len = sample_seq_len(cfg.bptt, self.seq_rng)
        tokens, targets = get_batch(self.train_data, self.position, seq_len)
        length = tokens.size(0)
        self.model.train()
        if self.hidden is None:  # a new epoch starts from zero states
            self.hidden = self.model.init_hidden(cfg.batch_size)
        if self.bilevel is not None and self.search_hidden is None:
            self.search_hidden = self.model.init_hidden(cfg.batch_size)
        if self.bilevel is not None:
            if self.search_position + 1 + length > self.search_data.size(0):
                self.search_position = 0
                self.search_hidden = self.model.init_hidden(cfg.batch_size)
            v_tokens, v_targets = get_batch(self.search_data, self.search_position, length)
            if not self.arch_update(tokens, targets, v_tokens, v_targets):
                return math.nan
            self.search_position += length
        value = self.weight_update(tokens, targets)
        if not math.isfinite(value):
            return math.nan
        self.position += length
        self.last_length = length
        self.epoch_loss_sum += value * length
        self.epoch_tokens += length
        return value

    def _eta(self, tokens) -> float:
        """The step's learning rate: lr scaled by the segment's length over bptt."""
        return self.lr * tokens.size(0) / self.cfg.bptt

    def arch_update(self, tokens, targets, v_tokens, v_targets) -> bool:
        """One architecture step (first or second order, per the config) from the
        training segment and the same-length validation segment; the search hidden
        state moves on.  False, with the architecture unchanged, when the validation
        loss or a gradient is not finite."""
        grads, val_loss, self.search_hidden = self.bilevel.arch_gradient(
            self.loss_fn,
            (tokens, targets, self.hidden),
            (v_tokens, v_targets, self.search_hidden),
            self._eta(tokens),
        )
        if not math.isfinite(float(val_loss)) or not all(torch.isfinite(g).all() for g in grads):
            return False
        self.bilevel.step(grads)
        return True

    def weight_update(self, tokens, targets) -> float:
        """One SGD step of the model weights on a training segment (gradient clipped,
        lr scaled by the segment's length); the training hidden state moves on.
        Returns the loss; when it is not finite, no weight is changed."""
        for group in self.w_opt.param_groups:
            group["lr"] = self._eta(tokens)
        try:
            loss, self.hidden = self.loss_fn(tokens, targets, self.hidden)
            self.w_opt.zero_grad(set_to_none=True)
            for p in self.arch.values():
                p.grad = None
            value = float(loss.detach())
            if not math.isfinite(value):
                return math.nan
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(self.weights.values()), self.cfg.clip)
            self.w_opt.step()
            for p in self.arch.values():
                p.grad = None
            return value
        finally:
            for group in self.w_opt.param_groups:
                group["lr"] = self.lr

    def _rollback(self, reason: str) -> None:
        if self.rollbacks >= MAX_ROLLBACKS or self._good_state is None:
            raise Diverged(divergence_message(reason, self.lr, self.checkpoint_path, self.notes))
        good = self._good_state
        new_lr = self.lr / 2
        rollbacks = self.rollbacks + 1
        self.load_state_dict(good)
        self.lr = new_lr
        self.rollbacks = rollbacks
        for group in self.w_opt.param_groups:
            group["lr"] = self.lr
        self._good_state = self.state_dict()
        self.notes.append(f"{reason}: rolled back to epoch {self.epoch} step {self.step}, lr halved to {self.lr:g}")

    # -- the loop
    def request_stop(self) -> None:
        self._stop_requested = True

    def run(self) -> list[dict]:
        """Train until ``epochs`` or ``max_steps``; returns the per-epoch history."""
        cfg = self.cfg
        if self._good_state is None:
            self._good_state = self.state_dict()
        rows = self.train_data.size(0)
        while self.epoch < cfg.epochs and not self._budget_spent():
            while self.position < rows - 2 and not self._budget_spent():
                t0 = time.time()
                loss = self._train_step()
                if not math.isfinite(loss):
                    self._rollback(f"the loss became {loss} at epoch {self.epoch + 1}, step {self.step + 1}")
                    continue
                self.step += 1
                dt = time.time() - t0
                self.elapsed += dt
                if self.on_step is not None:
                    self.on_step(
                        StepInfo(
                            self.epoch,
                            cfg.epochs,
                            self.step,
                            cfg.max_steps,
                            self.position,
                            rows,
                            loss,
                            self.last_length * cfg.batch_size / max(dt, 1e-9),
                            self.steps_per_epoch,
                        )
                    )
                if self._stop_requested:
                    path = self.save_checkpoint()
                    raise Interrupted(path)
            self._end_epoch()
            if self._stop_requested:
                raise Interrupted(self.checkpoint_path)
        return self.history

    def _budget_spent(self) -> bool:
        return self.cfg.max_steps is not None and self.step >= self.cfg.max_steps

    def _end_epoch(self) -> None:
        cfg = self.cfg
        valid_loss = self.evaluate()
        if not usable_validation_loss(valid_loss, self.corpus.vocab) or not all(torch.isfinite(p).all() for p in self.weights.values()):
            self._rollback(f"the validation loss became {valid_loss:g} at the end of epoch {self.epoch + 1}")
            return
        train_loss = self.epoch_loss_sum / max(self.epoch_tokens, 1)
        record = {
            "epoch": self.epoch + 1,
            "step": self.step,
            "train_loss": train_loss,
            "train_ppl": _ppl(train_loss),
            "valid_loss": valid_loss,
            "valid_ppl": _ppl(valid_loss),
            "lr": self.lr,
            "elapsed_s": round(self.elapsed, 3),
            "optimizer": "asgd" if self.asgd_active else "sgd",
            # below 1 when --max-steps ended the run inside the epoch
            "epoch_fraction": round(min(1.0, self.position / max(self.train_data.size(0) - 2, 1)), 4),
        }
        if self.describe_arch is not None and self.arch:
            record.update(self.describe_arch(self.model))
        if self.assess_epoch is not None:
            record.update(self.assess_epoch(record))
        self.history.append(record)
        if valid_loss < self.best_valid:
            self.best_valid = valid_loss
            self.best_state = self._current_eval_weights()
        earlier = self.valid_history[: len(self.valid_history) - cfg.nonmono]
        if cfg.asgd and not self.asgd_active and earlier:
            if valid_loss > min(earlier):  # no better than nonmono epochs ago: valid stalled
                self.asgd_active = True
                self.w_opt = self._asgd()
                record["switched_to_asgd"] = True
        self.valid_history.append(valid_loss)
        self.epoch += 1
        self.position = 0
        self.hidden = None
        self.epoch_loss_sum = 0.0
        self.epoch_tokens = 0
        self.save_checkpoint()
        if self.on_epoch is not None:
            self.on_epoch(record)

    def _current_eval_weights(self) -> dict:
        state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        if self.asgd_active:
            names = {id(p): n for n, p in self.weights.items()}
            for p, st in self.w_opt.state.items():
                if "ax" in st and id(p) in names:
                    state[names[id(p)]] = st["ax"].detach().cpu().clone()
        return state


def usable_validation_loss(loss: float, vocab: int) -> bool:
    """Whether a state with this validation loss may become the state a rollback
    returns to: finite, and not absurd.  Guessing uniformly costs log(vocab) nats
    a token; a model ten times worse than that (e.g. 5.6e20 nats) has diverged
    even though the number is finite."""
    return math.isfinite(loss) and loss <= ABSURD_LOSS_FACTOR * max(math.log(max(vocab, 2)), 2.0)


def divergence_message(reason: str, lr: float, checkpoint: Path, notes: list[str]) -> str:
    """Why a run stopped: the rollbacks tried so far, and the last good state only
    if it is on disk (a run that diverges in its first epoch has no checkpoint)."""
    if Path(checkpoint).exists():
        where = f"the last good state is in {checkpoint} (from the end of the last good epoch)"
    else:
        where = "no checkpoint was written yet (the run diverged before its first epoch ended)"
    tried = "".join(f"\n  rollback: {note}" for note in notes)
    return (
        f"{reason} even after halving the learning rate {MAX_ROLLBACKS} times (lr now {lr:g}); {where}. "
        f"Try a smaller --lr or --arch-lr.{tried}"
    )


def _ppl(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, data: torch.Tensor, bptt: int, swap_in: Optional[dict] = None) -> float:
    """Mean cross-entropy over ``data`` ((rows, B) token ids) in eval mode.

    ``swap_in`` (name -> tensor) temporarily replaces parameters, e.g. the
    averages of ASGD."""
    was_training = model.training
    model.eval()
    params = dict(model.named_parameters())
    saved = {}
    if swap_in:
        for name, value in swap_in.items():
            saved[name] = params[name].detach().clone()
            params[name].copy_(value)
    try:
        hidden = model.init_hidden(data.size(1))
        total, count = 0.0, 0
        for i in range(0, data.size(0) - 1, bptt):
            tokens, targets = get_batch(data, i, bptt)
            logits, hidden = model(tokens, hidden)
            hidden = detach_hidden(hidden)
            total += float(cross_entropy(logits, targets)) * targets.numel()
            count += targets.numel()
        return total / max(count, 1)
    finally:
        for name, value in saved.items():
            params[name].copy_(value)
        model.train(was_training)


# ----------------------------------------------------------------- Ctrl-C
class StopOnSigint:
    """Context manager: the first SIGINT asks ``trainer`` to stop after the
    current step (it then checkpoints); a second one interrupts at once."""

    def __init__(self, trainer: Trainer, message: Callable[[], None] = lambda: None):
        self.trainer = trainer
        self.message = message
        self.previous = None
        self.count = 0

    def _handler(self, signum, frame):
        self.count += 1
        if self.count > 1:
            raise KeyboardInterrupt
        self.message()
        self.trainer.request_stop()

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not in the main thread
            self.previous = None
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """``metrics.jsonl``: one JSON line per epoch, rewritten atomically."""
    text = "".join(runfiles.metrics_line(r) for r in history)
    atomic_write_text(Path(run_dir) / "metrics.jsonl", text)


__all__ = [
    "ARCH_PREFIX",
    "BilevelOptimizer",
    "Diverged",
    "Interrupted",
    "RunConfig",
    "RunError",
    "StopOnSigint",
    "Trainer",
    "atomic_torch_save",
    "atomic_write_text",
    "evaluate_loss",
    "load_checkpoint",
    "split_parameters",
    "write_metrics",
]
