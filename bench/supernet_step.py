"""Forward + backward time of one supernet training step, per implementation.

    python bench/supernet_step.py [--space spaces/darts_rnn.space] [--nhid 300] [--batch 64] [--bptt 35] [--repeats 3]

Each row is a named implementation (see ``IMPLEMENTATIONS``): a function that
builds a model for the graph and config.  The step is train mode with the
search dropouts off (the arithmetic is measured, not the masks), BatchNorm on,
loss = cross-entropy of the logits, then backward.  The time is the median over
``--repeats`` steps after one warm-up step.  Later rows (torch.compile, bf16,
the GEMM-only floor) are added to ``IMPLEMENTATIONS``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from essdsl.check import load_graph  # noqa: E402
from essdsl.compile import ModelConfig, build_model  # noqa: E402


class Implementation(NamedTuple):
    name: str
    build: Callable  # (graph, config) -> nn.Module with init_hidden / forward(tokens, hidden)
    baseline: bool = False


IMPLEMENTATIONS: list[Implementation] = [
    Implementation("reference (edge by edge)", lambda g, c: build_model(g, c, impl="reference"), baseline=True),
    Implementation("generated (eager)", lambda g, c: build_model(g, c, impl="generated")),
]


def time_step(model, tokens, targets, repeats: int) -> float:
    model.train()
    hidden = model.init_hidden(tokens.size(1))
    vocab = model.encoder.num_embeddings

    def step():
        model.zero_grad(set_to_none=True)
        logits, _ = model(tokens, hidden)
        F.cross_entropy(logits.view(-1, vocab), targets.view(-1)).backward()

    step()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "spaces" / "darts_rnn.space"))
    parser.add_argument("--nhid", type=int, default=300)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--vocab", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--only", default="", help="comma-separated implementation names to run (substring match)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    graph = load_graph(args.space, sizes={"ninp": args.nhid, "nhid": args.nhid})
    config = ModelConfig(vocab=args.vocab, dropout=0, dropouth=0, dropoutx=0, dropouti=0, dropoute=0, search=True)
    torch.manual_seed(0)
    tokens = torch.randint(0, args.vocab, (args.bptt, args.batch))
    targets = torch.randint(0, args.vocab, (args.bptt, args.batch))
    wanted = [w.strip() for w in args.only.split(",") if w.strip()]
    rows = []
    print(f"{graph.name}: nhid {args.nhid}, vocab {args.vocab}, T {args.bptt}, B {args.batch}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats} after warm-up")  # fmt: skip
    state = None
    for impl in IMPLEMENTATIONS:
        if wanted and not impl.baseline and not any(w in impl.name for w in wanted):
            continue
        torch.manual_seed(0)
        model = impl.build(graph, config)
        if state is None:
            state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            model.load_state_dict(state)
        seconds = time_step(model, tokens, targets, args.repeats)
        rows.append((impl, seconds))
        print(f"  {impl.name:<28} {seconds:8.3f} s/step", flush=True)
    baseline = next(s for i, s in rows if i.baseline)
    print()
    print(f"{'implementation':<30} {'s/step':>8} {'speedup':>8}")
    for impl, seconds in rows:
        print(f"{impl.name:<30} {seconds:8.3f} {baseline / seconds:8.2f}")
    fastest = min(s for i, s in rows if not i.baseline)
    print(f"speedup vs reference: {baseline / fastest:.2f} (B={args.batch})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
