"""The ``tagging`` task: chunking or named-entity recognition on CoNLL column files
with a searched (or hand-written) cell inside a bidirectional CRF tagger.

Presets (:data:`PRESETS`): ``chunking`` (CoNLL-2000: ``word POS chunk``, the POS tag
embedded next to the word) and ``ner`` (CoNLL-2003: ``word POS chunk NE``, word and a
character CNN; the POS and chunk columns ignored).  Any other CoNLL folder works with
``columns=...`` (see :mod:`essdsl.tasks.tagging_data`).

The trainer minimises the loss per token (the CRF's negative log-likelihood, or the
cross-entropy with ``crf=False``); a search uses the same loss on validation
batches as its outer objective (F1 is not differentiable).  The best epoch is the
one with the best validation span F1 (conlleval's, :mod:`essdsl.tasks.tagging_metrics`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from essdsl.nas.distributed import example_share
from essdsl.tasks.base import Batch, Metric
from essdsl.tasks.corpus import DataError
from essdsl.tasks.tagging_data import (
    OUTSIDE,
    Columns,
    TaggingData,
    load_tagging_data,
    normalise_word,
)
from essdsl.tasks.tagging_metrics import span_scores
from essdsl.tasks.tagging_model import TagBatch, Tagger, TaggerConfig

LM_RUN_SETTINGS = ("bptt", "synthetic_tokens")
MAX_WORD_CHARS = 20  # longer words are cut for the character encoder
BUCKET_BATCHES = 20
# The CoNLL-2000 shared task's best system (Kudo & Matsumoto 2000, SVMs): test F1.
CONLL2000_WINNER = ("shared-task winner (Kudo & Matsumoto)", 93.48, 93.45, 93.51, None)  # sentences of this many batches are sorted by length together


@dataclass(frozen=True)
class TaggingSettings:
    """Everything that fixes the tagging data and the model around the cell."""

    data: str = "../shared/data/conll2000"
    columns: str = "word,pos,tag"
    scheme: str = "bio"  # what the model is trained on; files may use any scheme
    chars: bool = False  # character CNN next to the word embedding
    crf: bool = True
    feature_dim: int = 16
    char_dim: int = 16
    char_filters: int = 32
    dropout: float = 0.33  # token representation and cell outputs
    cell_dropout: float = 0.1  # variational masks on the cell's inputs and states
    min_count: int = 2  # rarer training words are <unk>
    max_train_sentences: Optional[int] = None  # first N training sentences (budgeted runs)
    preset: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, TaggingSettings] = {
    "chunking": TaggingSettings(data="../shared/data/conll2000", columns="word,pos,tag", preset="chunking"),
    "ner": TaggingSettings(data="", columns="word,-,-,tag", chars=True, preset="ner"),
}


def settings_for(task: str = "tagging", **overrides) -> TaggingSettings:
    """The settings of ``task`` (``tagging``, ``chunking`` or ``ner``) with ``overrides``
    (None values keep the preset's)."""
    base = PRESETS.get(task, TaggingSettings())
    chosen = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(chosen) - set(TaggingSettings.__dataclass_fields__)
    if unknown:
        raise DataError(f"unknown tagging setting(s): {', '.join(sorted(unknown))}")
    return replace(base, **chosen)


# Sizes and hyperparameters of ``essdsl search/train --task tagging|chunking|ner``
# (the registry's defaults hook; every flag overrides them).  Small: ninp = nhid = 64,
# the transfer table's size.  The trainer's plain SGD: mean loss per token, gradient
# norm clipped at 5; measured with genotypes/lstm.space at nhid 64, the first 4,000
# CoNLL-2000 training sentences, 3 epochs: test F1 80.5 at lr 1, 89.2 at lr 5, 89.9
# at lr 10.  A search's genotype is not trained afterwards by default (final_epochs
# 0: 'essdsl train' it, the run is as long as a training run).
RUN_DEFAULTS = {
    "search": dict(ninp=64, nhid=64, epochs=3, batch_size=32, eval_batch_size=128, lr=10.0, wd=0.0, clip=5.0, seed=0),
    "train": dict(ninp=64, nhid=64, epochs=10, batch_size=32, eval_batch_size=128, lr=10.0, wd=0.0, clip=5.0, seed=0),
    "final_epochs": 0,
}


def command_line_defaults(kind: str, options: dict) -> dict:
    """The settings a ``kind`` ("search" or "train") tagging run starts from (the
    registry's hook): :data:`RUN_DEFAULTS` and the tagger's dropouts as the run-wide
    dropout settings (``dropout``: token representation and cell outputs;
    ``dropoutx``/``dropouth``: the cell's variational masks)."""
    base = TaggingSettings()
    dropouts = dict(dropout=base.dropout, dropouth=base.cell_dropout, dropoutx=base.cell_dropout, dropouti=0.0, dropoute=0.0)
    return {**RUN_DEFAULTS[kind], "dropouts": dropouts, "final_epochs": RUN_DEFAULTS["final_epochs"]}


def dropout_settings(dropouts: Optional[dict]) -> dict:
    """The run's dropout settings as tagging settings: ``dropout`` and one cell dropout
    (``dropoutx`` = ``dropouth``); the tagger has no embedded-input or embedding-row
    dropout, so those must be 0."""
    if not dropouts:
        return {}
    from essdsl.tasks import TaskError

    if dropouts.get("dropouti") or dropouts.get("dropoute"):
        raise TaskError("the tagger has no --dropouti/--dropoute (its --dropout acts on the token representation)")
    x, h = dropouts.get("dropoutx"), dropouts.get("dropouth")
    if x is not None and h is not None and x != h:
        raise TaskError(f"the tagger's cell takes one dropout on its inputs and states: --dropoutx {x} and --dropouth {h} must be equal")
    return {"dropout": dropouts.get("dropout"), "cell_dropout": x if x is not None else h}


# ---------------------------------------------------------------- encoded sentences
@dataclass
class Encoded:
    words: list[int]
    features: list[list[int]]
    chars: list[list[int]]
    tags: list[int]


def encode_split(data: TaggingData, split: str, with_chars: bool) -> list[Encoded]:
    out = []
    for s in data.split(split):
        out.append(
            Encoded(
                data.words.ids([normalise_word(w) for w in s.words]),
                [vocab.ids(column) for vocab, column in zip(data.features, s.features)],
                [data.chars.ids(list(w[:MAX_WORD_CHARS])) for w in s.words] if with_chars else [],
                data.tags.ids(s.tags),
            )
        )
    return out


def collate(sentences: list[Encoded], index: list[int], with_chars: bool) -> TagBatch:
    T = max(len(s.words) for s in sentences)
    B = len(sentences)
    words = torch.zeros(T, B, dtype=torch.long)
    tags = torch.zeros(T, B, dtype=torch.long)
    features = [torch.zeros(T, B, dtype=torch.long) for _ in sentences[0].features]
    chars = None
    if with_chars:
        L = max(len(c) for s in sentences for c in s.chars)
        chars = torch.zeros(T, B, L, dtype=torch.long)
    for b, s in enumerate(sentences):
        n = len(s.words)
        words[:n, b] = torch.tensor(s.words)
        tags[:n, b] = torch.tensor(s.tags)
        for k, column in enumerate(s.features):
            features[k][:n, b] = torch.tensor(column)
        if chars is not None:
            for t, c in enumerate(s.chars):
                chars[t, b, : len(c)] = torch.tensor(c)
    lengths = torch.tensor([len(s.words) for s in sentences])
    return TagBatch(words, features, chars, tags, lengths, list(index))


class SentenceStream:
    """Batches of sentences: a shuffled epoch (train) or an endless shuffled stream
    (validation batches of a search).

    Epoch ``e``'s order is a function of (seed, e) only: a permutation, cut into pools
    of :data:`BUCKET_BATCHES` batches whose sentences are sorted by length (little
    padding), the batches then shuffled.  So the state is two integers.
    """

    def __init__(self, sentences: list[Encoded], batch_size: int, seed: int, device, with_chars: bool,
                 endless: bool = False):
        if batch_size < 1:
            raise DataError(f"batch size {batch_size} must be at least 1")
        self.sentences, self.batch_size, self.seed = sentences, batch_size, seed
        self.device, self.with_chars, self.endless = torch.device(device), with_chars, endless
        self.epoch, self.position = 0, 0
        self._plan()

    def _plan(self) -> None:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.sentences))
        pool = self.batch_size * BUCKET_BATCHES
        batches = []
        for start in range(0, len(order), pool):
            chunk = sorted(order[start : start + pool].tolist(), key=lambda i: len(self.sentences[i].words))
            cut = [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
            if len(cut) > 1 and len(cut[-1]) == 1:
                # no batch of one sentence: a supernet's batch normalisation cannot train on it
                cut[-2] += cut.pop()
            batches += cut
        self.batches = [batches[i] for i in rng.permutation(len(batches))]
        self.done_before = np.cumsum([0] + [len(b) for b in self.batches]).tolist()

    def next(self, like: Optional[Batch] = None) -> Optional[Batch]:
        fresh = False
        if self.position >= len(self.batches):
            if not self.endless:
                return None
            self.restart()
            fresh = True
        index = self.batches[self.position]
        self.position += 1
        tag_batch = collate([self.sentences[i] for i in index], index, self.with_chars).to(self.device)
        return Batch(tag_batch, size=int(tag_batch.lengths.sum()), fresh=fresh)

    def restart(self) -> None:
        self.epoch += 1
        self.position = 0
        self._plan()

    def progress(self) -> tuple[int, int]:
        return self.done_before[self.position], len(self.sentences)

    def steps_per_epoch(self) -> int:
        return len(self.batches)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        if state.get("batch_size", self.batch_size) != self.batch_size:
            raise DataError(f"the saved stream used batch size {state['batch_size']}, not {self.batch_size}")
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]
        self._plan()


