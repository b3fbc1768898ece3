"""Forecasting study (issue 16): searched cells vs LSTM/GRU vs VAR vs persistence.

    python bench/forecast_study.py [--datasets lorenz96 macrodata] [--seeds 0 1 2]
        [--search-epochs 3] [--train-epochs 15] [--ninp 16] [--nhid 32]
        [--space fixed=spaces/two_input_rnn.space]
        [--space grow=spaces/two_input_rnn_grow.space:every=1,max=4 --space grow-interleaved=spaces/two_input_rnn_grow.space:every=1,max=4,mode=interleaved]
        [--out bench/forecast_study.json] [--runs DIR]

Per data set and seed:

* every ``--space LABEL=PATH[:KEY=VALUE,...]`` is searched for ``--search-epochs``
  (``KEY=VALUE`` pairs override the search's settings, e.g. ``epochs=6``;
  ``mode=``, ``every=``, ``start=``, ``max=`` rewrite that line of a ``grow`` block in
  a copy of the space),
  and its derived genotype is trained from scratch for ``--train-epochs``;
* the ``lstm`` and ``gru`` genotypes (genotypes/*.space) are trained from scratch
  with the same budget (same epochs, batch, learning rate, sizes);
* persistence and the validation-selected VAR(p) are computed on the same samples
  (they do not depend on the seed).

Every model is scored on the test split with the forecast task's metrics (RMSE,
MAE, RSE, CORR on the original scale).  The table gives the mean and the sample
standard deviation over seeds, the trained model's parameter count (weights only,
head included) and the wall-clock seconds of the search and of the training.
Every run goes through the public API as ``essdsl search``/``train``/``eval``
do (run folders with checkpoints and metrics.jsonl in ``--runs``), so a space with
a ``grow`` block grows as it does on the command line; test metrics are those of
the best epoch by validation RMSE.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MACRODATA = ROOT / ".." / "shared" / "data" / "macrodata" / "macrodata.csv"
DATASETS = {
    "lorenz96": {},  # the built-in series (the task's default)
    "macrodata": dict(data=str(MACRODATA), columns="realgdp,realcons,realinv", transform="logdiff", window=8),
}
BASELINE_GENOTYPES = {"lstm": ROOT / "genotypes" / "lstm.space", "gru": ROOT / "genotypes" / "gru.space"}
METRICS = ("rmse", "mae", "rse", "corr")


def parse_space(text: str) -> tuple[str, Path, dict]:
    """``LABEL=PATH[:KEY=VALUE,...]`` -> (label, path, extra search settings)."""
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise SystemExit(f"--space expects LABEL=PATH[:KEY=VALUE,...], got '{text}'")
    path, _, extra = rest.partition(":")
    settings = {}
    for pair in filter(None, extra.split(",")):
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--space settings are KEY=VALUE, got '{pair}' in '{text}'")
        settings[key.strip()] = _number(value.strip())
    return label, Path(path), settings


def _number(text: str):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


GROW_KEYS = ("mode", "every", "start", "max")  # lines of a grow block a --space setting may rewrite


def space_variant(path: Path, extra: dict, folder: Path) -> tuple[Path, dict]:
    """``mode=``, ``every=``, ``start=``, ``max=`` rewrite that line of the space's ``grow``
    block (``mode interleaved``, ``every 1 epochs``, ...) in a copy in ``folder``; the
    other settings are the search's."""
    extra = dict(extra)
    changes = {k: extra.pop(k) for k in GROW_KEYS if k in extra}
    if not changes:
        return path, extra
    text = path.read_text()
    for key, value in changes.items():
        text, count = re.subn(rf"(?m)^(\s*{key}\s+)\S+", lambda m: m.group(1) + str(value), text)
        if count != 1:
            raise SystemExit(f"{path}: {key}={value} needs exactly one '{key}' line (a grow block), found {count}")
    folder.mkdir(parents=True, exist_ok=True)
    variant = folder / (path.stem + "".join(f"_{k}{v}" for k, v in changes.items()) + ".space")
    variant.write_text(text)
    return variant, extra


def weight_count(task, genotype: Path, sizes: dict) -> int:
    """Trainable weights of the forecaster around ``genotype`` (head included)."""
    from essdsl.lang.check import load_graph

    model = task.build_model(load_graph(genotype, sizes=sizes), search=False, seed=0)
    return sum(p.numel() for p in model.parameters())


def train_and_score(essdsl, task, genotype: Path, options: dict, settings: dict, out: Path, sizes: dict) -> dict:
    """Train a genotype from scratch (``essdsl train``); test metrics of its best epoch
    by validation RMSE (``essdsl eval --split test``)."""
    started = time.perf_counter()
    run = essdsl.train(str(genotype), "forecast", out=str(out), task_options=options, **settings)
    seconds = time.perf_counter() - started
    scores = essdsl.evaluate(run, split="test")
    return {**{k: float(scores[k]) for k in METRICS}, "train_s": seconds, "params": weight_count(task, genotype, sizes)}


