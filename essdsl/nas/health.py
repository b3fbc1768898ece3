"""Search health: did the architecture weights learn anything, and did the supernet
learn the task at all?

A DARTS-style search always ends with a genotype: the argmax of whatever the
architecture weights are, even when they never left their start (``--arch-lr
0``), when they are still a near-tie after a short run, or when the supernet is
worse than the unigram model.  These measures, taken after every epoch from the
manifest and the architecture tensors, say which of those happened so the run
can warn instead of reporting a success:

* ``entropy_ratio``: mean entropy of the architecture softmaxes over the mean
  entropy of uniform ones (1.0 = nothing preferred);
* ``kept_over_uniform``: mean θ (φ) of the kept choices over the uniform value
  of its softmax (1.0 = kept at chance level);
* ``margin``: mean over the decisions (which edges a node keeps, which op an
  edge keeps, which combiner) of the chosen weight minus the best rejected one,
  over the uniform value: how far from a tie the genotype was derived;
* ``change``: the largest change of any θ (φ) since the start of the run, over
  the uniform value of its softmax;
* ``parameter_free``: mixed nodes whose kept ops are all parameter-free (the
  ``collapse-risk`` ops of ``essdsl check``, e.g. ``identity``); half or more of
  the nodes with an op choice (at least two) is reported as a collapse;
* ``beats_unigram``: the supernet's valid perplexity against the unigram model
  of the corpus (the trivial baseline).
"""

from __future__ import annotations

import math
from typing import Optional

from essdsl.ops import is_parameter_free
from essdsl.nas.derive import ZERO, combine_probabilities, derive_choices, entropy, op_probabilities

# Below these a search is reported as not having learned its architecture.
MIN_CHANGE = 0.05  # largest θ change since the start, in units of the uniform θ
NEAR_UNIFORM_ENTROPY = 0.99  # entropy ratio above which the weights count as uniform ...
NEAR_UNIFORM_KEPT = 1.1  # ... when the kept choices are also within 10% of chance


def _distributions(entry: dict, probs) -> list[list[float]]:
    """The softmaxes of one ops tensor (masked slots left out), as the entry's ``select`` forms them."""
    mask = entry.get("mask") or [[True] * len(row) for row in probs]
    rows = [[p for p, ok in zip(row, m) if ok] for row, m in zip(probs, mask)]
    if entry.get("select") == "node_softmax":
        return [[p for row in rows for p in row]]
    return [row for row in rows if row]


def _probabilities(manifest: dict, arch: dict) -> dict:
    """name -> θ rows (ops) or φ (combine) of every architecture tensor."""
    out = {}
    for name, entry in manifest.get("arch", {}).items():
        out[name] = op_probabilities(entry, arch[name]) if entry["kind"] == "ops" else combine_probabilities(arch[name])
    return out


def _ops_decisions(entry: dict, theta) -> tuple[list[float], list[float]]:
    """(kept θ / uniform per kept edge, margin / uniform per decision) of one ops tensor."""
    mask = entry.get("mask") or [[True] * len(entry["ops"]) for _ in entry["edges"]]
    keep = int(entry.get("keep", 1))
    node_softmax = entry.get("select") == "node_softmax"
    total = sum(sum(m) for m in mask)
    strengths, op_margins = [], []
    for row, m in zip(theta, mask):
        uniform = 1.0 / (total if node_softmax else max(sum(m), 1))
        ranked = sorted((p for p, ok, op in zip(row, m, entry["ops"]) if ok and op != ZERO), reverse=True)
        if not ranked:
            continue
        strengths.append((ranked[0], uniform))
        if len(ranked) > 1:
            op_margins.append((ranked[0] - ranked[1]) / uniform)
    order = sorted(range(len(strengths)), key=lambda i: -strengths[i][0])
    kept, rejected = order[:keep], order[keep:]
    kept_ratios = [strengths[i][0] / strengths[i][1] for i in kept]
    margins = list(op_margins)
    if rejected and kept:
        weakest = min(kept, key=lambda i: strengths[i][0])
        margins.append((strengths[weakest][0] - strengths[rejected[0]][0]) / strengths[weakest][1])
    return kept_ratios, margins


def arch_health(manifest: dict, arch: dict, arch_start: Optional[dict] = None) -> dict:
    """The architecture measures above for ``arch`` (name -> tensor or nested list);
    ``change`` is measured against ``arch_start`` (the weights the run started from)."""
    entries = manifest.get("arch", {})
    now = _probabilities(manifest, arch)
    start = _probabilities(manifest, arch_start) if arch_start is not None else None
    entropies, uniform_entropies, kept, margins, change = [], [], [], [], 0.0
    for name, entry in entries.items():
        if entry["kind"] == "ops":
            dists = _distributions(entry, now[name])
            ratios, node_margins = _ops_decisions(entry, now[name])
            kept.extend(ratios)
            margins.extend(node_margins)
            before = _distributions(entry, start[name]) if start is not None else None
        else:
            dists = [now[name]]
            ranked = sorted(now[name], reverse=True)
            uniform = 1.0 / len(ranked)
            kept.append(ranked[0] / uniform)
            if len(ranked) > 1:
                margins.append((ranked[0] - ranked[1]) / uniform)
            before = [start[name]] if start is not None else None
        for i, dist in enumerate(dists):
            if len(dist) < 2:
                continue
            entropies.append(entropy(dist))
            uniform_entropies.append(math.log(len(dist)))
            if before is not None:
                change = max(change, max(abs(a - b) for a, b in zip(dist, before[i])) * len(dist))
    op_nodes, parameter_free = 0, []
    for node, choice in derive_choices(manifest, arch).items():
        if choice.edges is None:
            continue
        offered = {op for entry in entries.values() if entry.get("node") == node and entry["kind"] == "ops" for op in entry["ops"]}
        if len(offered - {ZERO}) < 2:
            continue  # no op choice: the node could not have collapsed
        op_nodes += 1
        if all(is_parameter_free(edge.op) for edge in choice.edges):
            parameter_free.append(node)
    return {
        "entropy_ratio": round(sum(entropies) / sum(uniform_entropies), 4) if uniform_entropies else None,
        "kept_over_uniform": round(sum(kept) / len(kept), 4) if kept else None,
        "margin": round(sum(margins) / len(margins), 4) if margins else None,
        "change": round(change, 4) if start is not None else None,
        "parameter_free": parameter_free,
        "op_nodes": op_nodes,
    }


