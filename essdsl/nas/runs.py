"""Run folders: the space a run reads, its manifest, its genotype and its metrics.

A run folder (``runs/<space>-<timestamp>``) holds ``manifest.json`` (what the run is:
kind, task, space text and sha256, sizes, config, data fingerprint, versions, options),
the checkpoint (``checkpoint.pt`` of a search, ``model.pt`` of a training run, see
:mod:`essdsl.nas.checkpoint`), ``metrics.jsonl`` (one record per epoch) and, for a
search, ``genotype.space`` (with its provenance) and ``final/`` (the genotype trained
from scratch).  Every function raises :class:`~essdsl.nas.runconfig.RunError` (or
:class:`SettingError`) with a message for the user; none prints.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Optional

from essdsl.files import atomic_write_text, remove_stale_temp_files
from essdsl.nas.runconfig import RunConfig, RunError, SettingError

RUN_MANIFEST = "manifest.json"
SEARCH_CHECKPOINT = "checkpoint.pt"
TRAIN_CHECKPOINT = "model.pt"
GENOTYPE = "genotype.space"
FINAL = "final"


def _runfiles():
    """The run-file schemas (imported on first use: pydantic costs 0.2 s at start-up)."""
    from essdsl.nas import runfiles

    return runfiles


# ----------------------------------------------------------------- the space a run reads
def read_space_source(path: Path) -> tuple[str, str]:
    """(text, sha256) of a .space file."""
    try:
        text = _runfiles().read_text(Path(path), ".space file")
    except _runfiles().RunFileError as exc:
        raise RunError(str(exc)) from None
    return text, hashlib.sha256(text.encode("utf-8")).hexdigest()  # the file's bytes: UTF-8 decodes one way


def resolve_space(target) -> dict:
    """A .space file, or a compiled artifact ``build/<name>.pt`` (+ its manifest) -> space facts:
    ``{"path", "text", "sha256", "sizes" (from the artifact, may be {}), "artifact"}``."""
    p = Path(target)
    if p.suffix == ".pt":
        try:  # the manifest's schema, and the artifact's bytes against its checksum
            manifest, manifest_path = _runfiles().read_artifact_manifest(p)
        except _runfiles().RunFileError as exc:
            raise RunError(str(exc)) from None
        space_path, want = Path(manifest["space"]["path"]), manifest["space"]["sha256"]
        if not space_path.is_absolute() and not space_path.exists():
            space_path = (manifest_path.parent / space_path).resolve() if (manifest_path.parent / space_path).exists() else space_path
        text, sha = read_space_source(space_path)
        if sha != want:
            raise RunError(
                f"{space_path} changed since {p} was compiled (sha256 {sha[:12]}… != {want[:12]}…); "
                f"recompile with 'essdsl compile {space_path}' or search the .space file directly"
            )
        sizes = {k: int(v) for k, v in (manifest.get("sizes") or {}).items() if k in ("ninp", "nhid")}
        return {"path": str(space_path), "text": text, "sha256": sha, "sizes": sizes, "artifact": str(p)}
    text, sha = read_space_source(p)
    return {"path": str(p), "text": text, "sha256": sha, "sizes": {}, "artifact": None}


# ----------------------------------------------------------------- the manifest
def versions() -> dict:
    import platform

    import torch

    from essdsl import __version__

    return {"essdsl": __version__, "torch": torch.__version__, "python": platform.python_version()}


def read_manifest(run_dir: Path) -> dict:
    """The run manifest of ``run_dir``, checked."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise RunError(f"run folder {run_dir} does not exist")
    if not (run_dir / RUN_MANIFEST).exists():
        raise RunError(f"{run_dir} is not an essdsl run folder ({RUN_MANIFEST} is missing)")
    try:
        return _runfiles().read_run_manifest(run_dir)
    except _runfiles().RunFileError as exc:
        raise RunError(str(exc)) from None


def resumed_manifest(run_dir: Path, kind: str, noun: str) -> dict:
    """The manifest of the run to continue, which must be a ``kind`` run."""
    from essdsl.nas import distributed

    run = read_manifest(run_dir)
    if distributed.current().is_main:  # the other ranks of a torchrun launch write (and remove) nothing
        remove_stale_temp_files(run_dir)  # left by a kill during an atomic write
    if run.get("kind") != kind:
        raise RunError(f"{run_dir} is a '{run.get('kind')}' run, not {noun}")
    distributed.check_same_launch(distributed.current(), run)
    return run


