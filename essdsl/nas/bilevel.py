"""The architecture step of the bilevel problem (DARTS family) and its helpers.

The optimizer knows nothing about the task or the space.  It is handed a
``loss_fn(*batch) -> (loss, carry)`` that evaluates the model with its *current*
parameters on a batch tuple (whatever the caller packs: ``(batch, carry)`` from the
trainer, ``(tokens, targets, hidden)`` from a test), the model weights and the
architecture weights (parameters with an ``arch`` name component, see
:func:`essdsl.tasks.base.is_arch_parameter`), and the manifest's masks.

Bilevel step (DARTS, Liu et al. 2019), per training batch:

* architecture: Adam on ∇α L_val, first order (at the current w) or second
  order: ``w' = w − η (clip(∇w L_train(w, α)) + wd·w)`` (the weight step, clipped
  as the official ``architect.py`` does), then
  ``∇α L_val(w', α) − η · [∇α L_train(w⁺, α) − ∇α L_train(w⁻, α)] / 2ε`` with
  ``w± = w ± ε ∇w' L_val(w', α)`` and ``ε = 0.01 / ‖∇w' L_val‖``.  Every
  training-loss evaluation of one architecture step replays the same dropout
  masks (the random state is restored before each), so the finite difference
  differentiates one function and not two noisy samples of it.  ``RunConfig.hvp
  = "official"`` instead perturbs w' along ``clip(∇w' L_val) + wd·w'`` as the
  official code does (docs/semantics.md, "Differences from the official DARTS code").
"""

from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch

from essdsl.nas import distributed

from essdsl.nas.runconfig import RunConfig
from essdsl.tasks.base import arch_key, is_arch_parameter

def split_parameters(model: torch.nn.Module) -> tuple[dict, dict]:
    """(model weights, architecture weights) as name -> parameter dicts."""
    weights, arch = {}, {}
    for name, p in model.named_parameters():
        (arch if is_arch_parameter(name) else weights)[name] = p
    return weights, arch


def arch_masks(manifest: dict, arch: dict) -> dict:
    """Boolean masks of the valid slots of each ops tensor (True = a real choice)."""
    masks = {}
    entries = (manifest or {}).get("arch", {})
    for name, p in arch.items():
        entry = entries.get(arch_key(name))
        if entry and entry.get("kind") == "ops" and "mask" in entry:
            masks[name] = torch.tensor(entry["mask"], dtype=torch.bool, device=p.device)
    return masks


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


def rng_state(device: torch.device):
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.getrng_state(device)
    return state


def set_rng_state(state, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _averaged(grads, like) -> list:
    """``grads`` averaged over the processes of a data-parallel run (one all-reduce;
    unchanged in one process), so that every process takes the same step."""
    return distributed.average_gradients(distributed.current(), grads, like)


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

    ``loss_fn(*batch) -> (loss, new_carry)`` evaluates the model with its *current*
    parameters; ``train_batch`` and ``val_batch`` are such tuples.
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
        """Return (arch gradients, val loss, the validation stream's new carry)."""
        if self.cfg.order == "second":
            return self.second_order_gradient(loss_fn, train_batch, val_batch, eta)
        with frozen(self.weights):
            loss, new_hidden = loss_fn(*val_batch)
            grads = torch.autograd.grad(loss, self.arch)
        *grads, loss = _averaged(list(grads) + [loss.detach()], self.arch + [loss])
        return grads, loss, new_hidden

    def second_order_gradient(self, loss_fn, train_batch, val_batch, eta: float):
        w, wd = self.weights, self.cfg.wd
        device = w[0].device
        rng = rng_state(device)
        train_loss, _ = loss_fn(*train_batch)
        saved_buffers = [b.detach().clone() for b in self.buffers]  # after this pass, as in the official code
        # the unrolled step is the weight optimiser's step: gradient clipped as in weight_update
        g_train = clip_by_total_norm(_averaged(torch.autograd.grad(train_loss, w, allow_unused=True), w), self.cfg.clip)
        saved = [p.detach().clone() for p in w]
        with torch.no_grad():
            for p, g in zip(w, g_train):
                step = p * wd if g is None else g + p * wd
                p.sub_(eta * step)
        try:
            val_loss, new_hidden = loss_fn(*val_batch)
            grads = torch.autograd.grad(val_loss, self.arch + w, allow_unused=True)
            *grads, val_loss = _averaged(list(grads) + [val_loss.detach()], self.arch + w + [val_loss])
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
            differences = _averaged([gp - gm for gp, gm in zip(grad_plus, grad_minus)], self.arch)
            result = [da - eta * diff / denominator for da, diff in zip(d_arch, differences)]
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
        set_rng_state(rng, self.weights[0].device)
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


__all__ = ["BilevelOptimizer", "arch_masks", "clip_by_total_norm", "frozen", "rng_state", "set_rng_state", "split_parameters"]
