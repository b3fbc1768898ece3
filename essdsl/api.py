"""The public Python API: load a space, search it on a task, derive, train, evaluate.

::

    import essdsl

    space = essdsl.load_space("spaces/ess_joint.space")
    run = essdsl.search(space, task="lm", max_steps=30, final_epochs=0)   # -> Run
    genotype = essdsl.derive(run)                                        # -> Genotype(path, text)
    trained = essdsl.train(genotype.path, epochs=1, max_steps=20)          # -> Run
    print(essdsl.evaluate(trained, split="test")["ppl"])

Each stage hands the next one type: :class:`Space` (text, path, sizes of a ``.space``
file) -> a checked cell graph -> the task's model around the compiled cell -> the
trainer -> a run folder, known to Python as a :class:`Run` (its manifest, metrics,
genotype and checkpoint).  ``essdsl search|train|eval|derive`` are these functions
plus printing.

Settings are keyword arguments named as the run's config names them (``epochs``,
``batch_size``, ``arch_lr``, ``dropouth``, the task's options such as ``data``),
checked against the option table of :mod:`essdsl.options` before any work.  Errors
are :class:`essdsl.errors.EssdslError` subclasses whose messages name settings that
way; the CLI renders them with its flags (:class:`~essdsl.nas.runconfig.SettingError`).
Progress is reported to an optional :class:`Observer`; without one a run is silent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional, Union

from essdsl.errors import EssdslError
from essdsl.files import check_run_folder
from essdsl.nas import runs
from essdsl.nas.export import export_artifact as export  # what `essdsl compile` does
from essdsl.nas.runconfig import Diverged, Interrupted, RunConfig, RunError, SettingError, check_settings

PathLike = Union[str, Path]

# The settings search and train accept besides the task's options: the run's config,
# the cell's sizes and the model's dropouts.
CONFIG_SETTINGS = ("epochs", "max_steps", "batch_size", "eval_batch_size", "bptt", "lr", "wd", "clip", "seed")
SEARCH_SETTINGS = ("arch_lr", "arch_wd", "order", "hvp")
TRAIN_SETTINGS = ("asgd",)
SIZE_SETTINGS = ("ninp", "nhid")
DROPOUT_SETTINGS = ("dropout", "dropouth", "dropoutx", "dropouti", "dropoute")
# The final training of a searched genotype: DARTS's final-training recipe.
FINAL_TRAINING = dict(lr=20.0, wd=8e-7, clip=0.25)


# ----------------------------------------------------------------- spaces
@dataclass(frozen=True)
class Space:
    """The text of a ``.space`` file (or of a compiled artifact's source) and where it came from."""

    path: str
    text: str
    sha256: str
    sizes: dict = field(default_factory=dict)  # from a compiled artifact's manifest
    artifact: Optional[str] = None

    def graph(self, sizes: Optional[dict] = None):
        """The checked cell graph at ``sizes`` (the file's own where not given);
        :class:`essdsl.errors.SpaceError` with the diagnostics otherwise."""
        from essdsl.lang.check import load_graph_text

        return load_graph_text(self.text, self.path, {**self.sizes, **(sizes or {})})

    def record(self, name: str) -> dict:
        """The run manifest's ``space`` entry."""
        return {"path": self.path, "sha256": self.sha256, "name": name, "text": self.text}


def load_space(path_or_text: Union[PathLike, Space]) -> Space:
    """A space from a ``.space`` file, a compiled artifact ``build/<name>.pt`` (its source,
    checked against the sha256 it was compiled from), or ``.space`` text itself (a
    string with a newline or a brace).  Read here; checked when used at its sizes
    (:meth:`Space.graph`)."""
    if isinstance(path_or_text, Space):
        return path_or_text
    if isinstance(path_or_text, str) and ("\n" in path_or_text or "{" in path_or_text):
        import hashlib

        return Space("<text>", path_or_text, hashlib.sha256(path_or_text.encode("utf-8")).hexdigest())
    facts = runs.resolve_space(path_or_text)
    return Space(facts["path"], facts["text"], facts["sha256"], facts["sizes"], facts["artifact"])


def compile_space(space: Union[PathLike, Space], sizes: Optional[dict] = None, vocab: int = 10000, search: bool = True,
                  impl: str = "generated"):  # fmt: skip
    """(model, manifest): the language model around ``space``'s cell, compiled
    (``impl="generated"``: TorchScript-able straight-line code; ``"reference"``: the
    edge-by-edge interpreter), and the manifest saying what every architecture weight is."""
    from essdsl.compile import ModelConfig, build_manifest, build_model

    space = load_space(space)
    graph = space.graph(sizes)
    config = ModelConfig(vocab=vocab, search=search)
    model = build_model(graph, config, impl=impl)
    return model, build_manifest(graph, config, model, source_text=space.text)


# ----------------------------------------------------------------- runs
class Genotype(NamedTuple):
    path: Path
    text: str


@dataclass
class Run:
    """A run folder: what it is (manifest), how it went (metrics), what it found."""

    folder: Path
    task: Any = None  # the configured task, when this process ran it (printing uses its data)

    def __post_init__(self):
        self.folder = Path(self.folder)

    @property
    def manifest(self) -> dict:
        return runs.read_manifest(self.folder)

    @property
    def kind(self) -> str:
        return self.manifest.get("kind", "?")

    @property
    def metrics(self) -> list[dict]:
        """One record per finished epoch (loss, ppl, arch weights, health, ...)."""
        return runs.read_metrics(self.folder)

    @property
    def last(self) -> Optional[dict]:
        metrics = self.metrics
        return metrics[-1] if metrics else None

    @property
    def checkpoint(self) -> Path:
        return self.folder / (runs.SEARCH_CHECKPOINT if self.kind == "search" else runs.TRAIN_CHECKPOINT)

    @property
    def genotype_path(self) -> Path:
        """The searched genotype (a search), or the genotype trained (a training run)."""
        return self.folder / runs.GENOTYPE if self.kind == "search" else Path(self.manifest["space"]["path"])

    @property
    def genotype(self) -> str:
        return self.genotype_path.read_text(encoding="utf-8")

    @property
    def final(self) -> Optional["Run"]:
        """The search's genotype trained from scratch (``final_epochs``), if it was."""
        folder = self.folder / runs.FINAL
        return Run(folder) if (folder / runs.RUN_MANIFEST).exists() else None

    def evaluate(self, split: str = "valid", **settings) -> dict:
        return evaluate(self, split=split, **settings)


class Observer:
    """What a run reports while it runs; every method does nothing here.  The CLI's
    progress bar is one (essdsl/cli/run.py)."""

    def note(self, text: str) -> None:
        """A remark for the user (a choice made and why, a fallback taken)."""

    def message(self, text: str) -> None:
        """A line of the run's story (what it trains on, where it writes)."""

    def start(self, total_steps: int, epochs: int, done: int) -> None:
        """The training loop starts (``done`` steps already taken when resuming)."""

    def step(self, info) -> None:
        """After each step (:class:`essdsl.nas.trainer.StepInfo`)."""

    def epoch(self, record: dict, task) -> None:
        """After each epoch, with its record."""

    def stop(self) -> None:
        """The training loop ended (normally or not)."""

    def searched(self, run: "Run", record: Optional[dict], genotype: Genotype) -> None:
        """A search wrote its genotype (before the final training, if any)."""

    def trained(self, run: "Run") -> None:
        """A training run finished (its model is written)."""


@dataclass
class _Plan:
    """Everything a search or training run is started (or continued) with."""

    kind: str
    space: Space
    task_name: str
    task_options: dict
    sizes: dict
    cfg: RunConfig
    dropouts: dict
    device: str
    threads: Optional[int]
    compile: Optional[bool]  # asked for (None: decide)
    restored_compile: Optional[bool]  # the resumed run's choice
    final_epochs: int
    run: Optional[dict]  # the manifest of the run continued


def _split_settings(kind: str, task_name: str, settings: dict, task_options: Optional[dict]) -> tuple[dict, dict]:
    """(run settings, task options); an unknown name is a SettingError."""
    from essdsl import tasks

    spec = tasks.get(task_name)
    allowed = set(CONFIG_SETTINGS + SIZE_SETTINGS + DROPOUT_SETTINGS) | set(SEARCH_SETTINGS if kind == "search" else TRAIN_SETTINGS)
    option_names = {o.name for o in spec.options}
    run_settings, options = {}, dict(task_options or {})
    for name, value in settings.items():
        if name in option_names:
            if value is not None:
                options[name] = value
        elif name in allowed:
            run_settings[name] = value
        else:
            known = ", ".join(sorted(allowed | option_names))
            raise SettingError(name, "{setting} is not a setting of {kind} with task {task} (settings: {known})", kind=kind, task=task_name, known=known)
    check_settings({**run_settings, **options})
    if run_settings.get("order") not in (None, "first", "second"):
        raise SettingError("order", "{setting} must be 'first' or 'second', not '{value}'", value=run_settings["order"])
    return {k: v for k, v in run_settings.items() if v is not None}, options


def _plan(kind: str, space: Space, task: Optional[str], resume: Optional[PathLike], settings: dict, task_options: Optional[dict],
          device: Optional[str], threads: Optional[int], compile: Optional[bool], final_epochs: Optional[int], note) -> _Plan:  # fmt: skip
    """The settings of a new run (task presets, then the caller's), or of the resumed one
    (its own; a different value asked for is refused)."""
    from essdsl import tasks

    noun = "a search" if kind == "search" else "a training run"
    if task is not None:
        tasks.get(task)  # an unknown name fails before any work, saying which are known
    if resume is not None:
        run = runs.resumed_manifest(Path(resume), kind, noun)
        task_name = runs.recorded_task(run, task)
        given, options = _split_settings(kind, task_name, settings, task_options)
        sizes = dict(run["sizes"])
        asked = {k: given.get(k, sizes.get(k)) for k in SIZE_SETTINGS}
        runs.check_same_space(run, {"path": space.path, "sha256": space.sha256}, asked, "space" if kind == "search" else "genotype")
        data = options.get("data")
        if data is not None and (run.get("data") is None or Path(data).resolve() != Path(run["data"]).resolve()):
            used = run.get("data") or "the synthetic corpus"
            raise SettingError("data", "refusing to resume: {setting} {value} is not the data this run used ({used})", value=data, used=used)
        recorded_options = {k: v for k, v in (run.get("task_options") or {}).items() if k != "data"}  # data: compared as paths above
        runs.refuse_changed_settings({**given, **{k: v for k, v in options.items() if k != "data"}}, {**recorded_options, **runs.recorded_settings(run)})
        recorded = run.get("options") or {}
        if device is None:  # the run's own, unless this machine lacks it
            device = recorded.get("device", "auto")
            import torch

            if device.startswith("cuda") and not torch.cuda.is_available():
                note(f"note: the run was started on {device}, which this machine lacks; continuing on the CPU "
                     "(the result can differ in the last digits)")  # fmt: skip
                device = "cpu"
        threads = threads if threads is not None else recorded.get("threads")
        final_epochs = final_epochs if final_epochs is not None else recorded.get("final_epochs")
        restored_compile = recorded.get("compile") if compile is None else None
        options = run.get("task_options") or {"data": run.get("data"), "synthetic_tokens": run.get("synthetic_tokens")}  # older runs: the LM's
        return _Plan(kind, space, task_name, options, sizes, RunConfig.from_dict(run["config"]), run["dropouts"], device,
                     threads, compile, restored_compile, _final_epochs(final_epochs, options, task_name), run)  # fmt: skip
    task_name = task or "lm"
    given, options = _split_settings(kind, task_name, settings, task_options)
    if options.get("data") is not None:
        options["data"] = str(Path(options["data"]).resolve())
    sizes, cfg, dropouts = _new_settings(kind, space, task_name, given, options)
    return _Plan(kind, space, task_name, options, sizes, cfg, dropouts, device or "auto", threads, compile, None,
                 _final_epochs(final_epochs, options, task_name), None)  # fmt: skip


def _new_settings(kind: str, space: Space, task_name: str, given: dict, options: dict) -> tuple[dict, RunConfig, dict]:
    """(sizes, config, dropouts) of a new run: the task's preset, then what was given (a
    search of a compiled artifact takes the artifact's sizes)."""
    from essdsl import tasks

    preset = tasks.defaults(task_name, kind, options)
    sizes = {k: given.get(k, space.sizes.get(k, preset[k])) if kind == "search" else given.get(k, preset[k]) for k in SIZE_SETTINGS}
    values = {k: given.get(k, preset.get(k)) for k in CONFIG_SETTINGS if given.get(k, preset.get(k)) is not None}
    extra = {k: given[k] for k in (SEARCH_SETTINGS if kind == "search" else TRAIN_SETTINGS) if k in given}
    cfg = RunConfig(search=kind == "search", **values, **extra)
    dropouts = {k: given.get(k, preset["dropouts"][k]) for k in DROPOUT_SETTINGS}
    return sizes, cfg, dropouts


def _build(space: Space, task, sizes: dict, cfg: RunConfig, path_for_errors: str):
    """(graph, model, manifest, model config) of ``space`` at ``sizes`` for ``task``."""
    from essdsl.tasks.base import is_arch_parameter

    graph = space.graph(sizes)
    model, model_manifest, model_cfg = task.build(graph, cfg.search, cfg.seed, space.text)
    if cfg.search and not any(is_arch_parameter(n) for n, _ in model.named_parameters()):
        raise RunError(f"{path_for_errors} has no choices left (a genotype?): nothing to search; train it with 'essdsl train'")
    return graph, model, model_manifest, model_cfg


def trainer(space: Union[PathLike, Space], task: Any = "lm", *, run_dir: PathLike, search: bool = True,
            device: str = "cpu", task_options: Optional[dict] = None, **settings):  # fmt: skip
    """A :class:`~essdsl.nas.trainer.Trainer` of ``space``'s model on ``task`` (a registered
    name, or a configured task object), wired as :func:`search` and :func:`train` wire
    theirs, for code that drives it itself (tests, benchmarks).  Nothing is written
    before it runs; it checkpoints into ``run_dir``."""
    from essdsl import tasks
    from essdsl.nas import execution
    from essdsl.nas.derive import arch_summary
    from essdsl.nas.trainer import Trainer

    space = load_space(space)
    kind = "search" if search else "train"
    name = task if isinstance(task, str) else task.name
    given, options = _split_settings(kind, name, settings, task_options)
    sizes, cfg, dropouts = _new_settings(kind, space, name, given, options)
    task_impl = tasks.create(name, cfg.seed, options, bptt=cfg.bptt, dropouts=dropouts) if isinstance(task, str) else task
    _, model, manifest, _ = _build(space, task_impl, sizes, cfg, space.path)
    describe = (lambda m: arch_summary(manifest, _arch_tensors(m, manifest))) if search else None
    return Trainer(model, task_impl, cfg, Path(run_dir), manifest, device=execution.choose_device(device), describe_arch=describe)


def _final_epochs(value: Optional[int], options: dict, task_name: str) -> int:
    from essdsl import tasks

    value = tasks.defaults(task_name, "search", options)["final_epochs"] if value is None else value
    if value < 0:
        raise SettingError("final_epochs", "{setting} must be 0 or more, got {value}", value=value)
    return value


def _execute(plan: _Plan, out: Optional[PathLike], observer: Observer):
    """Build the task and the model, open (or reopen) the run folder and train; returns
    (run folder, manifest, trainer, task).  Interrupted and Diverged propagate after the
    metrics are written."""
    from essdsl import tasks
    from essdsl.nas import distributed, execution
    from essdsl.nas.derive import arch_summary
    from essdsl.nas.growing import GrowingTrainer
    from essdsl.nas.trainer import Trainer
    from essdsl.options import corpus_problems, run_batches
    from essdsl.tasks.corpus import DataError
    from essdsl.tasks.base import is_arch_parameter

    cfg, search = plan.cfg, plan.kind == "search"
    dev = execution.choose_device(plan.device)
    graph = plan.space.graph(plan.sizes)
    execution.set_threads(plan.threads, max(plan.sizes.values()))
    if not search and any(spec.has_op_choice or spec.has_combine_choice for spec in graph.mixed_nodes()):
        raise RunError(f"{plan.space.path} still has choices; derive a genotype first (essdsl search / essdsl derive)")
    task = tasks.create(plan.task_name, cfg.seed, plan.task_options, bptt=cfg.bptt, dropouts=plan.dropouts)
    graph, model, model_manifest, model_cfg = _build(plan.space, task, plan.sizes, cfg, plan.space.path)
    arch_start = {n: p.detach().clone() for n, p in _arch_tensors(model, model_manifest).items()}  # where the search starts (seeded)
    key = execution.compile_key(plan.space.sha256, model_cfg, cfg, dev)
    compiled = execution.apply_compile_policy(model, plan.compile, plan.restored_compile, dev, cfg, task, key, observer.note)
    # a text corpus too short for the batch size (the LM's check; other tasks check their data when they load it)
    problems = corpus_problems(task.corpus, run_batches(cfg)) if hasattr(task, "corpus") else []  # before anything is written
    if problems:
        raise DataError("\n".join(problems), located=True)
    checkpoint_name = runs.SEARCH_CHECKPOINT if search else runs.TRAIN_CHECKPOINT
    data = task.fingerprint()
    fingerprint = data.pop("hash")
    options = {"compile": compiled, "compile_requested": plan.compile, "threads": plan.threads, "device": str(dev)}
    if search:
        options["final_epochs"] = plan.final_epochs
    if plan.run is not None:
        if plan.run.get("data_fingerprint") != fingerprint:
            raise RunError("refusing to resume: the data differs from what this run was started with")
        run_dir, run = Path(out), plan.run
    else:
        run_dir = distributed.same_on_all(distributed.current(), runs.new_run_dir(out, graph.name, checkpoint_name))
        run = {
            "kind": plan.kind, "task": plan.task_name, "run_id": run_dir.name, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "space": {**plan.space.record(graph.name), "artifact": plan.space.artifact} if search else plan.space.record(graph.name),
            "sizes": plan.sizes, "seed": cfg.seed, "config": cfg.to_dict(), "dropouts": plan.dropouts,
            "model_config": model_cfg.to_dict(), "data": plan.task_options.get("data"),
            "synthetic_tokens": plan.task_options.get("synthetic_tokens"), "task_options": plan.task_options,
            "data_fingerprint": fingerprint, "corpus": data, **_reference_line(task),
            "device": str(dev), "versions": runs.versions(), "options": options, "launch": distributed.current().launch(),
            **({"model_manifest": model_manifest} if search else {}),
        }  # fmt: skip
        runs.write_manifest(run_dir, run)
    growing = _growing(graph, task, cfg, compiled, dev, observer) if search else None
    trainer = (GrowingTrainer if growing else Trainer)(
        **(growing or {}),
        model=model, task=task, cfg=cfg, run_dir=run_dir, manifest=model_manifest, device=dev, checkpoint_name=checkpoint_name,
        describe_arch=(lambda m: arch_summary(model_manifest, _arch_tensors(m, model_manifest))) if search else None,
        run_info={"kind": plan.kind, "task": plan.task_name, "space_text": plan.space.text, "space_path": plan.space.path,
                  "sizes": plan.sizes, "model_config": model_cfg.to_dict(), "data": plan.task_options.get("data"),
                  "synthetic_tokens": plan.task_options.get("synthetic_tokens"), "task_options": plan.task_options},
    )  # fmt: skip
    if plan.run is not None:
        trainer.resume()
    if search:
        trainer.assess_epoch = _health_check(model, model_manifest, arch_start, task, trainer if growing else None)
        weights = sum(p.numel() for n, p in model.named_parameters() if not is_arch_parameter(n))
        story = f"searching {plan.space.path} ({graph.name}) on {task.describe()}; {weights:,} weights, {cfg.order}-order, run folder {run_dir}"
    else:
        story = f"training {plan.space.path} on {task.describe()}; {sum(p.numel() for p in model.parameters()):,} weights; run folder {run_dir}"
    _train(trainer, task, story, observer)
    execution.mark_compiled(model, key)
    return run_dir, run, trainer, task


def _reference_line(task) -> dict:
    """What ``essdsl plot`` draws a task's run against: its first metric's name and its
    baseline on the validation split (the LM's reference points are in ``corpus``)."""
    if hasattr(task, "corpus"):
        return {}
    first, baseline = task.metrics[0], task.baseline("valid")
    line = {"metric": first.name, "label": first.label or first.name}
    if baseline is not None:
        line.update(baseline=baseline[0], value=float(baseline[1]))
    return {"reference": line}


def _train(trainer, task, story: str, observer: Observer) -> None:
    """Run ``trainer`` with Ctrl-C handling, reporting to ``observer``; the metrics are
    written after every epoch and when the run stops early."""
    from essdsl.nas.trainer import stop_on_signals

    def on_epoch(record):
        runs.write_metrics(trainer.run_dir, trainer.history)
        observer.epoch(record, task)
        for note in trainer.notes:
            observer.message(f"[yellow]note:[/] {note}")
        trainer.notes.clear()

    cfg = trainer.cfg
    total = cfg.epochs * trainer.steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    trainer.on_step = observer.step
    trainer.on_epoch = on_epoch
    observer.start(total, cfg.epochs, trainer.step)
    observer.message(story)
    try:
        with stop_on_signals(trainer, lambda: observer.note("stopping after this step; saving a checkpoint…")):
            trainer.run()
    except (Interrupted, Diverged):
        runs.write_metrics(trainer.run_dir, trainer.history)
        raise
    finally:
        observer.stop()


def _arch_tensors(model, manifest: dict) -> dict:
    """The manifest's architecture tensors by their manifest names (``arch.s1_ops``), also
    where a task's head holds the cell under a prefix (the forecaster: ``rnn.arch.s1_ops``)."""
    from essdsl.tasks.base import arch_key, is_arch_parameter

    params = {arch_key(n): p for n, p in model.named_parameters() if is_arch_parameter(n)}
    return {name: params[name] for name in manifest.get("arch", {})}


def _health_check(model, manifest: dict, arch_start: dict, task, growing_trainer=None):
    """The trainer's per-epoch assessment of a search: :func:`essdsl.nas.health.search_health`
    of the architecture weights against the start and the task's baseline (LM: the
    unigram model), compared on the task's first metric (of a growing search: the grown
    model's, :func:`essdsl.nas.growing.growth_assess`)."""
    from essdsl.nas.health import search_health

    metric = task.metrics[0]
    baseline = task.baseline("valid")

    def health(manifest, arch, start, record):
        return {"health": search_health(manifest, arch, start, record[f"valid_{metric.name}"], baseline[1] if baseline else None,
                                        metric.higher_is_better)}  # fmt: skip

    if growing_trainer is not None:
        from essdsl.nas.growing import growth_assess

        return growth_assess(growing_trainer, arch_start, health)

    def assess(record: dict) -> dict:
        return health(manifest, _arch_tensors(model, manifest), arch_start, record)

    return assess


def _growing(graph, task, cfg: RunConfig, compiled: bool, dev, observer: Observer) -> Optional[dict]:
    """The GrowingTrainer settings of a search of a space with a grow block (None
    otherwise): a compiled time step is compiled again for each grown model, and each
    growth is told to the observer."""
    from essdsl.compile.fast import compile_step
    from essdsl.nas import execution
    from essdsl.nas.growing import growing_options

    def compile_again(model) -> None:
        compile_step(model, mode=execution.compile_mode(True, dev), report=observer.note)

    growing = growing_options(graph, task, cfg.seed, rebuild_step=compile_again if compiled else None)
    if growing is not None:
        family = growing["grower"].plan.family
        growing["on_growth"] = lambda e: observer.message(
            f"grew {family}: +{e['member']} ({e['size_before']} -> {e['size_after']} nodes) at epoch {e['epoch']}, step {e['step']}"
            + (f", after pruning {', '.join(e['pruned'])}" if e["pruned"] else "")
            + f"; loss on a fixed batch {e['loss_before']:.6f} -> {e['loss_after']:.6f}"
        )
    return growing


def search(space: Union[PathLike, Space], task: Optional[str] = None, *, out: Optional[PathLike] = None,
           resume: Optional[PathLike] = None, device: Optional[str] = None, threads: Optional[int] = None,
           compile: Optional[bool] = None, final_epochs: Optional[int] = None, task_options: Optional[dict] = None,
           observer: Optional[Observer] = None, **settings) -> Run:  # fmt: skip
    """Search ``space`` on ``task`` (default ``"lm"``) with bilevel optimisation, write the
    genotype, then (``final_epochs``, the task's preset by default: 8 on the built-in
    corpus) train it from scratch in ``RUN/final``.  ``resume`` continues the run in that
    folder (settings given must equal the run's)."""
    from essdsl.nas import distributed

    observer = observer or Observer()
    check_run_folder(out)
    space = load_space(space)
    plan = _plan("search", space, task, resume, settings, task_options, device, threads, compile, final_epochs, observer.note)
    run_dir, run, trainer, task_impl = _execute(plan, resume if resume is not None else out, observer)
    record = trainer.history[-1] if trainer.history else None
    growth = trainer.grower.to_json() if getattr(trainer, "grower", None) is not None else None  # derived at the grown size
    path, text = runs.write_genotype(run_dir, run, _arch_tensors(trainer.model, trainer.manifest), record, growth=growth)
    distributed.barrier(distributed.current(), "the genotype")  # rank 0 wrote it; the final training reads it
    result = Run(run_dir, task_impl)
    observer.searched(result, record, Genotype(path, text))
    if plan.final_epochs and record is not None:
        _train_final(result, plan, path, observer)
    return result


def _train_final(run: Run, plan: _Plan, genotype: Path, observer: Observer) -> None:
    """Train the derived genotype from scratch with the search's data and sizes (continues
    an interrupted one; nothing when it is done)."""
    final_dir = run.folder / runs.FINAL
    resuming = (final_dir / runs.TRAIN_CHECKPOINT).exists()
    if resuming and len(runs.read_metrics(final_dir)) >= plan.final_epochs:
        return  # already trained by an earlier (resumed) run
    cfg = plan.cfg
    from essdsl import tasks

    # the task's own training recipe where it has one (the LM's is FINAL_TRAINING)
    recipe = {k: v for k, v in tasks.defaults(plan.task_name, "train", plan.task_options).items() if k in FINAL_TRAINING}
    settings = dict({**FINAL_TRAINING, **recipe}, epochs=plan.final_epochs, batch_size=cfg.batch_size, eval_batch_size=cfg.eval_batch_size,
                    bptt=cfg.bptt, seed=cfg.seed, **plan.sizes)  # fmt: skip
    requested = plan.compile if plan.compile is not None else (plan.run or {}).get("options", {}).get("compile_requested")
    if resuming:  # how it runs comes from its own manifest, as it was started
        train(genotype, plan.task_name, resume=final_dir, observer=observer)
    else:
        train(genotype, plan.task_name, out=final_dir, device=plan.device, threads=plan.threads, compile=requested,
              task_options=plan.task_options, observer=observer, **settings)  # fmt: skip


def train(genotype: Union[PathLike, Space], task: Optional[str] = None, *, out: Optional[PathLike] = None,
          resume: Optional[PathLike] = None, device: Optional[str] = None, threads: Optional[int] = None,
          compile: Optional[bool] = None, task_options: Optional[dict] = None, observer: Optional[Observer] = None,
          **settings) -> Run:  # fmt: skip
    """Train ``genotype`` (a space with no choices left) from scratch on ``task``; the run
    folder holds ``model.pt`` (the best epoch's weights are kept for evaluation)."""
    observer = observer or Observer()
    check_run_folder(out)
    space = load_space(genotype)
    plan = _plan("train", space, task, resume, settings, task_options, device, threads, compile, 0, observer.note)
    run_dir, _, _, task_impl = _execute(plan, resume if resume is not None else out, observer)
    result = Run(run_dir, task_impl)
    observer.trained(result)
    return result


def derive(run: Union[PathLike, Run], out: Optional[PathLike] = None) -> Genotype:
    """Derive the genotype again from a search run's last checkpoint; written to ``out``
    (default RUN/genotype.space)."""
    from essdsl.nas.checkpoint import load_checkpoint
    from essdsl.tasks.base import arch_key, is_arch_parameter

    folder = run.folder if isinstance(run, Run) else Path(run)
    manifest = runs.read_manifest(folder)
    if manifest.get("kind") != "search":
        raise RunError(f"{folder} is a '{manifest.get('kind')}' run; derive reads search runs")
    state = load_checkpoint(folder / runs.SEARCH_CHECKPOINT)
    # by the manifest's names, also where a task's head holds the cell under a prefix
    arch = {arch_key(k): v for k, v in state["model"].items() if is_arch_parameter(k)}
    history = state.get("history") or []
    growth = (state.get("run") or {}).get("growth")  # a growing search: derived at the size it grew to
    path, text = runs.write_genotype(folder, manifest, arch, history[-1] if history else None, out, growth=growth)
    return Genotype(path, text)


def evaluate(run_or_checkpoint: Union[PathLike, Run], split: str = "valid", *, task: Optional[str] = None,
             device: str = "auto", batch_size: Optional[int] = None, bptt: int = 35, task_options: Optional[dict] = None,
             **options) -> dict:  # fmt: skip
    """Metrics of a trained model (its best epoch's weights) on ``split`` (``valid`` or
    ``test``): ``loss``, the task's metrics (LM: ``ppl``), ``size`` (tokens) and ``data``
    (the data's name and reference points).  ``options`` are the task's (LM: ``data``,
    default the data the run used)."""
    from essdsl import tasks
    from essdsl.nas import execution
    from essdsl.nas.checkpoint import load_checkpoint
    from essdsl.options import corpus_problems
    from essdsl.tasks.corpus import DataError

    if split not in ("valid", "test"):
        raise SettingError("split", "{setting} must be valid or test, not '{value}'", value=split)
    if task is not None:
        tasks.get(task)
    check_settings({"batch_size": batch_size, "bptt": bptt} if batch_size is not None else {"bptt": bptt})
    path = run_or_checkpoint.checkpoint if isinstance(run_or_checkpoint, Run) else runs.checkpoint_of(Path(run_or_checkpoint))
    dev = execution.choose_device(device)
    state = load_checkpoint(path)
    described = state["run"]
    try:
        text, space_path, sizes, model_cfg = described["space_text"], described["space_path"], described["sizes"], dict(described["model_config"])
    except (KeyError, TypeError):
        raise RunError(f"{path} lacks the model description (space, sizes); it was not written by essdsl train/search") from None
    task_name = runs.recorded_task({"task": described.get("task", "lm")}, task, "evaluate")
    # the run's own task options (window, targets, ...) unless asked otherwise
    chosen = dict(described.get("task_options") or {}) if task in (None, described.get("task", "lm")) else {}
    chosen.update(task_options or {})
    chosen.update({k: v for k, v in options.items() if v is not None})
    if chosen.get("data") is None:
        chosen["data"] = described.get("data")
        chosen.setdefault("synthetic_tokens", described.get("synthetic_tokens"))
    accepted = {o.name for o in tasks.get(task_name).options}
    chosen = {k: v for k, v in chosen.items() if k in accepted}
    seed = int(state.get("config", {}).get("seed", 0))
    if batch_size is None:  # the run's own validation batch size (the LM's default: 10)
        batch_size = int(state.get("config", {}).get("eval_batch_size") or 10)
    execution.set_threads(None, max(sizes.values()))  # as the run trained: one thread for a small cell
    dropouts = {k: v for k, v in model_cfg.items() if k.startswith("dropout")}
    task_impl = tasks.create(task_name, seed, chosen, bptt=bptt, dropouts=dropouts)
    corpus = getattr(task_impl, "corpus", None)  # the LM's text; other tasks check their data when they load it
    problems = corpus_problems(corpus, [(split, batch_size)]) if corpus is not None else []
    if problems:
        raise DataError("\n".join(problems), located=True)
    if corpus is not None and corpus.vocab != model_cfg["vocab"]:
        raise RunError(f"the data has a vocabulary of {corpus.vocab} words but the model was trained with {model_cfg['vocab']}")
    from essdsl.lang.check import load_graph_text

    model = task_impl.build_model(load_graph_text(text, space_path, sizes), bool(model_cfg.get("search", False)), seed)
    try:
        model.load_state_dict(state.get("best_model") or state["model"])
    except RuntimeError as exc:
        raise RunError(f"{path} does not match the model it describes ({str(exc).splitlines()[0]})") from None
    model.to(dev)
    metrics = task_impl.evaluate(model, split, batch_size)
    data = task_impl.fingerprint()
    data.pop("hash", None)
    size = len(corpus.split(split)) if corpus is not None else getattr(task_impl, "split_size", lambda _: None)(split)
    baseline = task_impl.baseline(split) if corpus is None else None  # the LM's reference points are in data
    extra = {} if corpus is not None else {"size_unit": getattr(task_impl, "size_unit", "samples")}
    if baseline is not None:
        extra["baseline"] = {"name": baseline[0], task_impl.metrics[0].name: baseline[1]}
    return {**metrics, "split": split, "size": size, "data": data, **extra}


def compare(run_dirs: list) -> dict:
    """The runs side by side (space, supernet and from-scratch valid ppl, params, time)
    and the semantic diffs of their genotypes against the first one's."""
    rows, genotypes = [], []
    for run_dir in run_dirs:
        manifest = runs.read_manifest(Path(run_dir))
        row = runs.compare_row(Path(run_dir), manifest)
        rows.append(row)
        genotypes.append((str(run_dir), Path(row["genotype"]), manifest["sizes"]))
    diffs, notes = runs.genotype_diffs(genotypes)
    return {"runs": rows, "diffs": diffs, "notes": notes, "genotypes_differ": any(d["edits"] for d in diffs)}


def baseline_comparison(run: Union[PathLike, Run], task, label: str = "trained genotype") -> Optional[str]:
    """The table a finished run of a task with baselines ends with (forecast: the trained
    model's test metrics and parameters next to persistence and the VAR); None for a
    task without such a table."""
    if not hasattr(task, "comparison"):
        return None
    from essdsl.lang.check import load_graph

    run = run if isinstance(run, Run) else Run(run)
    scores = evaluate(run, split="test")
    model = task.build_model(load_graph(run.genotype_path, sizes=run.manifest["sizes"]), False, 0)
    scores["params"] = sum(p.numel() for p in model.parameters())
    return task.comparison({label: scores}, "test")


def plot(run: Union[PathLike, Run], out: Optional[PathLike] = None) -> list[Path]:
    """PNG plots of a run (perplexities, every architecture weight over epochs); the paths written."""
    from essdsl.nas.plot import plot_run

    return plot_run(run.folder if isinstance(run, Run) else Path(run), Path(out) if out is not None else None)


__all__ = [
    "baseline_comparison",
    "export",
    "EssdslError", "Genotype", "Observer", "Run", "Space", "compare", "compile_space", "derive", "evaluate",
    "load_space", "plot", "search", "train", "trainer",
]  # fmt: skip