def recorded_task(run: dict, asked: Optional[str], doing: str = "resume") -> str:
    """The task of a run (runs from before tasks were plug-ins are language-model runs);
    asking to ``doing`` it with another one is refused."""
    from essdsl import tasks

    if asked is not None:
        tasks.get(asked)  # an unknown name says which are known
    recorded = run.get("task", "lm")
    if asked is not None and asked != recorded:
        raise SettingError("task", "refusing to {doing}: {setting} {asked} is not the task this run used ({recorded})",
                           doing=doing, asked=asked, recorded=recorded)  # fmt: skip
    return recorded


def recorded_settings(run: dict) -> dict:
    """Setting name -> the value a resumed run continues with (its manifest's)."""
    from essdsl.tasks.corpus import SYNTHETIC_DEFAULTS

    cfg = RunConfig.from_dict(run["config"])
    values = {k: getattr(cfg, k) for k in ("seed", "epochs", "max_steps", "batch_size", "eval_batch_size", "bptt", "lr", "wd", "clip")}
    if cfg.search:
        values.update(arch_lr=cfg.arch_lr, arch_wd=cfg.arch_wd, order=cfg.order, **run["dropouts"])
    else:
        values["asgd"] = cfg.asgd
    if run.get("data") is None:
        tokens = run.get("synthetic_tokens")
        values["synthetic_tokens"] = SYNTHETIC_DEFAULTS["train"] if tokens is None else tokens
    return values


def refuse_changed_settings(given: dict, recorded: dict) -> None:
    """A resumed run continues as it was started: a setting given with another value
    than the run's would change its result, so it is refused, not ignored."""
    for name, value in given.items():
        if name in recorded and value is not None and value != recorded[name]:
            raise SettingError(
                name,
                "refusing to resume: {setting} {value} differs from the run's {recorded} and would change its result; "
                "drop {setting} to continue the run as it was started, or start a new run",
                value=value, recorded=recorded[name],
            )  # fmt: skip


def check_same_space(run: dict, space: dict, sizes: dict, what: str) -> None:
    if run["space"]["sha256"] != space["sha256"]:
        raise RunError(
            f"refusing to resume: {space['path']} is not the space this run was started with "
            f"(content sha256 {space['sha256'][:12]}… != {run['space']['sha256'][:12]}… recorded in the run's manifest). "
            f"Start a new run instead of --resume, or restore the original {what}."
        )
    if run["sizes"] != sizes:
        raise RunError(f"refusing to resume: sizes {sizes} differ from the run's {run['sizes']}")


def new_run_dir(out: Optional[Path], name: str, checkpoint_name: str) -> Path:
    run_dir = Path(out) if out is not None else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if (run_dir / checkpoint_name).exists():
        raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    return run_dir