# ---------------------------------------------------------------- the task
def default_cell_builder(graph, search: bool, dropout: float) -> torch.nn.Module:
    """The compiled cell of ``graph`` (essdsl's ``--target cell``)."""
    from essdsl.compile import build_cell  # the cell target (issue 13)
    from essdsl.compile.config import ModelConfig

    config = ModelConfig(vocab=1, dropout=0.0, dropouti=0.0, dropoute=0.0, dropoutx=dropout, dropouth=dropout,
                         search=search)
    return build_cell(graph, config)


class TaggingTask:
    """Sequence tagging on a CoNLL folder (see the module docstring)."""

    name = "tagging"
    size_unit = "tokens"  # of a split, as essdsl eval reports it
    metrics = (
        Metric("f1", higher_is_better=True, label="F1"),
        Metric("precision", higher_is_better=True, label="P"),
        Metric("recall", higher_is_better=True, label="R"),
    )

    def __init__(self, settings: TaggingSettings, cell_builder: Optional[Callable] = None):
        if not settings.data:
            raise DataError(
                f"the {settings.preset or 'tagging'} task needs a data folder "
                "(train.txt, test.txt, valid.txt or dev.txt in CoNLL column format)"
            )
        self.settings = settings
        self.columns = Columns.parse(settings.columns)
        self.data = load_tagging_data(
            Path(settings.data), self.columns, settings.scheme, settings.min_count,
            max_train_sentences=settings.max_train_sentences,
        )
        self.cell_builder = cell_builder or default_cell_builder
        self.encoded = {split: encode_split(self.data, split, settings.chars) for split in ("train", "valid", "test")}

    @classmethod
    def load(cls, seed: int = 0, preset: str = "tagging", dropouts: Optional[dict] = None, **options) -> "TaggingTask":
        """The registry's factory: ``preset``'s settings with ``options`` (None keeps the
        preset's value) and the run's ``dropouts`` (:func:`dropout_settings`).  ``seed``
        does not change the data: the validation slice has its own fixed seed so that
        runs with different seeds are scored alike.  The language model's run-wide
        settings the command line hands every task (``bptt``) mean nothing here."""
        for key in LM_RUN_SETTINGS:
            options.pop(key, None)
        return cls(settings_for(preset, **options, **dropout_settings(dropouts)))

    # ------------------------------------------------------------ description
    def describe(self) -> str:
        sizes = self.data.sizes()
        s = self.settings
        scheme = self.data.file_scheme.upper() + (f" read as {s.scheme.upper()}" if s.scheme != self.data.file_scheme else "")
        return (
            f"{self.data.name} ({self.columns}): train {sizes['train']['sentences']:,} sentences "
            f"({sizes['train']['tokens']:,} tokens), valid {sizes['valid']['sentences']:,} "
            f"({self.data.valid_source}), test {sizes['test']['sentences']:,}; {len(self.data.tags)} tags, "
            f"{scheme}; objective: {'CRF negative log-likelihood' if s.crf else 'cross-entropy'} per token, "
            f"best epoch by span F1 (conlleval)"
        )

    def fingerprint(self) -> dict:
        return {
            "task": self.name,
            "name": self.data.name,
            "source": self.data.source,
            "columns": str(self.columns),
            "scheme": self.settings.scheme,
            "valid": self.data.valid_source,
            "sizes": self.data.sizes(),
            "settings": self.settings.to_dict(),
            "hash": self.data.digest,
        }

    def split_size(self, split: str) -> int:
        """Tokens in ``split`` (what ``essdsl eval`` reports as its size)."""
        return self.data.sizes()[split]["tokens"]

    # ------------------------------------------------------------ model
    def tagger_config(self, cell_input: int) -> TaggerConfig:
        s = self.settings
        others = s.feature_dim * len(self.data.features) + (s.char_filters if s.chars else 0)
        return TaggerConfig(
            words=len(self.data.words),
            tags=len(self.data.tags),
            features=tuple(len(v) for v in self.data.features),
            # the word embedding fills the cell's input width when it can (no projection)
            word_dim=max(16, cell_input - others),
            feature_dim=s.feature_dim,
            chars=len(self.data.chars) if s.chars else 0,
            char_dim=s.char_dim,
            char_filters=s.char_filters,
            dropout=s.dropout,
            crf=s.crf,
        )

    def build_model(self, graph, search: bool, seed: int) -> Tagger:
        from essdsl.lang.graph import embedding_dim

        torch.manual_seed(seed)
        cell_input, cell_output = embedding_dim(graph), graph.dims[graph.output]
        return Tagger(
            self.tagger_config(cell_input),
            lambda: self.cell_builder(graph, search, self.settings.cell_dropout),
            cell_input,
            cell_output,
            share_arch=search,
        )

    def model_config(self, search: bool):
        """The cell's configuration as the run records it: the tagger's dropout in
        ``dropout``, the cell's variational masks in ``dropoutx``/``dropouth``."""
        from essdsl.compile.config import ModelConfig

        s = self.settings
        return ModelConfig(vocab=1, dropout=s.dropout, dropouth=s.cell_dropout, dropoutx=s.cell_dropout, dropouti=0.0,
                           dropoute=0.0, search=search)  # fmt: skip

    def build(self, graph, search: bool, seed: int, source_text: Optional[str] = None):
        """(model, manifest, cell config) for the run layer: the tagger, the manifest of
        its cell (``essdsl-cell/1``; both directions read the same ``arch`` entries)
        plus a ``head`` entry."""
        from essdsl.compile import build_manifest

        model = self.build_model(graph, search, seed)
        config = self.model_config(search)
        manifest = build_manifest(graph, config, model.fw, source_text=source_text, target="cell")
        cells = {id(p) for cell in (model.fw, model.bw) for p in cell.parameters()}
        manifest["head"] = {
            "task": self.settings.preset or self.name, "tags": len(self.data.tags), "words": len(self.data.words),
            "crf": self.settings.crf, "directions": 2,
            "parameters": sum(p.numel() for p in model.parameters() if id(p) not in cells),
        }  # fmt: skip
        return model, manifest, config

    # ------------------------------------------------------------ data
    def train_stream(self, batch_size: int, seed: int, device: torch.device) -> SentenceStream:
        return SentenceStream(self.encoded["train"], batch_size, seed, device, self.settings.chars)

    def search_stream(self, batch_size: int, device: torch.device) -> SentenceStream:
        return SentenceStream(self.encoded["valid"], batch_size, 0, device, self.settings.chars, endless=True)

    def batches(self, split: str, batch_size: int, device) -> list[TagBatch]:
        """``split`` in fixed batches of similar lengths (evaluation)."""
        sentences = self.encoded[split]
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i].words))
        return [
            collate([sentences[i] for i in order[k : k + batch_size]], order[k : k + batch_size], self.settings.chars).to(device)
            for k in range(0, len(order), batch_size)
        ]

    # ------------------------------------------------------------ loss, metrics
    def loss(self, model: Tagger, batch: Batch, carry: Any) -> tuple[torch.Tensor, Any]:
        # loss_weight: a shard's share of the whole batch's tokens (see shard_batch)
        return model.loss(batch.inputs) * batch.extra.get("loss_weight", 1.0), None

    def shard_batch(self, batch: Batch, rank: int, world_size: int) -> Batch:
        """This process's contiguous block of the batch's sentences (data-parallel runs).
        The loss is a mean per token, so the shard's mean is weighted by its share of the
        batch's tokens: averaging the processes' gradients gives the whole batch's."""
        mine, weight = example_share(batch.inputs.lengths.tolist(), rank, world_size)
        part = batch.inputs.columns(mine)
        return Batch(part, size=batch.size, lr_scale=batch.lr_scale, fresh=batch.fresh,
                     extra={**batch.extra, "local_size": int(part.lengths.sum()), "loss_weight": weight})  # fmt: skip

    @torch.no_grad()
    def predict(self, model: Tagger, split: str, batch_size: int = 64) -> tuple[list[list[str]], float]:
        """(predicted tags of every sentence of ``split`` in file order, mean loss per token)."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        predicted: list[Optional[list[str]]] = [None] * len(self.encoded[split])
        total, tokens = 0.0, 0
        try:
            for batch in self.batches(split, batch_size, device):
                scores = model(batch)
                total += float(model.sentence_losses(batch, scores).sum())
                tokens += int(batch.lengths.sum())
                for i, path in zip(batch.index, model.decode(batch, scores)):
                    predicted[i] = [self.data.tags.items[t] for t in path]
        finally:
            model.train(was_training)
        return predicted, total / max(tokens, 1)

    def evaluate(self, model: Tagger, split: str, batch_size: int) -> dict[str, float]:
        predicted, loss = self.predict(model, split, batch_size)
        gold = [s.tags for s in self.data.split(split)]
        return {"loss": loss, **span_scores(gold, predicted)}

    def baseline(self, split: str = "valid") -> Optional[tuple[str, float]]:
        """CoNLL-2000's baseline: every token gets the tag most frequent in train for its
        first feature column (the POS tag), or for its word when there is no feature."""
        def key(sentence, i):
            return sentence.features[0][i] if sentence.features else normalise_word(sentence.words[i])

        counts: dict[str, Counter] = {}
        overall = Counter()
        for s in self.data.train:
            for i, tag in enumerate(s.tags):
                counts.setdefault(key(s, i), Counter())[tag] += 1
                overall[tag] += 1
        fallback = overall.most_common(1)[0][0] if overall else OUTSIDE
        best = {k: c.most_common(1)[0][0] for k, c in counts.items()}
        sentences = self.data.split(split)
        predicted = [[best.get(key(s, i), fallback) for i in range(len(s.tags))] for s in sentences]
        f1 = span_scores([s.tags for s in sentences], predicted)["f1"]
        what = self.columns.features[0] if self.columns.features else "word"
        return f"most frequent tag per {what}", f1

    def comparison(self, model_rows: dict[str, dict], split: str = "test") -> str:
        """The table a training run ends with: ``model_rows`` (name -> metrics, params)
        next to the baseline on ``split`` (and, on CoNLL-2000's test set, the shared
        task's winner)."""
        name, f1 = self.baseline(split)
        rows = [(label, m["f1"], m.get("precision"), m.get("recall"), m.get("params")) for label, m in model_rows.items()]
        rows.append((name, f1, None, None, 0))
        if self.data.name == "conll2000" and split == "test":
            rows.append(CONLL2000_WINNER)
        header = f"{'model (' + split + ')':<40} {'F1':>7} {'P':>7} {'R':>7} {'params':>9}"
        lines = [header, "-" * len(header)]
        for label, f, precision, recall, params in sorted(rows, key=lambda r: -r[1]):
            cells = [f"{v:>7.2f}" if v is not None else f"{'':>7}" for v in (f, precision, recall)]
            lines.append(f"{label:<40} {' '.join(cells)} {params if params is not None else '':>9}")
        return "\n".join(lines)

    def chance_loss(self) -> float:
        return math.log(len(self.data.tags))
