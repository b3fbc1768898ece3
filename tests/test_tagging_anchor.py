"""Correctness anchor: the tagger whose two directions are genotypes/lstm.space compiled
as cells computes what a tagger on torch.nn.LSTM(bidirectional=True) computes, once
the LSTM's weights are copied into the cells: same tag scores, same CRF loss."""

from pathlib import Path

import pytest
import torch

from essdsl.lang.check import load_graph
from essdsl.tasks.tagging_model import Tagger, TaggerConfig
from tagging_cells import TorchBiLSTMEncoder, copy_lstm_into_genotype_cell
from test_tagging_model import make_batch, random_sentences

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("impl", ["generated", "reference"])
def test_lstm_genotype_tagger_is_a_torch_bilstm_tagger(impl):
    from essdsl.compile import ModelConfig, build_cell

    ninp, nhid = 18, 7
    graph = load_graph(ROOT / "genotypes" / "lstm.space", {"ninp": ninp, "nhid": nhid})
    config = TaggerConfig(words=20, tags=4, features=(5,), word_dim=8, feature_dim=4, chars=10, char_dim=4,
                          char_filters=6)
    cell_config = ModelConfig(vocab=1, dropout=0.0, dropouth=0.0, dropoutx=0.0, dropouti=0.0, dropoute=0.0,
                              search=False)
    torch.manual_seed(0)
    tagger = Tagger(config, lambda: build_cell(graph, cell_config, impl=impl), ninp, nhid).double().eval()
    encoder = TorchBiLSTMEncoder(ninp, nhid).double()
    with torch.no_grad():
        for p in encoder.parameters():
            p.uniform_(-0.5, 0.5)  # larger than the default, so that every gate matters
    copy_lstm_into_genotype_cell(encoder.lstm, tagger.fw)
    copy_lstm_into_genotype_cell(encoder.lstm, tagger.bw, suffix="_reverse")

    batch = make_batch(random_sentences(5, seed=4))
    scores = tagger(batch)
    loss = tagger.loss(batch)
    x = tagger.represent(batch)
    reference_scores = tagger.scores(encoder(x, batch.lengths))
    mask = batch.mask.unsqueeze(-1)
    torch.testing.assert_close(scores * mask, reference_scores * mask, atol=1e-12, rtol=0)
    reference_loss = tagger.crf.nll(reference_scores, batch.tags, batch.mask).sum() / batch.lengths.sum()
    assert loss.item() == pytest.approx(reference_loss.item(), abs=1e-12)


def test_search_model_shares_the_supernet_architecture(tmp_path):
    """A supernet tagger (darts_rnn.space's cells, batch normalisation on) trains its one
    set of architecture weights from both directions."""
    from essdsl.tasks.base import is_arch_parameter
    from essdsl.tasks.tagging import TaggingTask, settings_for
    from test_tagging_task import tiny_ner

    task = TaggingTask(settings_for("ner", data=str(tiny_ner(tmp_path / "ner")), min_count=1))
    graph = load_graph(ROOT / "spaces" / "darts_rnn.space", {"ninp": 16, "nhid": 16})
    model = task.build_model(graph, search=True, seed=0)
    arch = [n for n, _ in model.named_parameters() if is_arch_parameter(n)]
    assert arch and all(n.startswith("fw.arch.") for n in arch)
    assert all(getattr(model.bw.arch, n.split(".")[-1]) is getattr(model.fw.arch, n.split(".")[-1]) for n in arch)
    batch = task.search_stream(5, torch.device("cpu")).next()
    loss, _ = task.loss(model, batch, None)
    loss.backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if is_arch_parameter(n))