def write_manifest(run_dir: Path, run: dict) -> None:
    if not _writes():
        return
    atomic_write_text(Path(run_dir) / RUN_MANIFEST, json.dumps(run, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------- genotype and metrics
def write_genotype(run_dir: Path, run: dict, arch: dict, record: Optional[dict], out: Optional[Path] = None,
                   growth: Optional[dict] = None) -> tuple[Path, str]:  # fmt: skip
    """Derive the genotype from architecture weights ``arch`` with its provenance
    (source, run, epoch, seed, retained weights, health, valid ppl) and write it.
    ``growth``: the growth state of a growing search (derived from the space grown as
    far as the run grew it, :func:`essdsl.nas.growing.derivation`)."""
    from essdsl.errors import SpaceError
    from essdsl.lang.parse import parse_space
    from essdsl.nas.derive import DeriveError, derive_choices, genotype_text, retained_weights

    try:
        if growth is not None:
            from essdsl.nas.growing import derivation

            space, manifest = derivation(run["space"]["text"], run["space"]["path"], run["sizes"], growth)
        else:
            space, manifest = parse_space(run["space"]["text"], run["space"]["path"]), run["model_manifest"]
        choices = derive_choices(manifest, arch)
        provenance = {
            "source": run["space"]["path"],
            "sha256": run["space"]["sha256"],
            "run": run["run_id"],
            "epoch": int(record["epoch"]) if record else 0,
            "seed": int(run["seed"]),
            "weights": retained_weights(choices),
            **health_provenance(record),
        }
        if record and math.isfinite(record.get("valid_ppl", math.nan)):
            provenance["valid_ppl"] = round(float(record["valid_ppl"]), 3)
        text = genotype_text(space, choices, provenance, sizes=run["sizes"])  # checked at the run's sizes
    except SpaceError:
        raise  # the genotype's check: its diagnostics are shown as such
    except DeriveError as exc:
        raise RunError(f"cannot derive a genotype: {exc}") from None
    path = Path(out) if out is not None else Path(run_dir) / GENOTYPE
    if _writes():
        atomic_write_text(path, text, inputs=[run["space"]["path"]])  # never over the searched space
    return path, text


def health_provenance(record: Optional[dict]) -> dict:
    """The genotype's record of how healthy the search that derived it was: ``health``
    ("ok" or the warning codes of essdsl.nas.health) and the measures behind it."""
    health = (record or {}).get("health")
    if not health:
        return {}
    out = {"health": health["warnings"] or "ok"}
    for key in ("change", "entropy_ratio", "kept_over_uniform", "margin"):
        if health.get(key) is not None:
            out[f"arch_{key}"] = health[key]
    return out


def read_metrics(run_dir: Path) -> list[dict]:
    """The run's per-epoch records (empty before its first epoch ends)."""
    try:
        return _runfiles().read_metrics(Path(run_dir) / "metrics.jsonl")
    except _runfiles().RunFileError as exc:
        raise RunError(str(exc)) from None


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """``metrics.jsonl``: one JSON line per epoch, rewritten atomically."""
    if not _writes():
        return
    text = "".join(_runfiles().metrics_line(r) for r in history)
    atomic_write_text(Path(run_dir) / "metrics.jsonl", text)


def _writes() -> bool:
    """Whether this process writes run files: always, except on ranks other than 0 of a
    torchrun launch (rank 0 writes the run folder for all)."""
    from essdsl.nas import distributed

    return distributed.current().is_main


def checkpoint_of(path: Path) -> Path:
    """The checkpoint a path names: itself, or a run folder's model.pt (else checkpoint.pt)."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = [c for c in (path / TRAIN_CHECKPOINT, path / SEARCH_CHECKPOINT) if c.exists()]
    if not found:
        raise RunError(f"{path} holds no {TRAIN_CHECKPOINT} or {SEARCH_CHECKPOINT}")
    return found[0]


# ----------------------------------------------------------------- compare
def compare_row(run_dir: Path, run: dict) -> dict:
    """One run for compare: which perplexity is which, parameters, time."""
    metrics = read_metrics(run_dir)
    last = metrics[-1] if metrics else {}
    search = run.get("kind") == "search"
    genotype_path = Path(run_dir) / GENOTYPE if search else Path(run["space"]["path"])
    scratch = (read_metrics(Path(run_dir) / FINAL) or [{}])[-1] if search else last
    return {
        "run": str(run_dir),
        "space": run["space"]["name"],
        "kind": run.get("kind", "?"),
        "supernet_valid_ppl": last.get("valid_ppl") if search else None,
        "from_scratch_valid_ppl": scratch.get("valid_ppl"),
        "from_scratch_epochs": scratch.get("epoch"),
        "params": param_count(run, genotype_path),
        "time_s": last.get("elapsed_s"),
        "genotype": str(genotype_path),
    }


def genotype_diffs(genotypes: list) -> tuple[list[dict], list[str]]:
    """Semantic diffs of every genotype against the first one, and notes on missing ones
    (a SpaceError for a genotype that does not load)."""
    if len(genotypes) < 2:
        return [], []
    from essdsl.lang.check import load_graph
    from essdsl.lang.diff import diff_graphs, render_edits

    base_name, base_path, base_sizes = genotypes[0]
    if not base_path.exists():
        return [], [f"{base_name}: no genotype yet (run 'essdsl derive {base_name}')"]
    diffs, notes = [], []
    base_graph = load_graph(base_path, base_sizes)
    for name, path, sizes in genotypes[1:]:
        if not path.exists():
            notes.append(f"{name}: no genotype yet")
            continue
        edits = render_edits(diff_graphs(base_graph, load_graph(path, sizes)))
        diffs.append({"from": base_name, "to": name, "edits": edits.splitlines() if edits else []})
    return diffs, notes


def param_count(run: dict, genotype_path: Path) -> Optional[int]:
    """Weights of the derived (discrete) model at the run's sizes and vocabulary."""
    from essdsl.errors import SpaceError
    from essdsl.lang.check import load_graph
    from essdsl.tasks.base import is_arch_parameter

    vocab = (run.get("corpus") or {}).get("vocab")
    if not genotype_path.exists() or vocab is None:  # no vocabulary: another task's model, built from its data
        return None
    try:
        graph = load_graph(genotype_path, run["sizes"])
        from essdsl.compile import ModelConfig, build_model

        model = build_model(graph, ModelConfig(vocab=vocab, search=False), impl="generated")
    except (SpaceError, ImportError):
        return None
    return sum(p.numel() for n, p in model.named_parameters() if not is_arch_parameter(n))
