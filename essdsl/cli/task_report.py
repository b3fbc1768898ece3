"""What a run prints for a task that is not language modelling: lines built from the
task's own metrics (names, labels, directions) and baseline, instead of the LM's
perplexities and corpus reference points (which stay in :mod:`essdsl.cli.run`)."""

from __future__ import annotations

import math
from typing import Optional


def is_language_model(task) -> bool:
    """The LM's printing needs its corpus (unigram, floor, vocabulary)."""
    return hasattr(task, "corpus")


def _value(value) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) and math.isfinite(value) else str(value)


def metrics_text(values: dict, task, prefix: str = "") -> str:
    """``RMSE 0.5123  MAE 0.4011 ...`` of the task's metrics found in ``values``."""
    parts = [f"{m.label or m.name} {_value(values[prefix + m.name])}" for m in task.metrics if prefix + m.name in values]
    return "  ".join(parts)


def epoch_line(record: dict, task, span: str) -> str:
    line = f"{span}: train loss {_value(record['train_loss'])}  valid loss {_value(record['valid_loss'])}  {metrics_text(record, task, 'valid_')}"
    baseline = task.baseline("valid")
    if baseline is not None:
        first = task.metrics[0]
        line += f"  ({baseline[0]} {first.label or first.name} {_value(baseline[1])})"
    line += f"  {record['elapsed_s']:.0f}s"
    if "arch_entropy" in record:
        line += f"  arch entropy {record['arch_entropy']:.3f}"
    warnings = (record.get("health") or {}).get("warnings")
    if warnings:
        line += f"  health: {', '.join(warnings)}"
    return line


def finish_message(task, record: Optional[dict], out, what: str = "model") -> None:
    """Whether the last epoch beats the task's baseline on its first metric."""
    if record is None:
        return
    first, baseline = task.metrics[0], task.baseline("valid")
    value = record.get(f"valid_{first.name}", math.nan)
    label = first.label or first.name
    if baseline is None:
        out.print(f"the {what}: valid {label} {_value(value)}", markup=False, highlight=False)
        return
    verdict = "beats" if math.isfinite(value) and first.better(value, baseline[1]) else "does NOT beat"
    out.print(f"the {what} {verdict} the {baseline[0]} baseline (valid {label} {_value(value)} vs {_value(baseline[1])})", markup=False, highlight=False)


def report_health(record: Optional[dict], task, out) -> None:
    """The search-health summary; warnings by code (the LM's sentences speak of perplexity)."""
    from essdsl.nas.health import health_messages, health_summary

    health = (record or {}).get("health")
    if not health:
        return
    out.print(f"search health: {health_summary(health)}", markup=False, highlight=False)
    below = "below-unigram" in health["warnings"]
    others = dict(health, warnings=[w for w in health["warnings"] if w != "below-unigram"])
    for message in health_messages(others, math.nan):
        out.print(f"essdsl: warning: {message}", markup=False, highlight=False)
    if below:
        baseline = task.baseline("valid")
        out.print(f"essdsl: warning: the supernet does NOT beat the {baseline[0] if baseline else 'baseline'} baseline: its architecture "
                  "weights were learned from a model that has not learned the task. Run more epochs, or lower --lr.", markup=False, highlight=False)  # fmt: skip


def comparison(run, task, out, label: str) -> None:
    """The trained model of ``run`` next to the task's baselines on the test split, when
    the task makes such a table."""
    from essdsl import api

    table = api.baseline_comparison(run, task, label)
    if table is not None:
        out.print(table, markup=False, highlight=False)


def eval_line(result: dict, split: str) -> str:
    """``test rmse 0.5123  mae 0.4011 ...  (loss 0.0312, 400 samples)`` of ``essdsl eval``,
    then the task's baseline on the same split and, where the task reports metrics per
    type (``f1/NP``), one more line of them."""
    skip = ("loss", "split", "size", "data", "baseline")
    numbers = {k: v for k, v in result.items() if k not in skip and isinstance(v, (int, float))}
    metrics = "  ".join(f"{k} {_value(v)}" for k, v in numbers.items() if "/" not in k)
    size = f", {result['size']:,} {result.get('size_unit', 'samples')}" if result.get("size") is not None else ""
    line = f"{split} {metrics}  (loss {_value(result['loss'])}{size})"
    baseline = result.get("baseline")
    if baseline:
        line += "  baseline: " + baseline["name"] + "".join(f" {k} {_value(v)}" for k, v in baseline.items() if k != "name")
    per_type = {k: v for k, v in numbers.items() if "/" in k}
    if per_type:
        line += "\nper type: " + "  ".join(f"{k} {_value(v)}" for k, v in per_type.items())
    return line