def search_health(manifest: dict, arch: dict, arch_start: Optional[dict], valid_ppl: float, unigram_ppl: Optional[float],
                  higher_is_better: bool = False) -> dict:  # fmt: skip
    """:func:`arch_health` plus the comparison with the unigram model and the list of
    warning codes (``no-learning``, ``near-uniform``, ``collapse``, ``below-unigram``).
    Another task passes its first metric and baseline instead of the perplexities, and
    ``higher_is_better`` when that metric grows with quality (a tagger's F1)."""
    health = arch_health(manifest, arch, arch_start)
    warnings = []
    if health["change"] is not None and health["change"] < MIN_CHANGE:
        warnings.append("no-learning")
    elif (health["entropy_ratio"] or 0.0) > NEAR_UNIFORM_ENTROPY and (health["kept_over_uniform"] or 0.0) < NEAR_UNIFORM_KEPT:
        warnings.append("near-uniform")
    collapsed = len(health["parameter_free"]) >= 2 and 2 * len(health["parameter_free"]) >= health["op_nodes"]
    if collapsed and "no-learning" not in warnings:  # unmoved weights chose nothing, not even identity
        warnings.append("collapse")
    if unigram_ppl is not None:
        health["unigram_ppl"] = round(float(unigram_ppl), 4)
        beats = valid_ppl > unigram_ppl if higher_is_better else valid_ppl < unigram_ppl
        health["beats_unigram"] = bool(math.isfinite(valid_ppl) and beats)
        if not health["beats_unigram"]:
            warnings.append("below-unigram")
    health["warnings"] = warnings
    return health


def format_ppl(ppl: float, loss: Optional[float] = None) -> str:
    """A perplexity for people: ``12.34``, or, where it overflows a float (a diverged
    model), ``too large to show`` with the loss it comes from."""
    if math.isfinite(ppl):
        return f"{ppl:.2f}"
    return "too large to show" + (f" (loss {loss:.2f} nats/token)" if loss is not None and math.isfinite(loss) else "")


def health_messages(health: dict, valid_ppl: float) -> list[str]:
    """One sentence per warning of :func:`search_health`, each with what to try."""
    messages = []
    for code in health.get("warnings", []):
        if code == "no-learning":
            messages.append(
                f"the architecture weights did not learn: the largest change of any weight since the start is "
                f"{health['change']:.3f} of its uniform value, so the genotype is the argmax of the initial weights. "
                "Check --arch-lr (0 or too small; default 3e-3) and run longer (--epochs, --max-steps)."
            )
        elif code == "near-uniform":
            messages.append(
                f"the architecture weights are still near uniform (entropy {100 * health['entropy_ratio']:.1f}% of uniform; "
                f"kept weights {health['kept_over_uniform']:.3f}x uniform, mean margin over the next choice "
                f"{health['margin'] or 0.0:.3f}x uniform): the genotype was picked from near-ties. "
                "Run more epochs or raise --arch-lr."
            )
        elif code == "collapse":
            nodes = ", ".join(health["parameter_free"])
            messages.append(
                f"{len(health['parameter_free'])} of {health['op_nodes']} mixed nodes kept only parameter-free ops ({nodes}): "
                "the known DARTS collapse (see the collapse-risk warning of 'essdsl check'). "
                "Offer a 'zero' op next to them, drop 'identity' from the op set, or stop the search earlier."
            )
        elif code == "below-unigram":
            messages.append(
                f"the supernet does NOT beat the unigram model (valid ppl {format_ppl(valid_ppl)} vs unigram "
                f"{health['unigram_ppl']:.2f}): its architecture weights were learned from a model that has not learned the task. "
                "Run more epochs or steps, or lower --lr if the training loss is unstable."
            )
    return messages


def health_summary(health: dict) -> str:
    """A one-line account of the measures (for the end of a run)."""
    parts = []
    if health.get("change") is not None:
        parts.append(f"largest weight change {health['change']:.3f}x uniform")
    if health.get("entropy_ratio") is not None:
        parts.append(f"entropy {100 * health['entropy_ratio']:.1f}% of uniform")
    if health.get("kept_over_uniform") is not None:
        parts.append(f"kept weights {health['kept_over_uniform']:.2f}x uniform")
    if health.get("margin") is not None:
        parts.append(f"margin over the next choice {health['margin']:.2f}x uniform")
    if health.get("op_nodes"):
        parts.append(f"{len(health['parameter_free'])}/{health['op_nodes']} nodes parameter-free")
    return "; ".join(parts)


__all__ = ["arch_health", "format_ppl", "health_messages", "health_summary", "search_health"]
