"""Search, train and evaluate taggers with essdsl's trainer, from Python.

The trainer (:mod:`essdsl.nas.trainer`) runs any :class:`~essdsl.tasks.base.Task`;
this module wires the tagging task to it the way the command line wires the
language model: the graph at the run's sizes, the task's model, the run folder
(``checkpoint.pt`` of a search, ``model.pt`` of a training run, ``metrics.jsonl``,
``plots/tagging.png``),
``--resume`` from the checkpoint, the best epoch by validation F1, and for a search
the genotype derived from the one architecture both directions share.

Until the command line drives every task (issue 13's thin CLI), this is how
``essdsl train GENOTYPE --task chunking`` is spelled::

    from essdsl.tasks.tagging import TaggingTask, settings_for
    from essdsl.tasks.tagging_run import evaluate_tagger, tagging_config, train_tagger
    task = TaggingTask(settings_for("chunking", data="../shared/data/conll2000"))
    train_tagger("genotypes/lstm.space", task, "runs/chunk-lstm", {"ninp": 64, "nhid": 64},
                 tagging_config(search=False))
    evaluate_tagger("runs/chunk-lstm/model.pt", "test")
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from essdsl.nas.runconfig import RunConfig, RunError

SEARCH_CHECKPOINT, TRAIN_CHECKPOINT = "checkpoint.pt", "model.pt"

# The trainer's plain SGD for a tagger (mean loss per token, gradient norm clipped at
# 5).  Measured with genotypes/lstm.space at nhid 64, the first 4,000 CoNLL-2000
# training sentences, 3 epochs: test F1 80.5 at lr 1, 89.2 at lr 5, 89.9 at lr 10.
TAGGING_DEFAULTS = dict(epochs=10, batch_size=32, eval_batch_size=128, lr=10.0, wd=0.0, clip=5.0)


def tagging_config(search: bool, **overrides) -> RunConfig:
    """The trainer's settings for a tagging run: :data:`TAGGING_DEFAULTS` and ``overrides``."""
    values = {**TAGGING_DEFAULTS, **{k: v for k, v in overrides.items() if v is not None}}
    return RunConfig(search=search, **values)


def _cell_manifest(graph, search: bool, text: str) -> dict:
    from essdsl.compile import ModelConfig, build_manifest

    config = ModelConfig(vocab=1, search=search)
    return build_manifest(graph, config, source_text=text, target="cell")


def _arch_by_key(model) -> dict:
    """The shared architecture tensors under the manifest's names (``arch.<node>_ops``)."""
    from essdsl.tasks.base import arch_key, is_arch_parameter

    return {arch_key(n): p for n, p in model.named_parameters() if is_arch_parameter(n)}


def _trainer(kind: str, path, task, run_dir, sizes: dict, cfg: RunConfig, resume: bool,
             on_epoch: Optional[Callable[[dict], None]] = None):  # fmt: skip
    from essdsl.lang.check import load_graph_text
    from essdsl.nas.trainer import Trainer

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"{path}: cannot read the space: {getattr(exc, 'strerror', None) or exc}") from None
    graph = load_graph_text(text, str(path), sizes)
    model = task.build_model(graph, search=cfg.search, seed=cfg.seed)
    manifest = _cell_manifest(graph, cfg.search, text)
    describe = None
    if cfg.search:
        from essdsl.nas.derive import arch_summary

        describe = lambda m: arch_summary(manifest, _arch_by_key(m))  # noqa: E731
    run_dir = Path(run_dir)
    checkpoint = SEARCH_CHECKPOINT if cfg.search else TRAIN_CHECKPOINT
    if not resume and (run_dir / checkpoint).exists():
        raise RunError(f"{run_dir} already holds a run; resume it or choose another folder")
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(
        model=model, task=task, cfg=cfg, run_dir=run_dir, manifest=manifest, checkpoint_name=checkpoint,
        describe_arch=describe, on_epoch=on_epoch,
        run_info={"kind": kind, "task": task.name, "settings": task.settings.to_dict(), "space_text": text,
                  "space_path": str(path), "sizes": dict(sizes)},
    )  # fmt: skip
    if resume:
        trainer.resume()
    return trainer, graph, manifest, text


def _run(trainer) -> None:
    from essdsl.nas.runs import write_metrics

    try:
        trainer.run()
    finally:
        write_metrics(trainer.run_dir, trainer.history)
        if trainer.history:
            plot_tagging_run(trainer.run_dir, trainer.history, trainer.task.baseline("valid"))


