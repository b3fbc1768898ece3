"""Word-level language modelling: the task essdsl was built for, as a plug-in.

Data: the built-in synthetic corpus (a seeded Markov source, :mod:`essdsl.tasks.corpus`)
or a folder with PTB-format ``train.txt``/``valid.txt``/``test.txt`` (PTB, WikiText-2).
The model is the compiled LM artifact (embedding, the cell, a tied decoder); the loss
is the mean cross-entropy per token; the metric is the perplexity (lower is better);
the baseline the model must beat is the unigram model estimated on train.

Batching follows DARTS's ``rnn/`` code: each split is cut into ``batch_size`` columns
(:func:`~essdsl.tasks.corpus.batchify`); a training epoch walks the rows in segments
whose length is drawn per step (``bptt`` with probability 0.95 else ``bptt/2``, then
N(that, 5), at least 5) from a ``random.Random(seed)``; the step's learning rate is
scaled by the segment's length over ``bptt``.  The hidden state is carried from one
segment to the next and starts from zeros each epoch.  A search pairs each training
segment with the validation segment of the same length that follows the previous
one, wrapping around (with a fresh hidden state) at the end of the validation split.
Evaluation walks a split in ``bptt`` segments at the evaluation batch size.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Optional

import torch
import torch.nn.functional as F

from essdsl.tasks.base import Batch, Metric
from essdsl.tasks.corpus import Corpus, batchify, expected_seq_len, get_batch, load_corpus, sample_seq_len

# Sizes and hyperparameters per preset.  "synthetic" (no --data): small enough that
# `essdsl search spaces/ess_joint.space` ends in minutes on two CPU cores.  "darts"
# (with --data): the DARTS settings (DESIGN.md §3).  From the official DARTS
# initialisation (embedding uniform(+-0.04)) a derived cell on the built-in corpus sits
# on a plateau at the unigram model for about four epochs before it learns (the demo's
# genotype: valid ppl 45.0 after epochs 1-4, 11.8 after 5, 3.7 after 9), hence 8
# training epochs there.
PRESETS = {
    "synthetic": {
        "search": dict(ninp=32, nhid=32, batch_size=32, bptt=20, epochs=3, lr=20.0),
        "train": dict(ninp=32, nhid=32, batch_size=32, bptt=20, epochs=8, lr=20.0),
        "search_dropouts": dict(dropout=0.1, dropouth=0.05, dropoutx=0.1, dropouti=0.05, dropoute=0.0),
        "train_dropouts": dict(dropout=0.1, dropouth=0.05, dropoutx=0.1, dropouti=0.05, dropoute=0.0),
        "final_epochs": 8,  # the search's final training of its genotype
    },
    "darts": {
        "search": dict(ninp=300, nhid=300, batch_size=256, bptt=35, epochs=50, lr=20.0),
        "train": dict(ninp=850, nhid=850, batch_size=64, bptt=35, epochs=300, lr=20.0),
        "search_dropouts": dict(dropout=0.75, dropouth=0.25, dropoutx=0.75, dropouti=0.2, dropoute=0.0),
        "train_dropouts": dict(dropout=0.75, dropouth=0.25, dropoutx=0.75, dropouti=0.2, dropoute=0.1),
        "final_epochs": 0,  # use 'essdsl train'
    },
}


# What every run starts from unless told otherwise (DARTS's values).
COMMON = {"search": dict(wd=5e-7, clip=0.25, eval_batch_size=10, seed=0), "train": dict(wd=8e-7, clip=0.25, eval_batch_size=10, seed=0)}


def preset_name(data: Optional[str]) -> str:
    """The preset a run gets: DARTS's settings on a real corpus, small ones on the built-in one."""
    return "synthetic" if data is None else "darts"


def defaults(kind: str, options: dict) -> dict:
    """The settings of a ``kind`` ("search" or "train") run with these task options:
    the preset's sizes, epochs, batch size, bptt, lr and dropouts, and the final
    training's epochs after a search."""
    preset = PRESETS[preset_name(options.get("data"))]
    return {**COMMON[kind], **preset[kind], "dropouts": dict(preset[f"{kind}_dropouts"]), "final_epochs": preset["final_epochs"]}


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


def detach_hidden(hidden):
    return [h.detach() for h in hidden]


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 700 else math.inf


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, data: torch.Tensor, bptt: int) -> float:
    """Mean cross-entropy (nats per token) of ``model`` in eval mode over ``data``
    ((rows, B) token ids), in ``bptt`` segments with the hidden state carried."""
    was_training = model.training
    model.eval()
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
        model.train(was_training)


def _segment(tokens: torch.Tensor, targets: torch.Tensor, bptt: int, fresh: bool = False) -> Batch:
    length = tokens.size(0)
    return Batch(inputs=(tokens, targets), size=targets.numel(), lr_scale=Fraction(length, bptt), fresh=fresh)


class TrainStream:
    """One epoch of training segments of DARTS's variable length (see the module doc)."""

    def __init__(self, data: torch.Tensor, bptt: int, seed: int):
        self.data, self.bptt = data, bptt
        self.rng = random.Random(seed)
        self.position = 0

    def next(self, like: Optional[Batch] = None) -> Optional[Batch]:
        if self.position >= self.data.size(0) - 2:
            return None
        tokens, targets = get_batch(self.data, self.position, sample_seq_len(self.bptt, self.rng))
        fresh = self.position == 0
        self.position += tokens.size(0)
        return _segment(tokens, targets, self.bptt, fresh)

    def restart(self) -> None:
        self.position = 0

    def progress(self) -> tuple[int, int]:
        return self.position, self.data.size(0) - 2

    def steps_per_epoch(self) -> int:
        """Expected steps in one epoch (the segment length varies per step)."""
        return max(1, math.ceil((self.data.size(0) - 2) / expected_seq_len(self.bptt)))

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"position": self.position, "rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))


