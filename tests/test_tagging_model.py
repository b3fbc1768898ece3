"""The tagger around a cell: exact padding, reversal, and one architecture for both
directions in a search."""

import pytest
import torch

from essdsl.tasks.base import is_arch_parameter
from essdsl.tasks.tagging_model import TagBatch, Tagger, TaggerConfig, reverse_within
from tagging_cells import ArchCell, TorchLSTMCell


def make_batch(sentences, chars=True):
    """sentences: list of (word ids, feature ids, char ids per word, tag ids)."""
    T = max(len(s[0]) for s in sentences)
    L = max(len(c) for s in sentences for c in s[2])
    B = len(sentences)
    words = torch.zeros(T, B, dtype=torch.long)
    feats = torch.zeros(T, B, dtype=torch.long)
    tags = torch.zeros(T, B, dtype=torch.long)
    char_ids = torch.zeros(T, B, L, dtype=torch.long)
    for b, (w, f, c, y) in enumerate(sentences):
        words[: len(w), b] = torch.tensor(w)
        feats[: len(w), b] = torch.tensor(f)
        tags[: len(w), b] = torch.tensor(y)
        for t, cs in enumerate(c):
            char_ids[t, b, : len(cs)] = torch.tensor(cs)
    lengths = torch.tensor([len(s[0]) for s in sentences])
    return TagBatch(words, [feats], char_ids if chars else None, tags, lengths)


def random_sentences(n, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        length = int(torch.randint(1, 9, (1,), generator=g))
        w = torch.randint(1, 20, (length,), generator=g).tolist()
        f = torch.randint(1, 5, (length,), generator=g).tolist()
        c = [torch.randint(1, 10, (int(torch.randint(1, 7, (1,), generator=g)),), generator=g).tolist() for _ in w]
        y = torch.randint(0, 4, (length,), generator=g).tolist()
        out.append((w, f, c, y))
    return out


def test_reverse_within_keeps_padding_and_is_an_involution():
    x = torch.arange(12.0).reshape(4, 3)
    lengths = torch.tensor([4, 2, 1])
    r = reverse_within(x, lengths)
    assert r[:, 0].tolist() == [9.0, 6.0, 3.0, 0.0]
    assert r[:, 1].tolist() == [4.0, 1.0, 7.0, 10.0]
    assert r[:, 2].tolist() == x[:, 2].tolist()
    assert torch.equal(reverse_within(r, lengths), x)


@pytest.mark.parametrize("crf", [True, False])
def test_a_sentence_does_not_depend_on_its_batch(crf):
    torch.manual_seed(0)
    config = TaggerConfig(words=20, tags=4, features=(5,), word_dim=8, feature_dim=4, chars=10, char_dim=4,
                          char_filters=6, crf=crf)
    tagger = Tagger(config, lambda: TorchLSTMCell(18, 7), 18, 7).double().eval()
    sentences = random_sentences(6, seed=1)
    batch = make_batch(sentences)
    scores = tagger(batch)
    losses = tagger.sentence_losses(batch, scores)
    decoded = tagger.decode(batch, scores)
    for b, sentence in enumerate(sentences):
        alone = make_batch([sentence])
        n = len(sentence[0])
        alone_scores = tagger(alone)
        assert torch.allclose(alone_scores[:, 0], scores[:n, b], atol=1e-12, rtol=0)
        assert tagger.sentence_losses(alone).item() == pytest.approx(losses[b].item(), abs=1e-10)
        assert tagger.decode(alone) == [decoded[b]]
    # the backward direction really reads right to left: the first token's score
    # changes when only the last token changes
    changed = [list(s) for s in sentences[:1]]
    changed[0][0] = changed[0][0][:-1] + [19]
    if len(sentences[0][0]) > 1:
        assert not torch.allclose(tagger(make_batch(changed))[0, 0], scores[0, 0])


def test_search_shares_one_architecture_between_directions():
    torch.manual_seed(0)
    config = TaggerConfig(words=20, tags=4, features=(5,), word_dim=8, feature_dim=4)
    tagger = Tagger(config, lambda: ArchCell(12, 6), 12, 6, share_arch=True)
    assert tagger.fw.arch.mix is tagger.bw.arch.mix
    assert tagger.fw.cell.w is not tagger.bw.cell.w
    arch = [n for n, _ in tagger.named_parameters() if is_arch_parameter(n)]
    assert arch == ["fw.arch.mix"]
    batch = make_batch(random_sentences(3, seed=2), chars=False)
    tagger.loss(batch).backward()
    assert tagger.fw.arch.mix.grad is not None and tagger.fw.arch.mix.grad.abs().sum() > 0
    separate = Tagger(config, lambda: ArchCell(12, 6), 12, 6, share_arch=False)
    assert separate.fw.arch.mix is not separate.bw.arch.mix


def test_projection_only_when_widths_differ():
    config = TaggerConfig(words=20, tags=4, word_dim=8)
    assert Tagger(config, lambda: TorchLSTMCell(8, 4), 8, 4).project is None
    assert Tagger(config, lambda: TorchLSTMCell(5, 4), 5, 4).project.weight.shape == (5, 8)