def plot_tagging_run(run_dir, history: list[dict], baseline=None) -> Path:
    """``RUN/plots/tagging.png``: training and validation loss, and validation F1 per
    epoch next to the task's baseline F1 on the same split."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from essdsl.files import atomic_write_bytes

    epochs = [r["epoch"] for r in history]
    fig, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(epochs, [r["train_loss"] for r in history], marker="o", label="train loss")
    loss_ax.plot(epochs, [r["valid_loss"] for r in history], marker="o", label="valid loss")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("loss per token")
    loss_ax.legend()
    f1_ax.plot(epochs, [r["valid_f1"] for r in history], marker="o", label="valid F1")
    if baseline is not None:
        f1_ax.axhline(baseline[1], color="grey", linestyle="--", label=f"{baseline[0]} {baseline[1]:.2f}")
    f1_ax.set_xlabel("epoch")
    f1_ax.set_ylabel("span F1 (conlleval)")
    f1_ax.legend()
    fig.suptitle(Path(run_dir).name)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    path = Path(run_dir) / "plots" / "tagging.png"
    atomic_write_bytes(path, buffer.getvalue())
    return path


def train_tagger(genotype, task, run_dir, sizes: dict, cfg: RunConfig, resume: bool = False,
                 on_epoch: Optional[Callable[[dict], None]] = None) -> dict:  # fmt: skip
    """Train ``genotype``'s cell in ``task``'s tagger; returns the best epoch's test metrics."""
    trainer, *_ = _trainer("train", genotype, task, run_dir, sizes, cfg, resume, on_epoch)
    _run(trainer)
    if trainer.best_state is not None:
        trainer.model.load_state_dict(trainer.best_state)
    return task.evaluate(trainer.model, "test", cfg.eval_batch_size)


def search_tagger(space, task, run_dir, sizes: dict, cfg: RunConfig, resume: bool = False,
                  on_epoch: Optional[Callable[[dict], None]] = None) -> tuple[Path, str]:  # fmt: skip
    """Bilevel search of ``space`` on ``task`` (validation loss as the outer objective);
    writes and returns ``run_dir/genotype.space`` and its text."""
    from essdsl.files import atomic_write_text
    from essdsl.lang.parse import parse_space
    from essdsl.nas.derive import derive_choices, genotype_text, retained_weights

    trainer, graph, manifest, text = _trainer("search", space, task, run_dir, sizes, cfg, resume, on_epoch)
    if not _arch_by_key(trainer.model):
        raise RunError(f"{space} has no choices left (a genotype?): nothing to search; train it instead")
    _run(trainer)
    choices = derive_choices(manifest, {k: p.detach() for k, p in _arch_by_key(trainer.model).items()})
    record = trainer.history[-1] if trainer.history else {}
    provenance = {"source": str(space), "run": Path(run_dir).name, "epoch": int(record.get("epoch", 0)),
                  "seed": cfg.seed, "task": task.settings.preset or task.name,
                  "weights": retained_weights(choices)}  # fmt: skip
    if "valid_f1" in record:
        provenance["valid_f1"] = round(float(record["valid_f1"]), 2)
    genotype = genotype_text(parse_space(text, str(space)), choices, provenance, sizes=sizes)
    path = Path(run_dir) / "genotype.space"
    atomic_write_text(path, genotype)
    return path, genotype


def evaluate_tagger(checkpoint, split: str = "test", batch_size: int = 128) -> dict:
    """Metrics of a tagging run's best weights (``RUN/model.pt`` or a search's
    ``checkpoint.pt``) on ``split``, with the data and settings the run recorded."""
    from essdsl.lang.check import load_graph_text
    from essdsl.nas import checkpoint as checkpoints
    from essdsl.tasks.tagging import TaggingSettings, TaggingTask

    state = checkpoints.load(checkpoint)
    run = state.run
    if run.get("task") != "tagging":
        raise RunError(f"{checkpoint} is not a tagging run (task {run.get('task', 'lm')!r})")
    task = TaggingTask(TaggingSettings(**run["settings"]))
    graph = load_graph_text(run["space_text"], run["space_path"], run["sizes"])
    model = task.build_model(graph, search=bool(state.config.get("search")), seed=0)
    model.load_state_dict(state.best_model or state.model)
    return task.evaluate(model, split, batch_size)
