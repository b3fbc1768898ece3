"""Growing search vs fixed-size search on a small PTB language model.

For each configuration: search (same epochs, same hyperparameters), derive the
genotype, train it from scratch for the same epochs, and report the validation
perplexity of the supernet and of the derived model, its parameters and the search
time.  Configurations: DARTS (spaces/darts_rnn.space, 8 nodes), the two-input
backbone at the growing space's maximum size as a fixed space, and the growing
two-input backbone (spaces/two_input_rnn_grow.space) in both modes.

    python bench/growth_lm.py --data ../shared/data/ptb --train-tokens 200000 --out bench/growth_lm.json

Everything runs in-process on the CPU; numbers depend on the machine's load (the
times in README.md were taken on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from essdsl.lang.check import load_graph, load_graph_space, load_graph_text  # noqa: E402
from essdsl.lang.growth import expand  # noqa: E402
from essdsl.lang.parse import parse_space  # noqa: E402
from essdsl.nas.derive import arch_summary, derive_choices, genotype_text  # noqa: E402
from essdsl.nas.growing import GrowingTrainer, arch_tensors, growing_options  # noqa: E402
from essdsl.nas.runconfig import RunConfig  # noqa: E402
from essdsl.nas.trainer import Trainer  # noqa: E402
from essdsl.tasks.corpus import load_corpus  # noqa: E402
from essdsl.tasks.lm import LanguageModelTask  # noqa: E402

GROW = ROOT / "spaces" / "two_input_rnn_grow.space"


def with_schedule(text: str, mode: str, every: int) -> str:
    return text.replace("mode then_prune", f"mode {mode}").replace("every 2 epochs", f"every {every} epochs")


def lm_task(corpus, args) -> LanguageModelTask:
    d = args.dropout
    return LanguageModelTask(corpus, bptt=args.bptt, dropouts=dict(dropout=d, dropouth=d / 2, dropoutx=d, dropouti=d / 2, dropoute=0.0))


def search(graph, corpus, args, run_dir):
    """(genotype text, history, seconds, growth events) of one search."""
    task = lm_task(corpus, args)
    model, manifest, _ = task.build(graph, True, args.seed)
    run_cfg = RunConfig(epochs=args.epochs, batch_size=args.batch_size, bptt=args.bptt, seed=args.seed, eval_batch_size=10, lr=args.lr)
    growing = growing_options(graph, task, args.seed)
    t0 = time.time()
    if growing:
        trainer = GrowingTrainer(model=model, task=task, cfg=run_cfg, run_dir=run_dir, manifest=manifest, **growing)
    else:
        trainer = Trainer(model, task, run_cfg, run_dir, manifest, describe_arch=lambda m: arch_summary(manifest, arch_tensors(m)))
    history = trainer.run()
    seconds = time.time() - t0
    space = trainer.grower.space() if growing else graph.space
    text = genotype_text(space, derive_choices(trainer.manifest, arch_tensors(trainer.model)), sizes=dict(graph.sizes))
    events = [e for r in history for e in r.get("growth", [])]
    return text, history, seconds, events


def train(text, corpus, args, run_dir):
    """(valid ppl, parameters, seconds) of the genotype trained from scratch for the same epochs."""
    graph = load_graph_text(text, sizes={"ninp": args.nhid, "nhid": args.nhid})
    task = lm_task(corpus, args)
    model = task.build_model(graph, False, args.seed)
    run_cfg = RunConfig(search=False, epochs=args.epochs, batch_size=args.batch_size, bptt=args.bptt, seed=args.seed, eval_batch_size=10, lr=args.lr)
    t0 = time.time()
    history = Trainer(model, task, run_cfg, run_dir, {}).run()
    return history[-1]["valid_ppl"], sum(p.numel() for p in model.parameters()), time.time() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "ptb"))
    parser.add_argument("--train-tokens", type=int, default=200_000)
    parser.add_argument("--valid-tokens", type=int, default=40_000)
    parser.add_argument("--nhid", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--every", type=int, default=1, help="grow every N epochs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--lr", type=float, default=20.0, help="SGD learning rate of search and training (DARTS: 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated configuration names")
    parser.add_argument("--out", default=str(ROOT / "bench" / "growth_lm.json"))
    parser.add_argument("--work", default="/tmp/essdsl-growth-lm")
    args = parser.parse_args()
    torch.set_num_threads(1)

    full = load_corpus(args.data)
    corpus = replace(full, train=full.train[: args.train_tokens], valid=full.valid[: args.valid_tokens])
    sizes = {"ninp": args.nhid, "nhid": args.nhid}
    grow_text = GROW.read_text()
    grow_space = parse_space(grow_text)
    configs = {
        "darts_rnn (fixed, 8 nodes)": load_graph(ROOT / "spaces" / "darts_rnn.space", sizes),
        "two_input (fixed, 6 nodes)": load_graph_space(expand(grow_space, 6), sizes),
        "two_input grow then_prune (2->6)": load_graph_space(parse_space(with_schedule(grow_text, "then_prune", args.every)), sizes),
        "two_input grow interleaved (2->6)": load_graph_space(parse_space(with_schedule(grow_text, "interleaved", args.every)), sizes),
    }
    wanted = [c.strip() for c in args.only.split(",") if c.strip()]
    rows = []
    for index, (name, graph) in enumerate(configs.items()):
        if wanted and not any(w in name for w in wanted):
            continue
        work = Path(args.work) / f"{index}"
        text, history, search_s, events = search(graph, corpus, args, work / "search")
        ppl, params, train_s = train(text, corpus, args, work / "train")
        row = {
            "config": name,
            "supernet_valid_ppl": round(history[-1]["valid_ppl"], 2),
            "derived_valid_ppl": round(ppl, 2),
            "derived_params": params,
            "search_s": round(search_s, 1),
            "train_s": round(train_s, 1),
            "growth": [{k: e[k] for k in ("epoch", "size_after", "loss_before", "loss_after")} for e in events],
            "genotype": text,
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "genotype"}), flush=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "corpus": corpus.describe(), "rows": rows}, indent=2) + "\n")
    print("| configuration | supernet valid ppl | derived valid ppl | derived params | search s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['supernet_valid_ppl']} | {r['derived_valid_ppl']} | {r['derived_params']:,} | {r['search_s']} |")


if __name__ == "__main__":
    main()