def run_study(args) -> dict:
    import torch

    from essdsl import api as essdsl
    from essdsl.tasks.forecast import ForecastTask

    torch.set_num_threads(args.threads)
    spaces = [parse_space(s) for s in args.space]
    sizes = {"ninp": args.ninp, "nhid": args.nhid}
    common = dict(batch_size=args.batch_size, lr=args.lr, clip=args.clip, wd=args.wd, **sizes)
    results: dict = {"settings": vars(args).copy(), "datasets": {}}
    work = Path(args.runs or tempfile.mkdtemp(prefix="forecast-study-"))
    for name in args.datasets:
        options = DATASETS[name]
        if options.get("data") and not Path(options["data"]).exists():
            print(f"skipping {name}: {options['data']} is not here", file=sys.stderr)
            continue
        task = ForecastTask.load(**options)
        print(f"== {task.describe()}", flush=True)
        rows: dict[str, dict] = {}
        for label, row in task.baseline_rows("test").items():
            rows[label] = {"kind": "baseline", "params": row["params"], "seeds": {"-": {k: row[k] for k in METRICS}}}
        for seed in args.seeds:
            train = dict(common, seed=seed, epochs=args.train_epochs, threads=args.threads)
            for label, genotype in BASELINE_GENOTYPES.items():
                score = train_and_score(essdsl, task, genotype, options, train, work / name / f"{label}-s{seed}", sizes)
                rows.setdefault(label, {"kind": "genotype", "seeds": {}})["seeds"][str(seed)] = score
                print(f"{name} seed {seed} {label}: test RMSE {score['rmse']:.4f} ({score['train_s']:.0f}s)", flush=True)
            for label, space, extra in spaces:
                folder = work / name / f"{label}-s{seed}"
                searched_space, search_settings = space_variant(space, extra, folder)
                settings = {**common, "seed": seed, "epochs": args.search_epochs, "threads": args.threads, **search_settings}
                started = time.perf_counter()
                searched = essdsl.search(str(searched_space), "forecast", out=str(folder / "search"), task_options=options,
                                         final_epochs=0, **settings)  # fmt: skip
                search_s = time.perf_counter() - started
                genotype = searched.genotype_path
                score = train_and_score(essdsl, task, genotype, options, train, folder / "train", sizes)
                score.update(search_s=search_s, genotype=genotype.read_text())
                row = rows.setdefault(f"search: {label}", {"kind": "searched", "space": str(space), "settings": extra, "seeds": {}})
                row["seeds"][str(seed)] = score
                print(f"{name} seed {seed} {label}: test RMSE {score['rmse']:.4f} (search {search_s:.0f}s, train {score['train_s']:.0f}s)", flush=True)
        results["datasets"][name] = {"describe": task.describe(), "rows": rows}
    return results


def mean_std(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else 0.0)


def markdown(results: dict) -> str:
    """The README table: one block per data set, rows sorted by mean test RMSE."""
    lines = []
    for name, data in results["datasets"].items():
        lines += [f"**{name}** — {data['describe']}", ""]
        lines.append("| model | test RMSE | MAE | RSE | CORR | params | search s | train s |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        table = []
        for label, row in data["rows"].items():
            seeds = list(row["seeds"].values())
            stats = {k: mean_std([s[k] for s in seeds]) for k in METRICS}
            params = [s["params"] for s in seeds if "params" in s] or [row.get("params", 0)]
            timing = {k: mean_std([s[k] for s in seeds]) if all(k in s for s in seeds) else None for k in ("search_s", "train_s")}

            def show(k, digits=3):
                m, sd = stats[k]
                return f"{m:.{digits}f}" if row["kind"] == "baseline" else f"{m:.{digits}f} ± {sd:.{digits}f}"

            param_text = f"{min(params):,}" if min(params) == max(params) else f"{min(params):,}–{max(params):,}"
            times = [f"{timing[k][0]:.1f}" if timing[k] else "–" for k in ("search_s", "train_s")]
            table.append((stats["rmse"][0], f"| {label} | {show('rmse')} | {show('mae')} | {show('rse')} | {show('corr')} | {param_text} | {times[0]} | {times[1]} |"))
        lines += [text for _, text in sorted(table, key=lambda t: (math.isnan(t[0]), t[0]))]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--train-epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--clip", type=float, default=0.25)
    parser.add_argument("--wd", type=float, default=1e-6)
    parser.add_argument("--ninp", type=int, default=16)
    parser.add_argument("--nhid", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--space", action="append", default=None, help="LABEL=PATH[:KEY=VALUE,...] (repeatable)")
    parser.add_argument("--runs", help="folder for the run folders (default: a temporary one)")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.space is None:  # the growing rows end at the fixed space's 4 nodes after the same 3 epochs
        grow = ROOT / "spaces" / "two_input_rnn_grow.space"
        args.space = [f"fixed={ROOT / 'spaces' / 'two_input_rnn.space'}", f"grow-then-prune={grow}:every=1,max=4",
                      f"grow-interleaved={grow}:every=1,max=4,mode=interleaved"]  # fmt: skip
    started = time.perf_counter()
    results = run_study(args)
    results["wall_s"] = time.perf_counter() - started
    text = markdown(results)
    print(text)
    print(f"total wall time {results['wall_s']:.0f}s")
    if args.out:
        from essdsl.files import atomic_write_text

        atomic_write_text(args.out, json.dumps(results, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
