"""Transfer experiment: the same bidirectional CRF tagger on CoNLL-2000 chunking with
different recurrent cells, a few seeds each, one table.

Every cell gets the same tagger (word + POS embeddings, forward and backward copies
of the cell, CRF), the same hyperparameters and the same budget:

    python bench/transfer.py [--cells genotypes/lstm.space genotypes/gru.space ...]
        [--seeds 3] [--epochs 3] [--train-sentences 4000] [--nhid 64] [--jobs 2]

Defaults (the README table): ninp = nhid = 64, the first 4,000 training sentences
left after the seeded validation slice (see essdsl/tasks/tagging_data.py), 3 epochs,
batch 32, Adam lr 0.01, gradient norm clipped at 5, dropout 0.33 on the token
representation and the cell outputs, 0.1 variational dropout inside the cell; the
epoch with the best validation F1 is kept and scored on test.txt (conlleval F1).
Runs go ``--jobs`` at a time, one torch thread each.

Reference lines: the shared task's baseline (most frequent chunk tag per POS tag,
77.07 F1 on test, recomputed here) and its winner (93.48, Kudo & Matsumoto 2000,
SVMs with many hand-made features).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DEFAULT_CELLS = [
    "genotypes/lstm.space",
    "genotypes/gru.space",
    "genotypes/darts_v2.space",
    "bench/ess_ptb_small.space",
]
SHARED_TASK_WINNER = 93.48  # Kudo & Matsumoto (2000), CoNLL-2000 test F1


def train_one(job: dict) -> dict:
    """Train one tagger (one cell, one seed); returns its numbers."""
    import torch

    from essdsl.lang.check import load_graph
    from essdsl.tasks.tagging import TaggingTask, settings_for

    torch.set_num_threads(job["threads"])
    task = TaggingTask(settings_for("chunking", data=job["data"], max_train_sentences=job["train_sentences"]))
    graph = load_graph(ROOT / job["cell"], {"ninp": job["nhid"], "nhid": job["nhid"]})
    model = task.build_model(graph, search=False, seed=job["seed"])
    params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=job["lr"])
    stream = task.train_stream(job["batch_size"], job["seed"], torch.device("cpu"))
    start = time.perf_counter()
    best, best_state, history = None, None, []
    tokens = 0
    for epoch in range(job["epochs"]):
        model.train()
        while (batch := stream.next()) is not None:
            loss, _ = task.loss(model, batch, None)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            tokens += batch.size
        stream.restart()
        valid = task.evaluate(model, "valid", 128)
        history.append(round(valid["f1"], 2))
        if best is None or valid["f1"] > best:
            best = valid["f1"]
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_seconds = time.perf_counter() - start
    model.load_state_dict(best_state)
    test = task.evaluate(model, "test", 128)
    return {
        "cell": job["cell"],
        "seed": job["seed"],
        "params": params,
        "valid_f1": best,
        "valid_f1_per_epoch": history,
        "test_f1": test["f1"],
        "test_f1_per_type": {k[3:]: v for k, v in test.items() if k.startswith("f1/")},
        "seconds": time.perf_counter() - start,
        "train_tokens_per_s": tokens / train_seconds,
    }


def mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def cell_parameters(cell: str, nhid: int) -> int:
    """Weights of the two cells (forward and backward) alone."""
    import math

    from essdsl.lang.check import load_graph
    from essdsl.lang.graph import parameter_layout

    graph = load_graph(ROOT / cell, {"ninp": nhid, "nhid": nhid})
    return 2 * sum(math.prod(p.shape) for p in parameter_layout(graph) if p.role != "arch")


def table(results: list[dict], baseline: float, nhid: int) -> str:
    rows = [
        "| cell | tagger params (both cells) | valid F1 | test F1 (mean ± std) | time per run |",
        "|---|---:|---:|---:|---:|",
    ]
    for cell in dict.fromkeys(r["cell"] for r in results):
        runs = [r for r in results if r["cell"] == cell]
        rows.append(
            f"| `{cell}` | {runs[0]['params']:,} ({cell_parameters(cell, nhid):,}) | "
            f"{mean_std([r['valid_f1'] for r in runs])} | "
            f"{mean_std([r['test_f1'] for r in runs])} | {statistics.mean(r['seconds'] for r in runs):.0f} s |"
        )
    rows.append(f"| baseline: most frequent chunk tag per POS tag (recomputed on all of train) | 0 | | {baseline:.2f} | |")
    rows.append(f"| CoNLL-2000 winner (Kudo & Matsumoto 2000) | | | {SHARED_TASK_WINNER:.2f} | |")
    return "\n".join(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", nargs="+", default=DEFAULT_CELLS)
    parser.add_argument("--data", default=str(ROOT / ".." / "shared" / "data" / "conll2000"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-sentences", type=int, default=4000)
    parser.add_argument("--nhid", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="", help="write every run's numbers here")
    parser.add_argument("--table", nargs="+", default=[], metavar="JSON",
                        help="print one table from the --json files of earlier runs, train nothing")
    args = parser.parse_args(argv)
    if args.table:
        saved = [json.loads(Path(p).read_text()) for p in args.table]
        print(table([r for s in saved for r in s["runs"]], saved[0]["baseline"], saved[0]["settings"]["nhid"]))
        return 0

    from essdsl.errors import EssdslError
    from essdsl.tasks.tagging import TaggingTask, settings_for

    try:
        task = TaggingTask(settings_for("chunking", data=args.data, max_train_sentences=args.train_sentences))
        # the shared task's baseline is estimated on the whole training split
        _, baseline = TaggingTask(settings_for("chunking", data=args.data)).baseline("test")
    except EssdslError as exc:
        print(f"transfer: error: {exc}", file=sys.stderr)
        return 1
    print(task.describe(), flush=True)
    jobs = [
        dict(cell=cell, seed=seed, data=args.data, train_sentences=args.train_sentences, nhid=args.nhid,
             epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, threads=args.threads)
        for seed in range(args.seeds)
        for cell in args.cells
    ]
    start = time.perf_counter()
    results = []
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for r in pool.imap_unordered(train_one, jobs):
            results.append(r)
            print(f"{r['cell']} seed {r['seed']}: test F1 {r['test_f1']:.2f} (valid per epoch {r['valid_f1_per_epoch']}), "
                  f"{r['seconds']:.0f} s", flush=True)
    results.sort(key=lambda r: (args.cells.index(r["cell"]), r["seed"]))
    print(table(results, baseline, args.nhid))
    print(f"total {time.perf_counter() - start:.0f} s wall clock, {args.jobs} run(s) at a time")
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "baseline": baseline, "runs": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
