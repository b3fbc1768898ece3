"""A linear-chain conditional random field over tag scores.

Written here rather than taken from a package: the CRF layers on PyPI (pytorch-crf,
torch-struct) have had no release for years, and the whole model is three tensors
and two dynamic programmes.  ``tests/test_tagging_crf.py`` checks the log-partition
and the Viterbi path against brute-force enumeration of every tag sequence.

Conventions: emissions ``(T, B, K)``, tags ``(T, B)``, ``mask`` ``(T, B)`` bool with
each column a prefix of True (sentence ``b`` has ``mask[:, b].sum()`` tokens, at least
one).  ``transitions[i, j]`` scores tag ``i`` followed by tag ``j``; ``start`` and
``end`` score the first and the last tag.  Every operation is row-wise in the batch,
so a sentence's numbers do not depend on the others padded next to it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class CRF(nn.Module):
    def __init__(self, num_tags: int):
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.start = nn.Parameter(torch.empty(num_tags))
        self.end = nn.Parameter(torch.empty(num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Small uniform scores: the emissions dominate at first, as in most taggers.
        for p in (self.transitions, self.start, self.end):
            nn.init.uniform_(p, -0.1, 0.1)

    def score(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """(B,) score of the given tag sequences."""
        T, B, _ = emissions.shape
        maskf = mask.to(emissions.dtype)
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (T, B)
        total = self.start[tags[0]] + (emitted * maskf).sum(0)
        if T > 1:
            steps = self.transitions[tags[:-1], tags[1:]]  # (T-1, B)
            total = total + (steps * maskf[1:]).sum(0)
        last = tags.gather(0, (mask.sum(0) - 1).clamp(min=0).unsqueeze(0)).squeeze(0)
        return total + self.end[last]

    def log_partition(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """(B,) log of the sum over every tag sequence of exp(score)."""
        alpha = self.start + emissions[0]  # (B, K)
        for t in range(1, emissions.shape[0]):
            step = torch.logsumexp(alpha.unsqueeze(2) + self.transitions + emissions[t].unsqueeze(1), dim=1)
            alpha = torch.where(mask[t].unsqueeze(1), step, alpha)
        return torch.logsumexp(alpha + self.end, dim=1)

    def nll(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """(B,) negative log-likelihood of each sentence's tags."""
        return self.log_partition(emissions, mask) - self.score(emissions, tags, mask)

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> list[list[int]]:
        """The best tag sequence of each sentence (Viterbi), cut to its length."""
        T, B, _ = emissions.shape
        best = self.start + emissions[0]
        pointers = []
        for t in range(1, T):
            candidates = best.unsqueeze(2) + self.transitions  # (B, K_prev, K)
            value, pointer = candidates.max(dim=1)
            value = value + emissions[t]
            keep = mask[t].unsqueeze(1)
            best = torch.where(keep, value, best)
            # a padded step points every tag at itself, so backtracking passes through it
            same = torch.arange(self.num_tags, device=emissions.device).expand(B, -1)
            pointers.append(torch.where(keep, pointer, same))
        last = (best + self.end).argmax(dim=1)
        paths = [last]
        for pointer in reversed(pointers):
            last = pointer.gather(1, last.unsqueeze(1)).squeeze(1)
            paths.append(last)
        path = torch.stack(paths[::-1]).t().tolist()  # (B, T)
        lengths = mask.sum(0).tolist()
        return [row[:n] for row, n in zip(path, lengths)]
