"""The CRF against brute force: every tag sequence of tiny inputs enumerated."""

import itertools

import pytest
import torch

from essdsl.tasks.tagging_crf import CRF


def brute_force(crf: CRF, emissions: torch.Tensor, length: int, column: int):
    """(log Z, best path) of one sentence by enumerating all K^length sequences."""
    K = crf.num_tags
    scores = {}
    for path in itertools.product(range(K), repeat=length):
        s = crf.start[path[0]] + crf.end[path[-1]]
        for t, tag in enumerate(path):
            s = s + emissions[t, column, tag]
            if t:
                s = s + crf.transitions[path[t - 1], tag]
        scores[path] = s
    stacked = torch.stack(list(scores.values()))
    best = max(scores, key=lambda p: scores[p].item())
    return torch.logsumexp(stacked, 0), list(best), scores


@pytest.mark.parametrize("seed", range(4))
def test_log_partition_score_and_viterbi_match_enumeration(seed):
    torch.manual_seed(seed)
    K, T = 3, 4
    lengths = [4, 1, 3, 2]
    crf = CRF(K)
    with torch.no_grad():  # scores large enough that the best path is not a near tie
        for p in (crf.transitions, crf.start, crf.end):
            p.normal_(0, 1.5)
    emissions = torch.randn(T, len(lengths), K, dtype=torch.float64) * 2
    crf = crf.double()
    mask = torch.arange(T).unsqueeze(1) < torch.tensor(lengths).unsqueeze(0)
    tags = torch.randint(0, K, (T, len(lengths)))
    log_z = crf.log_partition(emissions, mask)
    gold = crf.score(emissions, tags, mask)
    decoded = crf.decode(emissions, mask)
    for b, n in enumerate(lengths):
        expected_z, expected_best, scores = brute_force(crf, emissions, n, b)
        assert log_z[b].item() == pytest.approx(expected_z.item(), abs=1e-9)
        assert gold[b].item() == pytest.approx(scores[tuple(tags[:n, b].tolist())].item(), abs=1e-9)
        assert decoded[b] == expected_best


def test_nll_is_a_proper_negative_log_probability():
    torch.manual_seed(0)
    crf = CRF(2).double()
    emissions = torch.randn(3, 1, 2, dtype=torch.float64)
    mask = torch.ones(3, 1, dtype=torch.bool)
    total = sum(
        torch.exp(-crf.nll(emissions, torch.tensor(p).unsqueeze(1), mask)).item()
        for p in itertools.product(range(2), repeat=3)
    )
    assert total == pytest.approx(1.0, abs=1e-12)
