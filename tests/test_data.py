"""Data: the PTB text format, its error messages, batching and the synthetic corpus."""

import math
import random

import numpy as np
import pytest

from essdsl.tasks.corpus import (
    DataError,
    batchify,
    get_batch,
    load_text_corpus,
    make_markov_source,
    sample_seq_len,
    synthetic_corpus,
    unigram_perplexity,
)


def write_corpus(folder, train="a b c\nb c\n", valid="a d\n", test="c\n"):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        if text is not None:
            (folder / f"{name}.txt").write_text(text, encoding="utf-8")
    return folder


def test_text_corpus_vocabulary_eos_and_unk(tmp_path):
    corpus = load_text_corpus(write_corpus(tmp_path / "d"))
    assert corpus.words[:3] == ["a", "b", "c"]
    assert set(corpus.words) == {"a", "b", "c", "<unk>", "<eos>"}
    ix = {w: i for i, w in enumerate(corpus.words)}
    assert corpus.train.tolist() == [ix["a"], ix["b"], ix["c"], ix["<eos>"], ix["b"], ix["c"], ix["<eos>"]]
    # 'd' is not in the training vocabulary
    assert corpus.valid.tolist() == [ix["a"], ix["<unk>"], ix["<eos>"]]
    assert corpus.test.tolist() == [ix["c"], ix["<eos>"]]
    assert corpus.unigram_ppl > 1


@pytest.mark.parametrize(
    "setup, fragment",
    [
        (lambda p: p / "nowhere", "does not exist"),
        (lambda p: write_corpus(p / "d", valid=None), "lacks valid.txt"),
        (lambda p: write_corpus(p / "d", test=""), "is empty"),
        (lambda p: write_corpus(p / "d", train="\n\n  \n"), "is empty"),
    ],
)
def test_text_corpus_errors(tmp_path, setup, fragment):
    with pytest.raises(DataError, match=fragment):
        load_text_corpus(setup(tmp_path))


def test_text_corpus_non_utf8(tmp_path):
    folder = write_corpus(tmp_path / "d")
    (folder / "train.txt").write_bytes(b"ok line\nbad \xff\xfe byte\n")
    with pytest.raises(DataError, match=r"not UTF-8.*line 2"):
        load_text_corpus(folder)


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(DataError, match="must be a folder"):
        load_text_corpus(f)


def test_batchify_and_get_batch():
    ids = np.arange(103)
    data = batchify(ids, 4)
    assert tuple(data.shape) == (25, 4)
    # column j is a contiguous stretch of the stream
    assert data[:, 1].tolist() == list(range(25, 50))
    x, y = get_batch(data, 0, 10)
    assert tuple(x.shape) == (10, 4) and (y[:-1] == x[1:]).all()
    x, y = get_batch(data, 20, 10)  # clipped at the end
    assert x.shape[0] == 4 and y[-1, 0].item() == 24
    with pytest.raises(DataError, match="too short"):
        batchify(np.arange(5), 4)


def test_variable_bptt_distribution():
    rng = random.Random(0)
    lengths = [sample_seq_len(35, rng) for _ in range(4000)]
    assert min(lengths) >= 5
    assert 33 < sum(lengths) / len(lengths) < 35  # 0.95*35 + 0.05*17.5 = 34.1
    assert sum(l < 26 for l in lengths) > 100  # the bptt/2 mode exists
    assert [sample_seq_len(35, random.Random(7)) for _ in range(3)] == [sample_seq_len(35, random.Random(7)) for _ in range(3)]


def test_synthetic_corpus_is_deterministic_and_beats_unigram_floor():
    a, b, c = synthetic_corpus(3), synthetic_corpus(3), synthetic_corpus(4)
    assert (a.train == b.train).all() and (a.valid == b.valid).all() and a.floor_ppl == b.floor_ppl
    assert not (a.train[:1000] == c.train[:1000]).all()
    assert a.vocab == 50
    assert 1.0 < a.floor_ppl < 0.25 * a.unigram_ppl  # there is a lot to learn
    assert a.unigram_ppl == pytest.approx(unigram_perplexity(a.train, a.valid, a.vocab))


def exact_entropy_rate_by_enumeration(source):
    """Independent computation: full context->context matrix, stationary vector by eigendecomposition."""
    V, k = source.vocab, source.order
    C = V**k
    P = np.zeros((C, C))
    next_token = source.next_distribution()
    for c in range(C):
        for w in range(V):
            P[c, (c % V ** (k - 1)) * V + w] += next_token[c, w]
    values, vectors = np.linalg.eig(P.T)
    pi = np.real(vectors[:, np.argmin(np.abs(values - 1))])
    pi = pi / pi.sum()
    h = -(next_token * np.log(next_token)).sum(axis=1)
    return float(pi @ h)


def test_entropy_rate_matches_enumeration_on_a_tiny_chain():
    source = make_markov_source(seed=5, vocab=4, order=3, successors=2, noise=0.1, classes=2)
    assert source.entropy_rate() == pytest.approx(exact_entropy_rate_by_enumeration(source), rel=1e-9)


def test_entropy_rate_matches_empirical_conditional_entropy():
    source = make_markov_source(seed=1, vocab=5, order=3, successors=2, noise=0.2, classes=2)
    sample = source.sample(200_000, np.random.default_rng(0))
    V = source.vocab
    ctx = sample[:-3] * V * V + sample[1:-2] * V + sample[2:-1]
    joint = np.bincount(ctx * V + sample[3:], minlength=V**4).reshape(V**3, V).astype(float)
    marg = joint.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(marg / joint), 0.0)
    empirical = terms.sum() / joint.sum()
    assert empirical == pytest.approx(source.entropy_rate(), abs=0.01)
    # memory matters: the first-order conditional entropy is clearly larger
    pair = np.bincount(sample[:-1] * V + sample[1:], minlength=V * V).reshape(V, V).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        first_order = np.where(pair > 0, pair * np.log(pair.sum(1, keepdims=True) / pair), 0).sum() / pair.sum()
    assert first_order > source.entropy_rate() + 0.02
    assert math.isfinite(first_order)


def test_expected_seq_len_is_the_mean_of_the_sampler():
    import random

    from essdsl.tasks.corpus import expected_seq_len, sample_seq_len

    rng = random.Random(3)
    for bptt in (5, 20, 35, 70):
        draws = [sample_seq_len(bptt, rng) for _ in range(40000)]
        assert abs(sum(draws) / len(draws) - expected_seq_len(bptt)) < 0.1, bptt
