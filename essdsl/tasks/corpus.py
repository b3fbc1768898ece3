"""Language-model data: the PTB/WikiText text format and a built-in synthetic corpus.

Text format (Mikolov PTB, WikiText-2): ``train.txt``, ``valid.txt``, ``test.txt``
in one folder, one sentence a line, words separated by spaces.  Every line ends
with ``<eos>``.  The vocabulary comes from the training split (plus ``<unk>``
and ``<eos>``); words of valid/test outside it become ``<unk>``.

Synthetic corpus: a sparse k-th order Markov source generated from a seed.  Its
entropy rate is computed exactly from the stationary distribution over contexts,
so every run can report its perplexity next to the true floor ``exp(H)``.

Batching follows the usual recurrent LM recipe: :func:`batchify` cuts a token
stream into ``B`` columns, :func:`get_batch` takes ``seq_len`` rows from a
position, :func:`sample_seq_len` draws DARTS's variable BPTT length.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from essdsl.errors import EssdslError

SPLITS = ("train", "valid", "test")
EOS = "<eos>"
UNK = "<unk>"


class DataError(EssdslError):
    """A data set cannot be used; the message says why and what to do.  ``located``:
    the message already starts with the file it is about (``path: error: ...``)."""

    def __init__(self, message: str, located: bool = False):
        super().__init__(message)
        self.located = located


@dataclass
class Corpus:
    """Token ids of the three splits and the vocabulary they index.

    ``floor_ppl`` (synthetic corpus only) is the best perplexity any model can
    reach: ``exp`` of the source's entropy rate.  ``unigram_ppl`` is the
    perplexity on valid of the unigram distribution estimated on train.
    """

    name: str
    words: list[str]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    source: str = ""
    floor_ppl: Optional[float] = None
    entropy_rate: Optional[float] = None
    unigram_ppl: Optional[float] = None
    info: dict = field(default_factory=dict)

    @property
    def vocab(self) -> int:
        return len(self.words)

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise DataError(f"unknown split '{name}' (one of: {', '.join(SPLITS)})")
        return getattr(self, name)

    def describe(self) -> str:
        sizes = ", ".join(f"{s} {len(self.split(s)):,}" for s in SPLITS)
        return f"{self.name}: vocab {self.vocab:,}; tokens {sizes}"


# ----------------------------------------------------------------- text corpora
def _read_lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, expected a text file") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path} is not UTF-8 text (invalid byte 0x{data[exc.start]:02x} on line {line}); "
            "convert it with e.g. 'iconv -t UTF-8'"
        ) from None
    lines = [line.split() for line in text.splitlines()]
    if not any(lines):
        raise DataError(f"{path} is empty: a split needs at least one line of text")
    return lines


def load_text_corpus(folder) -> Corpus:
    """Load ``train.txt``/``valid.txt``/``test.txt`` from ``folder`` (PTB/WikiText format)."""
    root = Path(folder)
    if not root.exists():
        raise DataError(f"data folder {root} does not exist (it should hold train.txt, valid.txt and test.txt)")
    if not root.is_dir():
        raise DataError(f"--data must be a folder holding train.txt, valid.txt and test.txt; {root} is a file")
    missing = [f"{s}.txt" for s in SPLITS if not (root / f"{s}.txt").exists()]
    if missing:
        raise DataError(f"data folder {root} lacks {', '.join(missing)} (it needs train.txt, valid.txt and test.txt)")
    lines = {s: _read_lines(root / f"{s}.txt") for s in SPLITS}
    index: dict[str, int] = {}
    for line in lines["train"]:
        for w in line:
            index.setdefault(w, len(index))
    for special in (UNK, EOS):
        index.setdefault(special, len(index))
    unk, eos = index[UNK], index[EOS]

    def encode(split_lines) -> np.ndarray:
        ids = []
        for line in split_lines:
            if not line:
                continue
            ids.extend(index.get(w, unk) for w in line)
            ids.append(eos)
        return np.asarray(ids, dtype=np.int64)

    words = [None] * len(index)
    for w, i in index.items():
        words[i] = w
    corpus = Corpus(
        name=root.name or str(root),
        words=words,
        train=encode(lines["train"]),
        valid=encode(lines["valid"]),
        test=encode(lines["test"]),
        source=str(root.resolve()),
    )
    corpus.unigram_ppl = unigram_perplexity(corpus.train, corpus.valid, corpus.vocab)
    return corpus


def unigram_perplexity(train: np.ndarray, evaluate: np.ndarray, vocab: int, smoothing: float = 1.0) -> float:
    """Perplexity on ``evaluate`` of the add-``smoothing`` unigram distribution of ``train``."""
    counts = np.bincount(train, minlength=vocab).astype(np.float64) + smoothing
    logp = np.log(counts / counts.sum())
    return float(math.exp(-logp[evaluate].mean()))


# ----------------------------------------------------------------- synthetic corpus
@dataclass(frozen=True)
class MarkovSource:
    """A sparse k-th order Markov source over ``vocab`` tokens.

    Context ``c = (w_{t-k}, …, w_{t-1})`` is encoded as the base-``vocab``
    number ``Σ w_{t-k+i} · vocab^(k-1-i)``.  Given c the next token is, with
    probability ``1 - noise``, one of ``successors[c]`` (weights
    ``probs[c]``), else uniform over the vocabulary — so a context has a few
    likely next tokens and the chain is irreducible and aperiodic.
    """

    vocab: int
    order: int
    successors: np.ndarray  # (vocab**order, S) int
    probs: np.ndarray  # (vocab**order, S) float64, rows sum to 1
    noise: float

    @property
    def contexts(self) -> int:
        return self.vocab**self.order

    def next_distribution(self) -> np.ndarray:
        """Full (contexts, vocab) matrix of P(next | context) (small sources only)."""
        p = np.full((self.contexts, self.vocab), self.noise / self.vocab)
        rows = np.repeat(np.arange(self.contexts), self.successors.shape[1])
        np.add.at(p, (rows, self.successors.ravel()), (1 - self.noise) * self.probs.ravel())
        return p

    def stationary(self, tol: float = 1e-13, max_iter: int = 20000) -> np.ndarray:
        """Stationary distribution over contexts by power iteration (float64)."""
        V, C = self.vocab, self.contexts
        shift = self.contexts // V  # V**(k-1)
        # next context of (c, w) is (c mod V^(k-1)) * V + w
        base = (np.arange(C) % shift) * V
        targets = (base[:, None] + self.successors).ravel()
        weights = (1 - self.noise) * self.probs
        pi = np.full(C, 1.0 / C)
        for _ in range(max_iter):
            sparse = np.bincount(targets, weights=(pi[:, None] * weights).ravel(), minlength=C)
            # uniform part: mass of every context with suffix s goes to (s, w) for all w
            suffix_mass = np.bincount(np.arange(C) % shift, weights=pi, minlength=shift)
            uniform = np.repeat(suffix_mass * self.noise / V, V)
            new = sparse + uniform
            new /= new.sum()
            delta = np.abs(new - pi).sum()
            pi = new
            if delta < tol:
                break
        return pi

    def conditional_entropies(self) -> np.ndarray:
        """H(next | c) in nats for every context c."""
        V = self.vocab
        sparse_p = (1 - self.noise) * self.probs
        # successors are distinct, so a successor's total probability is sparse + noise/V
        p_succ = sparse_p + self.noise / V
        rest = V - self.successors.shape[1]
        h = -(p_succ * np.log(p_succ)).sum(axis=1)
        if rest and self.noise > 0:
            q = self.noise / V
            h = h - rest * q * math.log(q)
        return h

    def entropy_rate(self) -> float:
        """Entropy rate H = Σ_c π(c) H(next | c) in nats per token."""
        return float(self.stationary() @ self.conditional_entropies())

    def sample(self, length: int, rng: np.random.Generator) -> np.ndarray:
        V = self.vocab
        shift = self.contexts // V
        out = np.empty(length, dtype=np.int64)
        cum = np.cumsum(self.probs, axis=1)
        u_noise = rng.random(length)
        u_pick = rng.random(length)
        u_token = rng.integers(0, V, size=length)
        context = int(rng.integers(0, self.contexts))
        noise = self.noise
        successors = self.successors
        for t in range(length):
            if u_noise[t] < noise:
                w = int(u_token[t])
            else:
                row = cum[context]
                j = int(np.searchsorted(row, u_pick[t] * row[-1], side="right"))
                w = int(successors[context, min(j, successors.shape[1] - 1)])
            out[t] = w
            context = (context % shift) * V + w
        return out


def make_markov_source(
    seed: int, vocab: int = 50, order: int = 3, successors: int = 4, noise: float = 0.05, classes: int = 3
) -> MarkovSource:
    """A random sparse source with learnable long memory.

    The last token ``w_{t-1}`` fixes which ``successors`` tokens are likely next
    (drawn at random per token); the older tokens ``w_{t-order} … w_{t-2}`` fix,
    through a random class label per token (``classes`` labels), *how* likely each
    of them is (Dirichlet(0.3) weights per class tuple and last token).  A model
    that remembers only the last token reaches roughly the mixture entropy of
    those weights; one that remembers ``order`` tokens can reach the floor.
    Stored as a general k-th order table, so the entropy rate is exact.
    """
    if order < 1 or vocab < 2 or not 1 <= successors <= vocab or classes < 1:
        raise DataError("a Markov source needs order >= 1, vocab >= 2, 1 <= successors <= vocab and classes >= 1")
    rng = np.random.default_rng(np.random.PCG64(seed))
    contexts = vocab**order
    likely = np.argsort(rng.random((vocab, vocab)), axis=1)[:, :successors].astype(np.int64)
    label = rng.integers(0, classes, size=vocab)
    weights = rng.dirichlet(np.full(successors, 0.3), size=(classes ** (order - 1), vocab))
    digits = np.arange(contexts)[:, None] // (vocab ** np.arange(order - 1, -1, -1))[None, :] % vocab
    last = digits[:, -1]
    class_key = np.zeros(contexts, dtype=np.int64)
    for i in range(order - 1):
        class_key = class_key * classes + label[digits[:, i]]
    return MarkovSource(vocab, order, likely[last], weights[class_key, last], noise)


SYNTHETIC_DEFAULTS = dict(vocab=50, order=3, successors=4, noise=0.05, classes=3, train=60000, valid=8000, test=8000)


def synthetic_corpus(seed: int = 0, **overrides) -> Corpus:
    """The built-in corpus: a seeded sparse 3rd-order Markov source over 50 tokens
    (see :func:`make_markov_source`).

    Deterministic for a given seed (numpy PCG64).  The three splits are
    consecutive stretches of one sample, so valid and test come from the same
    stationary process as train.
    """
    params = {**SYNTHETIC_DEFAULTS, **overrides}
    source = make_markov_source(
        seed, params["vocab"], params["order"], params["successors"], params["noise"], params["classes"]
    )
    rng = np.random.default_rng(np.random.PCG64(seed + 1_000_003))
    n_train, n_valid, n_test = params["train"], params["valid"], params["test"]
    stream = source.sample(n_train + n_valid + n_test + 100, rng)[100:]  # burn in
    h = source.entropy_rate()
    words = [f"w{i}" for i in range(source.vocab)]
    corpus = Corpus(
        name=f"synthetic-seed{seed}",
        words=words,
        train=stream[:n_train],
        valid=stream[n_train : n_train + n_valid],
        test=stream[n_train + n_valid :],
        source="synthetic(" + ", ".join(f"{k}={v}" for k, v in {"seed": seed, **params}.items()) + ")",
        floor_ppl=math.exp(h),
        entropy_rate=h,
        info={"seed": seed, **params},
    )
    corpus.unigram_ppl = unigram_perplexity(corpus.train, corpus.valid, corpus.vocab)
    return corpus


def load_corpus(data: Optional[str], seed: int = 0, synthetic_tokens: Optional[int] = None) -> Corpus:
    """``data`` a folder -> the text corpus in it; None -> the synthetic corpus for ``seed``
    (``synthetic_tokens`` training tokens, valid and test each 2/15 of that)."""
    if data is None:
        if synthetic_tokens is None:
            return synthetic_corpus(seed)
        if synthetic_tokens < 1000:
            raise DataError(f"the synthetic corpus needs at least 1000 training tokens, got {synthetic_tokens}")
        held_out = max(500, synthetic_tokens * 2 // 15)
        return synthetic_corpus(seed, train=synthetic_tokens, valid=held_out, test=held_out)
    return load_text_corpus(data)


# ----------------------------------------------------------------- batching
def batchify(ids, batch_size: int):
    """Cut a 1-D token stream into ``batch_size`` columns: a (N // B, B) long tensor.

    The tail that does not fill a whole row is dropped.
    """
    import torch

    if batch_size < 1:
        raise DataError("batch size must be at least 1")
    data = torch.as_tensor(np.asarray(ids), dtype=torch.long)
    rows = data.numel() // batch_size
    if rows < 2:
        raise DataError(
            f"a split of {data.numel()} tokens is too short for batch size {batch_size} (need at least {2 * batch_size})"
        )
    return data[: rows * batch_size].view(batch_size, rows).t().contiguous()


def get_batch(source, position: int, seq_len: int):
    """Inputs ``source[i:i+L]`` and targets ``source[i+1:i+1+L]`` (both (L', B), L' <= L)."""
    length = min(seq_len, source.size(0) - 1 - position)
    return source[position : position + length], source[position + 1 : position + 1 + length]


def sample_seq_len(bptt: int, rng: random.Random) -> int:
    """DARTS's variable BPTT: ``bptt`` with prob 0.95 else ``bptt / 2``, then N(that, 5), at least 5.

    The learning rate of the step is scaled by ``seq_len / bptt``.
    """
    base = bptt if rng.random() < 0.95 else bptt / 2.0
    return max(5, int(rng.gauss(base, 5)))


def expected_seq_len(bptt: int) -> float:
    """The mean of :func:`sample_seq_len` (exactly, from the normal CDF), e.g. to
    estimate the number of steps in an epoch: 33.6 for ``bptt`` 35."""

    def cdf(x: float, mean: float) -> float:
        return 0.5 * (1.0 + math.erf((x - mean) / (5.0 * math.sqrt(2.0))))

    total = 0.0
    for base, weight in ((float(bptt), 0.95), (bptt / 2.0, 0.05)):
        mean = 5.0 * cdf(6.0, base)  # int(X) <= 5 (negative X truncates towards zero) gives 5
        for k in range(6, int(base) + 60):
            mean += k * (cdf(k + 1.0, base) - cdf(float(k), base))
        total += weight * mean
    return total


__all__ = [
    "Corpus",
    "DataError",
    "MarkovSource",
    "batchify",
    "expected_seq_len",
    "get_batch",
    "load_corpus",
    "load_text_corpus",
    "make_markov_source",
    "sample_seq_len",
    "synthetic_corpus",
    "unigram_perplexity",
]
