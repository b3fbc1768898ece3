"""The bidirectional tagger around any recurrent cell.

Layers, bottom to top:

1. the token representation: a word embedding (lower-cased, digits as 0), one
   embedding per feature column (e.g. POS), optionally a character CNN (Ma & Hovy
   style: embedded characters, one convolution of width 3, max over the word);
   concatenated, dropout, and a linear map to the cell's input width when the
   widths differ;
2. two cells of the same kind: ``fw`` reads each sentence left to right, ``bw``
   reads it right to left (each sentence reversed within its own length, so that
   padding stays at the end for both).  Separate weights; in a search both read the
   same architecture parameters (``bw``'s ``arch.*`` are ``fw``'s objects), so that
   there is one genotype to derive;
3. both outputs concatenated, dropout, a linear layer to tag scores;
4. a CRF over the scores (:class:`~essdsl.tasks.tagging_crf.CRF`), or a per-token
   softmax without one.

The cell contract (the ``--target cell`` artifact of essdsl, or any module that
keeps it): ``out, hidden = cell(x, hidden)`` with ``x`` of shape ``(T, B, d_in)``
and ``out`` ``(T, B, d_out)``; ``hidden = cell.init_hidden(B)``.

Padding is exact: every layer works row by row (embeddings, the per-word char CNN
with its padding masked out of the max, recurrences that start from zeros and
read a sentence's own tokens first, the CRF's masked recursions), so the scores
and the loss of a sentence are the same alone or batched with longer ones -- in
eval mode and for cells without batch normalisation (a supernet's ``norm
batchnorm`` takes batch statistics in training, by definition).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from essdsl.tasks.base import is_arch_parameter
from essdsl.tasks.tagging_crf import CRF


@dataclass(frozen=True)
class TaggerConfig:
    words: int  # word vocabulary size (id 0 padding)
    tags: int
    features: tuple[int, ...] = ()  # vocabulary size of each feature column
    word_dim: int = 64
    feature_dim: int = 16
    chars: int = 0  # character vocabulary size; 0: no character encoder
    char_dim: int = 16
    char_filters: int = 32
    dropout: float = 0.33  # on the token representation and on the cells' outputs
    crf: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def token_width(self) -> int:
        return self.word_dim + self.feature_dim * len(self.features) + (self.char_filters if self.chars else 0)


@dataclass
class TagBatch:
    """Padded tensors of one batch; column ``b`` is sentence ``b``."""

    words: Tensor  # (T, B) long, 0 = padding
    features: list[Tensor]  # each (T, B) long
    chars: Optional[Tensor]  # (T, B, L) long or None
    tags: Tensor  # (T, B) long (0 where padded; masked out)
    lengths: Tensor  # (B,) long
    index: list[int] = field(default_factory=list)  # the sentences' positions in their split

    @property
    def mask(self) -> Tensor:
        T = self.words.shape[0]
        return torch.arange(T, device=self.words.device).unsqueeze(1) < self.lengths.unsqueeze(0)

    def columns(self, which: slice) -> "TagBatch":
        """The sentences ``which`` (columns); the padded length stays the batch's, so a
        BatchNorm over all processes sees the one-process run's time steps."""
        cut = lambda t: None if t is None else t[:, which]  # noqa: E731
        return TagBatch(cut(self.words), [cut(f) for f in self.features], cut(self.chars), cut(self.tags),
                        self.lengths[which], self.index[which])  # fmt: skip

    def to(self, device) -> "TagBatch":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return TagBatch(
            move(self.words), [move(f) for f in self.features], move(self.chars), move(self.tags),
            move(self.lengths), self.index,
        )


def reverse_within(x: Tensor, lengths: Tensor) -> Tensor:
    """Each column's first ``lengths[b]`` rows reversed, the padding left in place
    (an involution: applying it twice gives ``x`` back)."""
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)
    index = torch.where(t < lengths.unsqueeze(0), lengths.unsqueeze(0) - 1 - t, t)  # (T, B)
    while index.dim() < x.dim():
        index = index.unsqueeze(-1)
    return x.gather(0, index.expand_as(x))


def tie_parameters(source: nn.Module, target: nn.Module, which: Callable[[str], bool]) -> list[str]:
    """Make ``target``'s parameters named ``which`` the very objects of ``source``
    (same names in both); returns the names tied."""
    tied = []
    for name, parameter in list(source.named_parameters()):
        if not which(name):
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = target.get_submodule(owner_name) if owner_name else target
        if getattr(owner, leaf, None) is None or getattr(owner, leaf).shape != parameter.shape:
            raise ValueError(f"cannot share {name}: the other cell has no parameter of that shape")
        setattr(owner, leaf, parameter)
        tied.append(name)
    return tied


