"""Training throughput of a data-parallel search: tokens/s on 1 and N processes.

Runs the real Trainer (LM task on the built-in corpus, the supernet of a shipped space)
for a few warm-up steps and then ``--steps`` timed steps, once per process count, with
the same global batch; the N-process runs are started with torchrun (gloo on CPU,
NCCL on GPUs).  Every run gets the same cores in total: with ``--cores C`` a run on n
processes gives each ``C // n`` torch threads.  Reported: tokens/s (the global batch's
tokens over the time of the timed steps), the speedup over one process, and the
scaling efficiency (speedup / n).

    python bench/distributed_throughput.py [--space darts_rnn] [--nhid 64] [--batch-size 64]
        [--bptt 35] [--steps 8] [--order first] [--procs 1 2] [--cores 2]

The numbers of one machine say little about another: on a shared 2-core VM the two
processes compete with everything else that runs (say so when quoting them), and
torch's intra-op threads suffer most from that: ``--threads 1`` gives every process
one thread (the essdsl default for nhid <= 128), so n processes use n cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker(args) -> None:
    """One rank (or the only process): time ``args.steps`` steps after ``args.warmup``."""
    import torch

    from essdsl.lang.check import load_graph
    from essdsl.nas import distributed
    from essdsl.nas.runconfig import RunConfig
    from essdsl.nas.trainer import Trainer
    from essdsl.tasks.corpus import synthetic_corpus
    from essdsl.tasks.lm import LanguageModelTask

    parallel = distributed.setup(args.device)
    torch.set_num_threads(args.threads or max(1, args.cores // parallel.world_size))
    steps = args.warmup + args.steps
    tokens = args.batch_size * args.bptt * (steps + 4)  # one epoch holds every step
    corpus = synthetic_corpus(0, train=tokens, valid=max(tokens // 4, args.batch_size * args.bptt * 4), test=1000)
    task = LanguageModelTask(corpus, bptt=args.bptt, dropouts=dict(dropout=0.1, dropouth=0.05, dropoutx=0.1, dropouti=0.05, dropoute=0.0))
    graph = load_graph(ROOT / "spaces" / f"{args.space}.space", {"ninp": args.nhid, "nhid": args.nhid})
    model, manifest, _ = task.build(graph, True, seed=0)
    device = parallel.device if parallel.enabled else torch.device(args.device)
    cfg = RunConfig(epochs=1, max_steps=steps, batch_size=args.batch_size, bptt=args.bptt, order=args.order, seed=0)
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(model, task, cfg, run_dir, manifest, device=device)
        marks: list[tuple[float, int]] = []

        def on_step(info):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks.append((time.perf_counter(), trainer.last_size))

        trainer.on_step = on_step
        start = time.perf_counter()
        try:
            trainer.run()
        finally:
            distributed.teardown(parallel)
    timed = marks[args.warmup :]
    seconds = timed[-1][0] - marks[args.warmup - 1][0] if args.warmup else timed[-1][0] - start
    result = {
        "processes": parallel.world_size,
        "threads_per_process": torch.get_num_threads(),
        "tokens": sum(size for _, size in timed),
        "seconds": seconds,
        "tokens_per_s": sum(size for _, size in timed) / seconds,
    }
    if parallel.is_main:
        Path(args.out).write_text(json.dumps(result))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(procs: int, args, out: Path) -> dict:
    own = [str(Path(__file__).resolve()), "--worker", "--out", str(out)]
    for name in ("space", "nhid", "batch_size", "bptt", "steps", "warmup", "order", "cores", "threads", "device"):
        own += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    if procs == 1:
        command = [sys.executable, *own]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={procs}", f"--master_port={free_port()}", *own]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads or max(1, args.cores // procs))}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {procs}-process run failed:\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", default="darts_rnn")
    parser.add_argument("--nhid", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--order", default="first", choices=["first", "second"])
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="CPU threads in total, shared by a run's processes")
    parser.add_argument("--threads", type=int, default=0, help="torch threads of each process (default: --cores / processes)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.procs[0] != 1:
        raise SystemExit("--procs must start with 1: the one-process run is the reference")
    if any(args.batch_size % n for n in args.procs):
        raise SystemExit(f"--batch-size {args.batch_size} must be divisible by every process count {args.procs}")
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for n in args.procs:
            results.append(launch(n, args, Path(folder) / f"{n}.json"))
    base = results[0]["tokens_per_s"]  # the one-process run (procs must start with 1)
    print(f"{args.space}, nhid {args.nhid}, global batch {args.batch_size}, bptt {args.bptt}, {args.order} order, "
          f"{args.steps} timed steps after {args.warmup}, "
          f"{f'{args.threads} thread(s) per process' if args.threads else f'{args.cores} cores in total'} ({args.device})")  # fmt: skip
    print(f"{'processes':>9}  {'threads each':>12}  {'tokens/s':>10}  {'speedup':>7}  {'efficiency':>10}")
    for r in results:
        speedup = r["tokens_per_s"] / base
        print(f"{r['processes']:>9}  {r['threads_per_process']:>12}  {r['tokens_per_s']:>10.0f}  {speedup:>7.2f}  {speedup / r['processes']:>10.0%}")
    print(json.dumps({"settings": {k: v for k, v in vars(args).items() if k not in ("worker", "out")}, "results": results}))


if __name__ == "__main__":
    main()
