"""Span F1 as conlleval: one hand-checked example, and the library's chunk reading
against essdsl's own (used to convert label schemes)."""

from hypothesis import given, settings, strategies as st
import pytest
from seqeval.metrics.sequence_labeling import get_entities

from essdsl.tasks.tagging_data import convert, spans
from essdsl.tasks.tagging_metrics import span_scores


def test_hand_checked_example():
    gold = [
        ["B-NP", "I-NP", "O", "B-VP", "B-PP", "B-NP", "I-NP"],  # NP(0,2) VP(3,4) PP(4,5) NP(5,7)
        ["I-NP", "O"],  # conlleval: an I- after the start opens a chunk: NP(0,1)
    ]
    predicted = [
        ["B-NP", "I-NP", "O", "B-VP", "I-VP", "B-NP", "B-NP"],  # NP(0,2) ok, VP(3,5), NP(5,6), NP(6,7)
        ["B-NP", "O"],  # NP(0,1) ok
    ]
    # 5 gold chunks, 5 predicted, 2 correct
    scores = span_scores(gold, predicted)
    assert scores["precision"] == pytest.approx(40.0)
    assert scores["recall"] == pytest.approx(40.0)
    assert scores["f1"] == pytest.approx(40.0)
    # NP: 3 gold, 4 predicted, 2 correct: P 1/2, R 2/3, F1 4/7
    assert scores["f1/NP"] == pytest.approx(400 / 7)
    assert scores["f1/VP"] == 0.0 and scores["f1/PP"] == 0.0


def test_no_chunks_at_all_scores_zero():
    assert span_scores([["O", "O"]], [["O", "O"]])["f1"] == 0.0


labels = st.sampled_from(["O", "B-A", "I-A", "B-B", "I-B", "E-A", "S-B", "E-B", "S-A"])


@settings(deadline=None, max_examples=200)
@given(st.lists(labels, min_size=1, max_size=12))
def test_our_chunk_reading_is_conllevals(tags):
    """spans() (behind scheme conversion) reads chunks exactly as seqeval's default mode."""
    ours = sorted((k, s, e - 1) for k, s, e in spans(tags))
    theirs = sorted(get_entities(list(tags)))
    assert ours == theirs
    for target in ("bio", "iobes"):
        assert spans(convert(tags, target)) == spans(tags)
