"""An independent re-implementation of the official DARTS recurrent model
(github quark0/darts, folder ``rnn/``: ``model.py``, ``model_search.py``,
``utils.py``, ``architect.py``), written here from a reading of that code, not
copied.  It is the oracle of ``tests/test_official_darts.py`` and the
``official-darts`` row of ``essdsl bench``.

What the official code does, and this module therefore does:

* parameters: ``_W0`` ((ninp + nhid) x 2 nhid), ``_Ws[i]`` (nhid x 2 nhid, one per
  node), the embedding tied to the decoder, a decoder bias; all weights uniform
  in +-INITRANGE = 0.04, bias 0; the search model's architecture weights are
  ONE (36, 5) tensor, rows = the (predecessor, node) pairs node by node,
  columns in ``PRIMITIVES`` order (``none`` first), initialised 1e-3 * randn;
* dropouts in training: ``dropoute`` (whole embedding rows), ``dropouti``
  (locked over time, on the embedded tokens), ``dropoutx`` / ``dropouth``: one
  (B, d) mask per forward call, ``floor(rand + keep) / keep``; the x mask on
  x_t in the s0 product, the h mask on h_{t-1} in the s0 product and on EVERY
  state before its node's product (``states * h_mask``); the highway carry is
  the unmasked state; ``dropout`` (locked) on the cell outputs;
* search cell: s0 and each of s1..s8 go through ONE ``BatchNorm1d(nhid,
  affine=False)`` (nine updates of its running statistics per time step);
  node i mixes all its predecessors with softmax(weights) over the ops,
  ``none`` contributing nothing; the output is mean(s1..s8);
* discrete cell (a genotype): node i = highway(op) of its one predecessor, no
  normalisation; output mean of the ``concat`` nodes (1..8);
* the model returns log_softmax over the vocabulary.

Masks can be injected (``masks=``) under essdsl's mask names (``dropoute``,
``dropouti``, ``dropoutx.x``, ``dropouth.<nhid>``, ``dropout``; see
``essdsl.compile.config``), so the test can drive this model and a compiled
essdsl model with the very same masks.  :func:`load_essdsl_state` and
:func:`essdsl_named` translate between the official layout and essdsl's
parameter names (``cell.s0_w0``, ``cell.s<i>_w``, ``arch.s<i>_ops``,
``shared_norm``).

:func:`official_arch_gradient` follows ``architect.py``: first order (the
validation loss's gradient at the current weights) or second order (unrolled
step with the weight optimiser's clipping and weight decay, then the
finite-difference Hessian-vector product around the unrolled weights).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PRIMITIVES = ("none", "tanh", "relu", "sigmoid", "identity")  # column order of the official weights
STEPS = 8
INITRANGE = 0.04
ESSDSL_OPS = ("tanh", "relu", "sigmoid", "identity", "zero")  # column order of essdsl's arch.s<i>_ops
# official column k holds essdsl column _FROM_ESSDSL[k]
_FROM_ESSDSL = [ESSDSL_OPS.index("zero" if p == "none" else p) for p in PRIMITIVES]
# Published genotypes (rnn/genotypes.py): (op, predecessor) of nodes 1..8
DARTS_V1 = [("relu", 0), ("relu", 1), ("tanh", 2), ("relu", 3), ("relu", 4), ("identity", 1), ("relu", 5), ("relu", 1)]
DARTS_V2 = [("sigmoid", 0), ("relu", 1), ("relu", 1), ("identity", 1), ("tanh", 2), ("sigmoid", 5), ("tanh", 3), ("relu", 5)]


def _activation(name: str) -> Callable[[Tensor], Tensor]:
    return {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "identity": lambda v: v}[name]


def variational_mask(batch: int, size: int, p: float, like: Tensor) -> Tensor:
    """The official ``mask2d``: keep with probability 1 - p, scaled by 1 / (1 - p)."""
    keep = 1.0 - p
    return torch.floor(torch.rand(batch, size, dtype=like.dtype, device=like.device) + keep) / keep


class OfficialDartsLM(nn.Module):
    """The DARTS recurrent language model: the search supernet (``genotype=None``)
    or a discrete cell (``genotype`` = (op, predecessor) of nodes 1..8)."""

    def __init__(self, vocab: int, nhid: int, steps: int = STEPS, genotype: Optional[Sequence] = None,
                 dropout: float = 0.0, dropouth: float = 0.0, dropoutx: float = 0.0, dropouti: float = 0.0,
                 dropoute: float = 0.0):  # fmt: skip
        super().__init__()
        self.ninp = self.nhid = nhid  # the official model asserts ninp == nhid == nhidlast
        self.steps = len(genotype) if genotype is not None else steps
        self.genotype = list(genotype) if genotype is not None else None
        self.dropout, self.dropouth, self.dropoutx = dropout, dropouth, dropoutx
        self.dropouti, self.dropoute = dropouti, dropoute
        self.encoder = nn.Embedding(vocab, nhid)
        self.decoder_bias = nn.Parameter(torch.zeros(vocab))  # the decoder's weight is encoder.weight
        self._W0 = nn.Parameter(torch.empty(2 * nhid, 2 * nhid).uniform_(-INITRANGE, INITRANGE))
        self._Ws = nn.ParameterList(
            [nn.Parameter(torch.empty(nhid, 2 * nhid).uniform_(-INITRANGE, INITRANGE)) for _ in range(self.steps)]
        )
        with torch.no_grad():
            self.encoder.weight.uniform_(-INITRANGE, INITRANGE)
        if self.genotype is None:
            self.bn = nn.BatchNorm1d(nhid, affine=False)
            rows = self.steps * (self.steps + 1) // 2
            self.weights = nn.Parameter(1e-3 * torch.randn(rows, len(PRIMITIVES)))

    def init_hidden(self, batch_size: int) -> list:
        return [self.encoder.weight.new_zeros(1, batch_size, self.nhid)]

    def arch_parameters(self) -> list:
        return [self.weights] if self.genotype is None else []

    def weight_parameters(self) -> list:
        return [p for name, p in self.named_parameters() if name != "weights"]

    # ------------------------------------------------------------ the cell
    def _s0(self, x: Tensor, h: Tensor, x_mask: Optional[Tensor], h_mask: Optional[Tensor]) -> Tensor:
        gate_in = torch.cat([x if x_mask is None else x * x_mask, h if h_mask is None else h * h_mask], dim=-1)
        c0, g0 = torch.split(gate_in @ self._W0, self.nhid, dim=-1)
        return h + torch.sigmoid(c0) * (torch.tanh(g0) - h)

    def _search_cell(self, x, h, x_mask, h_mask, probs: Tensor) -> Tensor:
        s0 = self.bn(self._s0(x, h, x_mask, h_mask))
        states = s0.unsqueeze(0)  # (i + 1, B, nhid): s0..s_i
        row = 0
        for i in range(self.steps):
            product_in = states if h_mask is None else states * h_mask.unsqueeze(0)
            gates = (product_in.reshape(-1, self.nhid) @ self._Ws[i]).view(i + 1, -1, 2 * self.nhid)
            c, g = torch.split(gates, self.nhid, dim=-1)
            c = torch.sigmoid(c)
            node = torch.zeros_like(s0)
            for k, name in enumerate(PRIMITIVES):
                if name == "none":
                    continue  # contributes nothing
                candidates = states + c * (_activation(name)(g) - states)  # highway from each predecessor
                node = node + (probs[row : row + i + 1, k].view(-1, 1, 1) * candidates).sum(0)
            states = torch.cat([states, self.bn(node).unsqueeze(0)], 0)
            row += i + 1
        return states[-self.steps :].mean(0)

    def _discrete_cell(self, x, h, x_mask, h_mask) -> Tensor:
        states = [self._s0(x, h, x_mask, h_mask)]
        for i, (name, pred) in enumerate(self.genotype):
            prev = states[pred]
            c, g = torch.split((prev if h_mask is None else prev * h_mask) @ self._Ws[i], self.nhid, dim=-1)
            states.append(prev + torch.sigmoid(c) * (_activation(name)(g) - prev))
        return torch.stack(states[1:], -1).mean(-1)  # concat = range(1, 9)

    # ------------------------------------------------------------ the LM
    def forward(self, tokens: Tensor, hidden: list, masks: Optional[dict] = None):
        """(log-probabilities (T, B, vocab), new hidden).  ``masks``: dropout masks by
        essdsl name to use instead of drawing them (training only)."""
        masks = masks or {}
        T, B = tokens.shape
        weight = self.encoder.weight
        if self.training and self.dropoute:
            row_mask = masks.get("dropoute")
            if row_mask is None:
                row_mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - self.dropoute) / (1 - self.dropoute)
            weight = row_mask * weight
        emb = F.embedding(tokens, weight)
        emb = self._locked(emb, self.dropouti, masks.get("dropouti"))
        x_mask = h_mask = None
        if self.training:  # the official cell masks in training even at p = 0 (a mask of ones)
            x_mask = masks.get("dropoutx.x")
            h_mask = masks.get(f"dropouth.{self.nhid}")
            x_mask = variational_mask(B, self.ninp, self.dropoutx, emb) if x_mask is None else x_mask
            h_mask = variational_mask(B, self.nhid, self.dropouth, emb) if h_mask is None else h_mask
        probs = F.softmax(self.weights, dim=-1) if self.genotype is None else None
        h = hidden[0][0]
        outputs = []
        for t in range(T):
            if self.genotype is None:
                h = self._search_cell(emb[t], h, x_mask, h_mask, probs)
            else:
                h = self._discrete_cell(emb[t], h, x_mask, h_mask)
            outputs.append(h)
        out = self._locked(torch.stack(outputs), self.dropout, masks.get("dropout"))
        logits = F.linear(out, self.encoder.weight, self.decoder_bias)
        return F.log_softmax(logits, dim=-1), [h.unsqueeze(0)]

    def _locked(self, x: Tensor, p: float, mask: Optional[Tensor]) -> Tensor:
        """Locked dropout: one (1, B, d) mask for every time step; nothing in eval or at p = 0."""
        if not self.training or not p:
            return x
        if mask is None:
            mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - p) / (1 - p)
        return mask * x

    def loss(self, tokens: Tensor, targets: Tensor, hidden: list, masks: Optional[dict] = None):
        log_prob, new_hidden = self(tokens, hidden, masks)
        return F.nll_loss(log_prob.view(-1, log_prob.size(-1)), targets.reshape(-1)), new_hidden


# ---------------------------------------------------------------- essdsl names
def _essdsl_to_official_names(steps: int) -> dict:
    names = {"encoder.weight": "encoder.weight", "decoder_bias": "decoder_bias", "cell.s0_w0": "_W0"}
    names.update({f"cell.s{i + 1}_w": f"_Ws.{i}" for i in range(steps)})
    for buffer in ("running_mean", "running_var", "num_batches_tracked"):
        names[f"shared_norm.{buffer}"] = f"bn.{buffer}"
    return names


def load_essdsl_state(model: OfficialDartsLM, state: dict) -> None:
    """Copy an essdsl state dict (darts_rnn supernet, or a DARTS genotype) into ``model``.
    Raises KeyError / RuntimeError when the layouts differ."""
    own = model.state_dict()
    names = _essdsl_to_official_names(model.steps)
    expected = {k for k, v in names.items() if v in own}
    if model.genotype is None:
        expected |= {f"arch.s{i + 1}_ops" for i in range(model.steps)}
    if set(state) != expected:
        raise KeyError(f"not a DARTS layout: extra {sorted(set(state) - expected)}, missing {sorted(expected - set(state))}")
    new = {names[k]: v for k, v in state.items() if not k.startswith("arch.")}
    if model.genotype is None:
        new["weights"] = torch.cat([state[f"arch.s{i + 1}_ops"][:, _FROM_ESSDSL] for i in range(model.steps)])
    model.load_state_dict(new, strict=True)


def essdsl_named(model: OfficialDartsLM, tensors: dict) -> dict:
    """Official-named tensors (parameters, gradients, buffers) renamed to essdsl's names;
    ``weights`` is split back into ``arch.s<i>_ops`` with essdsl's column order."""
    back = {v: k for k, v in _essdsl_to_official_names(model.steps).items()}
    out = {back[k]: v for k, v in tensors.items() if k in back}
    if "weights" in tensors:
        to_essdsl = [_FROM_ESSDSL.index(c) for c in range(len(ESSDSL_OPS))]
        row = 0
        for i in range(model.steps):
            out[f"arch.s{i + 1}_ops"] = tensors["weights"][row : row + i + 1][:, to_essdsl]
            row += i + 1
    return out