class CharCNN(nn.Module):
    def __init__(self, chars: int, dim: int, filters: int):
        super().__init__()
        self.embedding = nn.Embedding(chars, dim, padding_idx=0)
        self.conv = nn.Conv1d(dim, filters, kernel_size=3, padding=1)

    def forward(self, chars: Tensor) -> Tensor:
        T, B, L = chars.shape
        flat = chars.reshape(T * B, L)
        # zero padding of the convolution equals the zero embedding of padded characters,
        # so a word's features do not depend on the longest word of the batch
        conv = self.conv(self.embedding(flat).transpose(1, 2))  # (T*B, filters, L)
        conv = conv.masked_fill((flat == 0).unsqueeze(1), float("-inf"))
        pooled = conv.max(dim=2).values
        pooled = torch.where(torch.isfinite(pooled), pooled, torch.zeros_like(pooled))  # padded tokens
        return pooled.reshape(T, B, -1)


class Tagger(nn.Module):
    """Embeddings, the two directions of a cell, tag scores, a CRF (module docstring)."""

    def __init__(
        self,
        config: TaggerConfig,
        make_cell: Callable[[], nn.Module],
        cell_input: int,
        cell_output: int,
        share_arch: bool = False,
    ):
        super().__init__()
        self.config = config
        self.embed_words = nn.Embedding(config.words, config.word_dim, padding_idx=0)
        self.embed_features = nn.ModuleList(
            nn.Embedding(n, config.feature_dim, padding_idx=0) for n in config.features
        )
        self.chars = CharCNN(config.chars, config.char_dim, config.char_filters) if config.chars else None
        width = config.token_width
        self.project = nn.Linear(width, cell_input, bias=False) if width != cell_input else None
        self.fw = make_cell()
        self.bw = make_cell()
        self.shared_arch = tie_parameters(self.fw, self.bw, is_arch_parameter) if share_arch else []
        self.scores = nn.Linear(2 * cell_output, config.tags)
        self.crf = CRF(config.tags) if config.crf else None
        self.drop = nn.Dropout(config.dropout)
        nn.init.uniform_(self.embed_words.weight, -0.1, 0.1)
        for e in self.embed_features:
            nn.init.uniform_(e.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embed_words.weight[0].zero_()
            for e in self.embed_features:
                e.weight[0].zero_()

    # ------------------------------------------------------------ layers
    def represent(self, batch: TagBatch) -> Tensor:
        parts = [self.embed_words(batch.words)]
        parts += [embed(f) for embed, f in zip(self.embed_features, batch.features)]
        if self.chars is not None:
            parts.append(self.chars(batch.chars))
        x = self.drop(torch.cat(parts, dim=-1))
        return self.project(x) if self.project is not None else x

    def encode(self, x: Tensor, lengths: Tensor) -> Tensor:
        """(T, B, 2 * d_out): the forward cell's outputs next to the backward cell's."""
        B = x.shape[1]
        forward, _ = self.fw(x, self.fw.init_hidden(B))
        backward, _ = self.bw(reverse_within(x, lengths), self.bw.init_hidden(B))
        return torch.cat([forward, reverse_within(backward, lengths)], dim=-1)

    def forward(self, batch: TagBatch) -> Tensor:
        """Tag scores (T, B, K)."""
        hidden = self.encode(self.represent(batch), batch.lengths)
        return self.scores(self.drop(hidden))

    # ------------------------------------------------------------ loss, decoding
    def sentence_losses(self, batch: TagBatch, scores: Optional[Tensor] = None) -> Tensor:
        """(B,) summed loss of each sentence: CRF negative log-likelihood, or the
        token cross-entropies summed over the sentence without a CRF."""
        scores = self(batch) if scores is None else scores
        mask = batch.mask
        if self.crf is not None:
            return self.crf.nll(scores, batch.tags, mask)
        tokens = F.cross_entropy(scores.transpose(1, 2), batch.tags, reduction="none")  # (T, B)
        return (tokens * mask.to(tokens.dtype)).sum(0)

    def loss(self, batch: TagBatch) -> Tensor:
        """Mean loss per token of the batch (what the trainer minimises)."""
        return self.sentence_losses(batch).sum() / batch.lengths.sum().clamp(min=1)

    @torch.no_grad()
    def decode(self, batch: TagBatch, scores: Optional[Tensor] = None) -> list[list[int]]:
        scores = self(batch) if scores is None else scores
        if self.crf is not None:
            return self.crf.decode(scores, batch.mask)
        best = scores.argmax(-1).t().tolist()
        return [row[:n] for row, n in zip(best, batch.lengths.tolist())]
