"""Span-level precision, recall and F1 as CoNLL's ``conlleval`` computes them.

seqeval's default mode (no ``mode="strict"``) reads chunks with conlleval's rules
(an ``I-`` after ``O`` or after another type opens a chunk), and counts a predicted
chunk correct only when its type, start and end all match.  Numbers are percents,
like conlleval's and the shared-task papers' (CoNLL-2000 baseline 77.07, winner 93.48).
"""

from __future__ import annotations

import warnings
from typing import Sequence

from essdsl.errors import EssdslError

try:
    from seqeval.metrics import classification_report
except ImportError:  # pragma: no cover - the [tagging] extra is missing
    raise EssdslError("the tagging task needs seqeval: pip install 'essdsl[tagging]'") from None


def span_scores(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict[str, float]:
    """``precision``, ``recall``, ``f1`` over all chunks (micro average, percent), and
    ``f1/TYPE`` for every chunk type in gold or prediction."""
    if len(gold) != len(predicted) or any(len(g) != len(p) for g, p in zip(gold, predicted)):
        raise ValueError("gold and predicted tag sequences differ in number or length")
    with warnings.catch_warnings():  # numpy's "mean of empty slice" when there is no chunk at all
        warnings.simplefilter("ignore", RuntimeWarning)
        report = classification_report(
            [list(g) for g in gold], [list(p) for p in predicted], output_dict=True, zero_division=0
        )
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    scores = {
        "precision": 100.0 * float(micro["precision"]),
        "recall": 100.0 * float(micro["recall"]),
        "f1": 100.0 * float(micro["f1-score"]),
    }
    for kind, row in report.items():
        if kind not in ("micro avg", "macro avg", "weighted avg"):
            scores[f"f1/{kind}"] = 100.0 * float(row["f1-score"])
    return scores
