"""A small search on Penn Treebank lowers validation perplexity (skipped without the data)."""

import math
from pathlib import Path

import pytest
import torch

from essdsl.lang.check import load_graph
from essdsl.compile import ModelConfig, build_manifest, build_model
from essdsl.tasks.corpus import load_text_corpus
from essdsl.nas.runconfig import RunConfig
from essdsl.nas.trainer import Trainer
from essdsl.tasks.lm import LanguageModelTask

ROOT = Path(__file__).resolve().parents[1]
PTB = ROOT.parent / "shared" / "data" / "ptb"


@pytest.mark.slow
@pytest.mark.skipif(not (PTB / "train.txt").exists(), reason="../shared/data/ptb is absent")
def test_small_ptb_search_lowers_valid_perplexity(tmp_path):
    torch.set_num_threads(1)
    corpus = load_text_corpus(PTB)
    assert corpus.vocab == 10000
    corpus.valid = corpus.valid[:20000]  # a shorter validation pass
    graph = load_graph(ROOT / "spaces" / "darts_rnn.space", {"ninp": 32, "nhid": 32})
    cfg = ModelConfig(vocab=corpus.vocab, search=True, dropout=0.1, dropouth=0.05, dropoutx=0.1, dropouti=0.05, dropoute=0)
    torch.manual_seed(0)
    model = build_model(graph, cfg)
    run = RunConfig(epochs=1, max_steps=200, batch_size=32, eval_batch_size=50, bptt=20, lr=20, seed=0)
    trainer = Trainer(model, LanguageModelTask(corpus, bptt=run.bptt), run, tmp_path, build_manifest(graph, cfg, model))
    # a freshly initialised model is close to uniform over the vocabulary
    before = corpus.vocab
    history = trainer.run()
    after = history[-1]["valid_ppl"]
    print(f"PTB valid ppl: {before:.1f} before, {after:.1f} after {trainer.step} steps (unigram {corpus.unigram_ppl:.1f}, uniform {before})")
    assert math.isfinite(after) and after < 0.2 * before