# ---------------------------------------------------------------- architect.py
def _clip_(grads: list, max_norm: float) -> None:
    """Scale ``grads`` in place to total norm ``max_norm`` (the architect's ``_clip``)."""
    total = sum(g.norm(2) ** 2 for g in grads) ** 0.5
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for g in grads:
            g.mul_(coef)


def official_arch_gradient(model: OfficialDartsLM, train_batch: tuple, val_batch: tuple, eta: float, wd: float,
                           clip: float, unrolled: bool, masks: Optional[dict] = None, paper_hvp: bool = False) -> list:  # fmt: skip
    """The architecture gradient one ``Architect.step`` hands to its Adam.

    ``train_batch`` / ``val_batch``: (tokens, targets, hidden).  First order: the
    validation loss's gradient at the current weights.  Second order: w' = w -
    eta (clip(grad L_train) + wd w) on a copy; at w' the validation loss's
    arch gradient g and v = clip(grad_w' L_val) + wd w'; R = 0.01 / |v|; the
    training loss's arch gradients at w' + R v and w' - R v (perturbing the
    unrolled weights, as the official code does); result g - eta (g+ - g-) /
    (2 R + 1e-10).  ``model`` itself is left unchanged except for its
    BatchNorm statistics in first order (as in the official code).

    ``paper_hvp=True`` replaces the last part by the paper's formula, which
    essdsl uses (docs/semantics.md, "Differences from the official DARTS code"):
    v = grad_w' L_val (no clipping, no decay), R = 0.01 / |v|, perturbing the
    CURRENT weights w +- R v, and dividing by 2 R.
    """
    if not unrolled:
        loss, _ = model.loss(*val_batch, masks=masks)
        return list(torch.autograd.grad(loss, model.arch_parameters()))
    weights = model.weight_parameters()
    loss, _ = model.loss(*train_batch, masks=masks)
    grads = [g.detach() for g in torch.autograd.grad(loss, weights)]
    _clip_(grads, clip)
    clone = OfficialDartsLM(model.encoder.num_embeddings, model.nhid, model.steps, model.genotype,
                            model.dropout, model.dropouth, model.dropoutx, model.dropouti, model.dropoute)  # fmt: skip
    clone = clone.to(model.encoder.weight)
    clone.load_state_dict(model.state_dict())
    clone.train(model.training)
    with torch.no_grad():
        for p, w, g in zip(clone.weight_parameters(), weights, grads):
            p.copy_(w - eta * (g + wd * w))
    val_loss, _ = clone.loss(*val_batch, masks=masks)
    g_arch = torch.autograd.grad(val_loss, clone.arch_parameters(), retain_graph=True)
    d_w = [g.detach() for g in torch.autograd.grad(val_loss, clone.weight_parameters())]
    if paper_hvp:
        vector = d_w
        with torch.no_grad():  # back to the current weights: the Hessian is taken at w
            for p, w in zip(clone.weight_parameters(), weights):
                p.copy_(w)
    else:
        _clip_(d_w, clip)
        vector = [g + wd * p.detach() for g, p in zip(d_w, clone.weight_parameters())]
    R = 0.01 / torch.cat([v.reshape(-1) for v in vector]).norm()
    at = []
    for sign in (1.0, -2.0, 1.0):
        with torch.no_grad():
            for p, v in zip(clone.weight_parameters(), vector):
                p.add_(sign * R * v)
        if len(at) < 2:
            loss, _ = clone.loss(*train_batch, masks=masks)
            at.append(torch.autograd.grad(loss, clone.arch_parameters()))
    denominator = 2 * R if paper_hvp else 2 * R + 1e-10
    return [g - eta * (gp - gm) / denominator for g, gp, gm in zip(g_arch, at[0], at[1])]
