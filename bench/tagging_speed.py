"""Training speed of the tagger: one epoch of CoNLL-2000 chunking, tokens per second,
the cells' time step eager and compiled with ``torch.compile``.

    python bench/tagging_speed.py [--cell genotypes/lstm.space] [--nhid 128]
        [--batch-size 32] [--threads 2] [--train-sentences N]

Both directions' cells get their generated ``step`` compiled (essdsl.compile.fast,
the same path the language model's training uses); the rest of the tagger
(embeddings, CRF) runs eagerly.  Compilation time is reported apart and not
counted in the epoch's tokens/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def epoch(task, model, batch_size: int, compiled: bool) -> dict:
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    stream = task.train_stream(batch_size, 0, torch.device("cpu"))
    model.train()
    warm = None
    if compiled:
        # the first batch pays the compilation; time it apart
        start = time.perf_counter()
        batch = stream.next()
        loss, _ = task.loss(model, batch, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        warm = time.perf_counter() - start
    tokens, start = 0, time.perf_counter()
    while (batch := stream.next()) is not None:
        loss, _ = task.loss(model, batch, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tokens += batch.size
    seconds = time.perf_counter() - start
    return {"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / seconds, "first_batch_s": warm}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", default="genotypes/lstm.space")
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "conll2000"))
    parser.add_argument("--nhid", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-sentences", type=int, default=None)
    args = parser.parse_args(argv)

    import torch

    from essdsl.compile.fast import compile_step
    from essdsl.lang.check import load_graph
    from essdsl.tasks.tagging import TaggingTask, settings_for

    torch.set_num_threads(args.threads)
    task = TaggingTask(settings_for("chunking", data=args.data, max_train_sentences=args.train_sentences))
    graph = load_graph(ROOT / args.cell, {"ninp": args.nhid, "nhid": args.nhid})
    print(task.describe())
    for compiled in (False, True):
        model = task.build_model(graph, search=False, seed=0)
        if compiled:
            for cell in (model.fw, model.bw):
                compile_step(cell, report=lambda message: print(f"  {message}"))
        r = epoch(task, model, args.batch_size, compiled)
        first = f", first batch (compiling) {r['first_batch_s']:.1f} s" if compiled else ""
        print(f"{'compiled' if compiled else '--no-compile'}: {r['tokens']:,} tokens in {r['seconds']:.1f} s = "
              f"{r['tokens_per_s']:,.0f} tokens/s{first}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