class SearchStream:
    """Endless validation segments, each as long as the training segment it pairs with."""

    def __init__(self, data: torch.Tensor, bptt: int):
        self.data, self.bptt = data, bptt
        self.position = 0

    def next(self, like: Optional[Batch] = None) -> Batch:
        """The segment as long as ``like``'s; at the end of the split it wraps around to a
        fresh start (the hidden state starts from zeros again)."""
        length = like.inputs[0].size(0) if like is not None else self.bptt
        fresh = self.position + 1 + length > self.data.size(0)
        if fresh:
            self.position = 0
        tokens, targets = get_batch(self.data, self.position, length)
        self.position += tokens.size(0)
        return _segment(tokens, targets, self.bptt, fresh)

    def restart(self) -> None:
        self.position = 0

    def progress(self) -> tuple[int, int]:
        return self.position, self.data.size(0) - 1

    def state_dict(self) -> dict:
        return {"position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.position = int(state["position"])


@dataclass
class LanguageModelTask:
    """Language modelling on ``corpus`` with DARTS's batching at mean segment length ``bptt``.

    ``dropouts`` are the model's (output, hidden, input, embedded-input, embedding-row);
    ``criterion`` is the training loss of logits and targets (a ``torch.compile``d
    cross-entropy under ``--compile``); evaluation always uses the eager one.
    """

    corpus: Corpus
    bptt: int = 35
    dropouts: dict = field(default_factory=lambda: dict(PRESETS["darts"]["search_dropouts"]))
    data: Optional[str] = None  # the folder, or None for the built-in corpus
    synthetic_tokens: Optional[int] = None
    criterion: object = cross_entropy

    name = "lm"
    metrics = (Metric("ppl", higher_is_better=False, label="ppl"),)

    def __post_init__(self):
        self._eval_data: dict = {}

    @classmethod
    def load(cls, data: Optional[str] = None, seed: int = 0, synthetic_tokens: Optional[int] = None, **settings) -> "LanguageModelTask":
        """The task on the corpus in folder ``data`` (None: the built-in corpus, seeded by ``seed``)."""
        return cls(load_corpus(data, seed, synthetic_tokens), data=data, synthetic_tokens=synthetic_tokens, **settings)

    # -- what the run records and prints
    def describe(self) -> str:
        return self.corpus.describe()

    def fingerprint(self) -> dict:
        """The corpus's name, source, vocabulary and reference perplexities, and ``hash``:
        16 hex digits of the sha256 of its three splits and its vocabulary."""
        digest = hashlib.sha256()
        for split in (self.corpus.train, self.corpus.valid, self.corpus.test):
            digest.update(split.tobytes())
        digest.update(str(self.corpus.vocab).encode())
        return {"name": self.corpus.name, "source": self.corpus.source, "vocab": self.corpus.vocab,
                "unigram_ppl": self.corpus.unigram_ppl, "floor_ppl": self.corpus.floor_ppl, "hash": digest.hexdigest()[:16]}  # fmt: skip

    # -- the model
    def model_config(self, search: bool):
        from essdsl.compile import ModelConfig

        return ModelConfig(vocab=self.corpus.vocab, search=search, **self.dropouts)

    def build(self, graph, search: bool, seed: int, source_text: Optional[str] = None):
        """(model, manifest, model config): the generated LM around ``graph``'s cell, its
        weights drawn from ``seed``."""
        from essdsl.compile import build_manifest, build_model

        torch.manual_seed(seed)
        config = self.model_config(search)
        model = build_model(graph, config, impl="generated")
        return model, build_manifest(graph, config, model, source_text=source_text), config

    def build_model(self, graph, search: bool, seed: int) -> torch.nn.Module:
        return self.build(graph, search, seed)[0]

    # -- data
    def train_stream(self, batch_size: int, seed: int, device: torch.device) -> TrainStream:
        return TrainStream(batchify(self.corpus.train, batch_size).to(device), self.bptt, seed)

    def search_stream(self, batch_size: int, device: torch.device) -> SearchStream:
        return SearchStream(batchify(self.corpus.valid, batch_size).to(device), self.bptt)

    def split_data(self, split: str, batch_size: int, device) -> torch.Tensor:
        key = (split, batch_size, str(device))
        if key not in self._eval_data:
            self._eval_data[key] = batchify(self.corpus.split(split), batch_size).to(device)
        return self._eval_data[key]

    # -- loss and metrics
    def loss(self, model: torch.nn.Module, batch: Batch, carry):
        tokens, targets = batch.inputs
        hidden = model.init_hidden(tokens.size(1)) if carry is None else carry
        logits, new_hidden = model(tokens, hidden)
        return self.criterion(logits, targets), detach_hidden(new_hidden)

    def evaluate(self, model: torch.nn.Module, split: str, batch_size: int) -> dict:
        device = next(model.parameters()).device
        loss = evaluate_loss(model, self.split_data(split, batch_size, device), self.bptt)
        return {"loss": loss, **self.loss_metrics(loss)}

    def loss_metrics(self, loss: float) -> dict:
        """The metrics that follow from a mean loss alone (the trainer's training-epoch report)."""
        return {"ppl": perplexity(loss)}

    def baseline(self, split: str = "valid") -> Optional[tuple[str, float]]:
        if self.corpus.unigram_ppl is None:
            return None
        return "unigram", self.corpus.unigram_ppl

    def chance_loss(self) -> float:
        return math.log(max(self.corpus.vocab, 2))
