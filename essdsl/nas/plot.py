"""PNG plots of a run: perplexities over epochs and every architecture weight (θ, φ) over time."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Optional

from essdsl.files import atomic_write_bytes
from essdsl.nas.runconfig import RunError
from essdsl.nas.runs import read_manifest, read_metrics


def plot_run(run_dir: Path, out: Optional[Path] = None) -> list[Path]:
    """Write the plots of ``run_dir`` into ``out`` (default RUN_DIR/plots); the paths written."""
    run_dir = Path(run_dir)
    run = read_manifest(run_dir)
    metrics = read_metrics(run_dir)
    if not metrics:
        raise RunError(f"{run_dir} has no finished epoch yet (metrics.jsonl is empty or missing)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(out) if out is not None else run_dir / "plots"  # created by the first write (a clear error if it is a file)

    def save(fig, name):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(folder / name, buffer.getvalue())
        return folder / name

    epochs = [m["epoch"] for m in metrics]
    if "valid_ppl" not in metrics[-1]:  # another task than language modelling
        figure = save(_task_figure(plt, run, metrics, epochs, run_dir.name), f"{run.get('task', 'task')}.png")
        return [figure, *_arch_figures(plt, run, metrics, epochs, save)]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [m["train_ppl"] for m in metrics], marker="o", label="train ppl")
    ax.plot(epochs, [m["valid_ppl"] for m in metrics], marker="o", label="valid ppl")
    floor = (run.get("corpus") or {}).get("floor_ppl")
    if floor:
        ax.axhline(floor, color="grey", linestyle="--", label=f"floor {floor:.2f}")
    from essdsl.nas.growing import growth_marks

    for x, label in growth_marks(metrics):  # a growing search: where the backbone grew
        ax.axvline(x, color="tab:green", linestyle=":", linewidth=1)
        ax.annotate(label, (x, 1), xycoords=("data", "axes fraction"), fontsize=7, color="tab:green", ha="right", va="top", rotation=90)
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(f"{run['space']['name']} ({run_dir.name})")
    return [save(fig, "perplexity.png"), *_arch_figures(plt, run, metrics, epochs, save)]


def _task_figure(plt, run: dict, metrics: list[dict], epochs: list, name: str):
    """Training and validation loss, and the task's first metric (``reference`` in the
    manifest) per epoch next to its baseline."""
    reference = run.get("reference") or {}
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [m["train_loss"] for m in metrics], marker="o", label="train loss")
    loss_ax.plot(epochs, [m["valid_loss"] for m in metrics], marker="o", label="valid loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    key = f"valid_{reference.get('metric', 'loss')}"
    label = reference.get("label", "loss")
    metric_ax.plot(epochs, [m.get(key, math.nan) for m in metrics], marker="o", label=f"valid {label}")
    if "value" in reference:
        metric_ax.axhline(reference["value"], color="grey", linestyle="--", label=f"{reference['baseline']} {reference['value']:.2f}")
    metric_ax.set_xlabel("epoch")
    metric_ax.set_ylabel(label)
    metric_ax.legend()
    fig.suptitle(f"{run['space']['name']} on {run.get('task')} ({name})")
    return fig


def _arch_figures(plt, run: dict, metrics: list[dict], epochs: list, save) -> list:
    """One figure per architecture tensor of a search (its softmax weights over epochs)."""
    written = []
    manifest = run.get("model_manifest", {}).get("arch", {})
    for name in list(metrics[-1].get("arch", {})):
        entry = manifest.get(name, {})
        series = [m.get("arch", {}).get(name) for m in metrics]
        fig, ax = plt.subplots(figsize=(7, 4))
        if entry.get("kind") == "combine" or (series[-1] and not isinstance(series[-1][0], list)):
            labels = entry.get("choices") or [str(i) for i in range(len(series[-1]))]
            for i, label in enumerate(labels):
                ax.plot(epochs, [s[i] if s else math.nan for s in series], marker=".", label=label)
        else:
            edges = entry.get("edges") or [str(i) for i in range(len(series[-1]))]
            ops = entry.get("ops") or [str(k) for k in range(len(series[-1][0]))]
            mask = entry.get("mask") or [[True] * len(ops) for _ in edges]
            for e, edge in enumerate(edges):
                for k, op in enumerate(ops):
                    if mask[e][k]:
                        ax.plot(epochs, [s[e][k] if s else math.nan for s in series], marker=".", label=f"{op}({edge})")
        ax.set_xlabel("epoch")
        ax.set_ylabel("softmax weight")
        ax.set_title(name)
        ax.legend(fontsize=6, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        written.append(save(fig, f"{name.replace('.', '_')}.png"))
    return written
