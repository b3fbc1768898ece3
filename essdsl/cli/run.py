"""``essdsl search | derive | train | eval | compare | plot``: runs on data.

Torch and the compiler are imported inside the commands, so ``essdsl check``
stays fast.  Every command fails with ``essdsl: error: …`` and a non-zero
exit status, never a traceback, for problems a user can fix.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from essdsl.cli import app
from essdsl.files import check_run_folder, remove_stale_temp_files
from essdsl.options import check_corpus_fits, check_options, run_batches
from essdsl.cli.common import fail, fail_space
from essdsl.errors import EssdslError
from essdsl.tasks import options_help

RUN_MANIFEST = "manifest.json"
SEARCH_CHECKPOINT = "checkpoint.pt"
TRAIN_CHECKPOINT = "model.pt"


# ----------------------------------------------------------------- helpers
def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _set_threads(threads: Optional[int], width: int) -> None:
    """Small cells are Python-overhead bound: one intra-op thread is fastest and
    avoids oversubscribing a shared machine.  Larger cells use torch's default."""
    import torch

    if threads is not None:
        if threads < 1:
            fail(f"--threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)
    elif width <= 128:
        torch.set_num_threads(1)


def _device(name: str):
    import torch

    if name not in ("auto", "cpu", "cuda"):
        fail(f"--device must be auto, cpu or cuda, not '{name}'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        fail("--device cuda was asked for but torch sees no CUDA device (use --device cpu or auto)")
    return torch.device(name)


def _read_space_source(path: Path) -> tuple[str, str]:
    """(text, sha256) of a .space file, failing cleanly."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        fail(f"{path}: no such file")
    except IsADirectoryError:
        fail(f"{path} is a directory, not a .space file")
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        fail(f"{path} is not UTF-8 text")
    return text, _sha256(data)


def _resolve_space(target: str, ninp: Optional[int], nhid: Optional[int]) -> dict:
    """A .space file, or a compiled artifact ``build/<name>.pt`` (+ its manifest) -> space facts.

    Returns ``{"path", "text", "sha256", "sizes" (from the artifact, may be {})}``.
    """
    p = Path(target)
    if p.suffix == ".pt":
        from essdsl.nas.runfiles import RunFileError, read_artifact_manifest

        try:  # the manifest's schema, and the artifact's bytes against its checksum
            manifest, manifest_path = read_artifact_manifest(p)
        except RunFileError as exc:
            fail(str(exc))
        space_path, want = Path(manifest["space"]["path"]), manifest["space"]["sha256"]
        if not space_path.is_absolute() and not space_path.exists():
            space_path = (manifest_path.parent / space_path).resolve() if (manifest_path.parent / space_path).exists() else space_path
        text, sha = _read_space_source(space_path)
        if sha != want:
            fail(
                f"{space_path} changed since {p} was compiled (sha256 {sha[:12]}… != {want[:12]}…); "
                f"recompile with 'essdsl compile {space_path}' or search the .space file directly"
            )
        sizes = {k: int(v) for k, v in (manifest.get("sizes") or {}).items() if k in ("ninp", "nhid")}
        return {"path": str(space_path), "text": text, "sha256": sha, "sizes": sizes, "artifact": str(p)}
    text, sha = _read_space_source(p)
    return {"path": str(p), "text": text, "sha256": sha, "sizes": {}, "artifact": None}


def _load_graph_text(text: str, path: str, sizes: dict):
    from essdsl.lang.check import load_graph_text
    from essdsl.errors import SpaceError

    try:
        return load_graph_text(text, path, sizes)
    except SpaceError as exc:
        fail_space(exc)


def _load_task(name: str, seed: int, options: dict, **settings):
    """The configured task (its data loaded), failing cleanly."""
    from essdsl import tasks

    try:
        return tasks.create(name, seed, options, **settings)
    except EssdslError as exc:
        fail(str(exc))


def _check_task(name: Optional[str]) -> None:
    """An unknown --task fails before any work."""
    from essdsl import tasks

    if name is not None:
        try:
            tasks.get(name)
        except EssdslError as exc:
            fail(str(exc))


def _task_options(task: str, given: list[str], **flags) -> dict:
    """The task's options from --task-option KEY=VALUE and the LM's own flags (--data, ...)."""
    from essdsl import tasks

    try:
        options = tasks.parse_options(task, given or [])
    except EssdslError as exc:
        fail(str(exc))
    for key, value in flags.items():
        if value is not None:
            options[key] = value
    return options


def _compile_mode(enabled: bool, device) -> Optional[str]:
    """torch.compile mode for the time step: CUDA graphs on GPU, inductor's default on CPU."""
    if not enabled:
        return None
    return "reduce-overhead" if device.type == "cuda" else "default"


def _quote(value) -> str:
    """A path as one shell word (the printed resume hint must work when pasted)."""
    import shlex

    return shlex.quote(str(value))


# The resume command to print when a run is interrupted, where it is not the command's
# own: the final training of a search is resumed by resuming the search.
_RESUME_HINT: dict = {}


def _typed_options(command: str) -> set:
    """Parameter names the user typed on the command line of ``command`` (not defaults,
    not environment variables; empty when ``command`` is called from another one)."""
    try:  # typer >= 0.24 vendors click
        from typer._click.core import ParameterSource
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - typer on top of click
        from click import get_current_context
        from click.core import ParameterSource

    ctx = get_current_context(silent=True)
    if ctx is None or ctx.command.name != command:
        return set()
    return {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}


def _recorded_settings(run: dict, cfg, dropouts: dict, synthetic_tokens: Optional[int]) -> dict:
    """Option name -> the value a resumed run continues with (its manifest's)."""
    from essdsl.tasks.corpus import SYNTHETIC_DEFAULTS

    values = {k: getattr(cfg, k) for k in ("seed", "epochs", "max_steps", "batch_size", "eval_batch_size", "bptt", "lr", "wd", "clip")}
    if cfg.search:
        values.update(arch_lr=cfg.arch_lr, arch_wd=cfg.arch_wd, order=cfg.order, **dropouts)
    else:
        values["asgd"] = cfg.asgd
    if run.get("data") is None:
        values["synthetic_tokens"] = _pick(synthetic_tokens, SYNTHETIC_DEFAULTS["train"])
    return values


def _refuse_changed_settings(typed: set, given: dict, recorded: dict) -> None:
    """--resume continues a run as it was started: an option typed with another value
    than the run's would change the result, so it is refused, not ignored."""
    for name, value in given.items():
        if name in typed and name in recorded and value != recorded[name]:
            flag = "--" + name.replace("_", "-")
            fail(
                f"refusing to resume: {flag} {value} differs from the run's {recorded[name]} and would change its result; "
                f"drop {flag} to continue the run as it was started, or start a new run"
            )


def _restore_options(run: dict, typed: set, **given):
    """The options that do not change what is computed, but how (compile, threads,
    device, final epochs): a resumed run gets the ones it was started with, unless
    typed again on the command line.  Returns them in the order given."""
    recorded = run.get("options") or {}
    out = []
    for name, value in given.items():
        if name not in typed and name in recorded:
            value = recorded[name]
            if name == "device" and value.startswith("cuda"):
                import torch

                if not torch.cuda.is_available():
                    print(f"essdsl: note: the run was started on {value}, which this machine lacks; continuing on the CPU "
                          "(the result can differ in the last digits)", file=sys.stderr)  # fmt: skip
                    value = "cpu"
        out.append(value)
    return out


def _compile_key(space_sha: str, model_cfg, cfg, dev) -> str:
    """What decides the compiled variants of a run: model code and shapes, torch version."""
    import torch

    fields = [space_sha, json.dumps(model_cfg.to_dict(), sort_keys=True), cfg.batch_size, cfg.eval_batch_size, cfg.search, cfg.order, dev.type, torch.__version__]
    return json.dumps(fields)


def _apply_compile_policy(model, requested: Optional[bool], restored: Optional[bool], dev, cfg, task, key: str) -> bool:
    """Decide whether to run the time step under torch.compile, say why in one line,
    and compile it if so.  ``requested``: --compile/--no-compile or ESSDSL_COMPILE (None:
    decide); ``restored``: the choice of the run being resumed (wins over the estimate)."""
    from essdsl.compile.fast import _marker_path, compile_step, decide_compile, enable_compile_cache, time_eager_step
    from essdsl.tasks.corpus import expected_seq_len

    if restored is not None:
        chosen, reason = restored, f"{'compiling the time step' if restored else 'running eagerly'}, as the run was started (--compile/--no-compile to change)"
    elif requested is not None:
        chosen, reason = requested, ("compiling the time step: --compile or ESSDSL_COMPILE=1" if requested else "running eagerly: --no-compile or ESSDSL_COMPILE=0")
    else:
        corpus = task.corpus
        rows = len(corpus.train) // cfg.batch_size
        steps = cfg.epochs * max(1, math.ceil((rows - 2) / expected_seq_len(cfg.bptt)))
        if cfg.max_steps is not None:
            steps = min(steps, cfg.max_steps)
        passes = (5.0 if cfg.order == "second" else 2.0) if cfg.search else 1.0
        seconds = time_eager_step(model, cfg.batch_size, cfg.bptt, corpus.vocab, dev)
        variants = 6 if cfg.search else 4
        decision = decide_compile(seconds, steps, passes, variants, dev.type, cached=False)
        if not decision.compile and decide_compile(seconds, steps, passes, variants, dev.type, cached=True).compile:
            marker = _marker_path(key)  # only now: finding torch's cache folder imports inductor (seconds)
            if marker is not None and marker.exists():
                decision = decide_compile(seconds, steps, passes, variants, dev.type, cached=True)
        chosen, reason = decision.compile, decision.reason
    print(f"essdsl: {reason}", file=sys.stderr)
    if chosen:
        from essdsl.compile.fast import compile_loss

        enable_compile_cache()
        compile_step(model, mode=_compile_mode(True, dev), report=lambda text: print(f"essdsl: {text}", file=sys.stderr))
        # the compiled path compiles the training loss too (evaluation stays eager)
        task.criterion = compile_loss(task.criterion, report=lambda text: print(f"essdsl: {text}", file=sys.stderr))
    return chosen


def _mark_compiled(model, key: str) -> None:
    """After a compiled run: its variants are in torch's cache now (the next policy estimate uses that)."""
    from essdsl.compile.fast import mark_compiled

    info = getattr(model, "_essdsl_compile_info", None)
    if info is not None and info.variants:
        mark_compiled(key)


def _versions() -> dict:
    import platform

    import torch

    from essdsl import __version__

    return {"essdsl": __version__, "torch": torch.__version__, "python": platform.python_version()}


def _read_run_manifest(run_dir: Path) -> dict:
    from essdsl.nas.runfiles import RunFileError, read_run_manifest

    path = run_dir / RUN_MANIFEST
    if not run_dir.exists():
        fail(f"run folder {run_dir} does not exist")
    if not path.exists():
        fail(f"{run_dir} is not an essdsl run folder ({RUN_MANIFEST} is missing)")
    try:
        return read_run_manifest(run_dir)
    except RunFileError as exc:
        fail(str(exc))


def _resumed_run(run_dir: Path, kind: str, noun: str) -> dict:
    """The manifest of the run to continue with --resume, which must be a ``kind`` run."""
    run = _read_run_manifest(run_dir)
    remove_stale_temp_files(run_dir)  # left by a kill during an atomic write
    if run.get("kind") != kind:
        fail(f"{run_dir} is a '{run.get('kind')}' run, not {noun}")
    return run


def _resumed_task(run: dict, asked: Optional[str]) -> str:
    """The task of a resumed run (runs from before --task are language-model runs); a
    different --task is refused."""
    recorded = run.get("task", "lm")
    if asked is not None and asked != recorded:
        fail(f"refusing to resume: --task {asked} is not the task this run used ({recorded})")
    return recorded


def _run_settings(run: dict) -> tuple:
    """What a resumed run continues with: its config, data folder, dropouts and synthetic size."""
    from essdsl.nas.runconfig import RunConfig

    return RunConfig.from_dict(run["config"]), run.get("data"), run["dropouts"], run.get("synthetic_tokens")


def _check_same_run(run: dict, space: dict, sizes: dict, what: str) -> None:
    if run["space"]["sha256"] != space["sha256"]:
        fail(
            f"refusing to resume: {space['path']} is not the space this run was started with "
            f"(content sha256 {space['sha256'][:12]}… != {run['space']['sha256'][:12]}… recorded in the run's manifest). "
            f"Start a new run instead of --resume, or restore the original {what}."
        )
    if run["sizes"] != sizes:
        fail(f"refusing to resume: sizes {sizes} differ from the run's {run['sizes']}")


def _run_id(space_name: str) -> str:
    return f"{space_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _pick(value, default):
    return default if value is None else value


class _Progress:
    """A rich progress bar on stderr: epoch, step, loss, ppl, tokens/s, ETA."""

    def __init__(self, total_steps: int, epochs: int, done: int = 0):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from essdsl.cli.output import console

        # Piped or redirected: no live bar (its frames end in \r), one line per epoch.
        self.console = console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  ppl {task.fields[ppl]:.2f}  {task.fields[tps]:,.0f} tok/s"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=not self.console.is_terminal,
        )
        self.task = self.progress.add_task("run", total=total_steps, completed=done, epoch=1, epochs=epochs, loss=0.0, ppl=0.0, tps=0.0)

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def step(self, info) -> None:
        # The BPTT length varies per step, so the step count of the run is an
        # estimate: re-estimate it from the rows of the stream still to go, so
        # the bar ends exactly full.
        units = max(info.units, 1)
        mean_step = units / max(info.steps_per_epoch, 1)
        units_left = (info.epochs - info.epoch - 1) * units + max(0, units - info.done)
        total = info.step + math.ceil(units_left / mean_step)
        if info.total_steps is not None:
            total = min(total, info.total_steps)
        self.progress.update(
            self.task,
            total=total,
            completed=info.step,
            epoch=info.epoch + 1,
            loss=info.loss,
            ppl=math.exp(min(info.loss, 50)),
            tps=info.items_per_s,
        )

    def epoch(self, record: dict, corpus) -> None:
        self.console.print(_epoch_line(record, corpus), markup=False, highlight=False)

    def message(self, text: str) -> None:
        self.console.print(text)


def _ppl_text(name: str, ppl: float, loss: float) -> str:
    """``train ppl 12.34``; a perplexity too large for a float (a diverging epoch, e.g.
    before a rollback) is shown by its loss instead of as ``inf``."""
    from essdsl.nas.health import format_ppl

    if math.isfinite(ppl):
        return f"{name} ppl {format_ppl(ppl)}"
    return f"{name} loss {loss:.2f} nats/token (ppl too large to show)"


def _references(corpus) -> str:
    """The reference points of a perplexity on this corpus: true floor (synthetic), unigram, uniform."""
    parts = [f"floor {corpus.floor_ppl:.2f}"] if corpus.floor_ppl else []
    if corpus.unigram_ppl is not None:
        parts.append(f"unigram {corpus.unigram_ppl:.2f}")
    parts.append(f"uniform {corpus.vocab:,}")
    return ", ".join(parts)


def _epoch_span(record: dict) -> str:
    """``epoch 3`` or, for a run that --max-steps ended inside it, ``epoch 1 (0.25 of an epoch)``."""
    fraction = record.get("epoch_fraction", 1.0)
    return f"epoch {record['epoch']}" + (f" ({fraction:.2g} of an epoch)" if fraction < 1.0 else "")


def _epoch_line(record: dict, corpus) -> str:
    line = (
        f"{_epoch_span(record)}: {_ppl_text('train', record['train_ppl'], record['train_loss'])}  "
        f"{_ppl_text('valid', record['valid_ppl'], record['valid_loss'])}  ({_references(corpus)})  {record['elapsed_s']:.0f}s"
    )
    if "arch_entropy" in record:
        line += f"  arch entropy {record['arch_entropy']:.3f}"
        ratio = (record.get("health") or {}).get("entropy_ratio")
        if ratio is not None:
            line += f" ({100 * ratio:.0f}% of uniform)"
    warnings = (record.get("health") or {}).get("warnings")
    if warnings:  # the run ends with what each means and what to try
        line += f"  health: {', '.join(warnings)}"
    return line


def _open_run(kind: str, checkpoint_name: str, out: Optional[Path], resume: Optional[Path], run: Optional[dict],
              space_record: dict, sizes: dict, cfg, dropouts: dict, model_cfg, data_dir: Optional[str],
              synthetic_tokens: Optional[int], task, dev, extra: Optional[dict] = None) -> tuple[Path, dict]:  # fmt: skip
    """The run folder and its manifest: a new folder (manifest written atomically),
    or the resumed one after checking that the data is what it was started with."""
    from essdsl.files import atomic_write_text

    check_corpus_fits(task.corpus, run_batches(cfg))  # before anything is written
    data = task.fingerprint()
    fingerprint = data.pop("hash")
    if resume is not None:
        if run.get("data_fingerprint") != fingerprint:
            fail("refusing to resume: the data differs from what this run was started with")
        return resume, run
    run_dir = out or Path("runs") / _run_id(space_record["name"])
    if (run_dir / checkpoint_name).exists():
        fail(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out")
    run = {
        "kind": kind,
        "task": task.name,
        "run_id": run_dir.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "space": space_record,
        "sizes": sizes,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "dropouts": dropouts,
        "model_config": model_cfg.to_dict(),
        "data": data_dir,
        "synthetic_tokens": synthetic_tokens,
        "data_fingerprint": fingerprint,
        "corpus": data,
        "device": str(dev),
        "versions": _versions(),
        **(extra or {}),
    }
    atomic_write_text(run_dir / RUN_MANIFEST, json.dumps(run, indent=2, sort_keys=True) + "\n")
    return run_dir, run


def _start_trainer(kind: str, checkpoint_name: str, model, model_manifest: dict, task, cfg, run_dir: Path, dev,
                   resuming: bool, space: dict, sizes: dict, model_cfg, data_dir: Optional[str],
                   synthetic_tokens: Optional[int], describe_arch=None, growing: Optional[dict] = None):  # fmt: skip
    """The Trainer of a search or training run (restored from its checkpoint when
    resuming) and the progress bar that will show it.  ``growing``: the keyword arguments
    of :class:`essdsl.nas.growing.GrowingTrainer` for a space with a grow block."""
    from essdsl.nas.runconfig import RunError

    if growing:  # the search trainer with growth
        from essdsl.nas.growing import GrowingTrainer as trainer_class
    else:
        from essdsl.nas.trainer import Trainer as trainer_class

    trainer = trainer_class(
        **(growing or {}),
        model=model,
        task=task,
        cfg=cfg,
        run_dir=run_dir,
        manifest=model_manifest,
        device=dev,
        checkpoint_name=checkpoint_name,
        describe_arch=describe_arch,
        run_info={"kind": kind, "task": task.name, "space_text": space["text"], "space_path": space["path"], "sizes": sizes,
                  "model_config": model_cfg.to_dict(), "data": data_dir, "synthetic_tokens": synthetic_tokens},  # fmt: skip
    )
    if resuming:
        try:
            trainer.resume()
        except RunError as exc:
            fail(str(exc))
    total = cfg.epochs * trainer.steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    progress = _Progress(total, cfg.epochs, trainer.step)
    return trainer, progress


def _arch_tensors(model, manifest: dict) -> dict:
    params = dict(model.named_parameters())
    return {name: params[name] for name in manifest.get("arch", {})}


def _write_genotype(run_dir: Path, run: dict, arch: dict, record: Optional[dict], out: Optional[Path] = None,
                    growth: Optional[dict] = None) -> tuple[Path, str]:  # fmt: skip
    """``growth``: the growth state of a growing search (the genotype is derived from the
    space grown as far as the run grew it)."""
    from essdsl.nas.derive import DeriveError, derive_choices, genotype_text, retained_weights
    from essdsl.errors import SpaceError
    from essdsl.files import atomic_write_text
    from essdsl.lang.parse import parse_space

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
            **_health_provenance(record),
        }
        if record and math.isfinite(record["valid_ppl"]):
            provenance["valid_ppl"] = round(float(record["valid_ppl"]), 3)
        text = genotype_text(space, choices, provenance, sizes=run["sizes"])  # checked at the run's sizes
    except (DeriveError, SpaceError) as exc:
        fail(f"cannot derive a genotype: {exc}")
    path = out or (run_dir / "genotype.space")
    atomic_write_text(path, text, inputs=[run["space"]["path"]])  # never over the searched space
    return path, text


def _health_provenance(record: Optional[dict]) -> dict:
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


def _finish_message(corpus, record: Optional[dict], out, what: str = "model") -> None:
    """The last epoch's valid perplexity next to the corpus's reference points, and
    whether it beats the unigram model."""
    if record is None:
        return
    from essdsl.cli.output import print_table

    fraction = record.get("epoch_fraction", 1.0)
    span = "last epoch" if fraction >= 1.0 else (f"after {fraction:.2g} of an epoch" if record["epoch"] == 1 else f"epoch {record['epoch']}, {fraction:.2g} of it")
    columns = [f"{what} ({span})", "unigram", "uniform (vocab)"]
    from essdsl.nas.health import format_ppl

    valid = format_ppl(record["valid_ppl"], record.get("valid_loss"))
    row = [valid, f"{corpus.unigram_ppl:.2f}", f"{corpus.vocab:,}"]
    if corpus.floor_ppl is not None:
        columns.append("true floor exp(H)")
        row.append(f"{corpus.floor_ppl:.2f}")
    print_table(out, "validation perplexity", columns, [row], right=set(columns))
    verdict = "beats" if record["valid_ppl"] < corpus.unigram_ppl else "does NOT beat"
    out.print(f"the {what} {verdict} the unigram model (valid ppl {valid} vs {corpus.unigram_ppl:.2f})", markup=False, highlight=False)


def _report_health(record: Optional[dict], out) -> None:
    """The search-health measures of the last epoch and a warning for each problem found."""
    from essdsl.nas.health import health_messages, health_summary

    health = (record or {}).get("health")
    if not health:
        return
    out.print(f"search health: {health_summary(health)}", markup=False, highlight=False)
    for message in health_messages(health, record["valid_ppl"]):
        out.print(f"essdsl: warning: {message}", markup=False, highlight=False)
    if not health["warnings"]:
        out.print("search health: ok (the architecture weights moved away from uniform and the supernet beats the unigram model)", markup=False, highlight=False)


def _run_trainer(trainer, progress: _Progress, resume_hint: str, corpus) -> None:
    from essdsl.nas.runconfig import Diverged, Interrupted, RunError
    from essdsl.nas.trainer import StopOnSigint, write_metrics

    def on_epoch(record):
        write_metrics(trainer.run_dir, trainer.history)
        progress.epoch(record, corpus)
        for note in trainer.notes:
            progress.message(f"[yellow]note:[/] {note}")
        trainer.notes.clear()

    trainer.on_step = progress.step
    trainer.on_epoch = on_epoch
    stopper = StopOnSigint(trainer, lambda: print("essdsl: stopping after this step; saving a checkpoint…", file=sys.stderr))
    try:
        with progress, stopper:
            trainer.run()
    except Interrupted as exc:
        write_metrics(trainer.run_dir, trainer.history)
        print(
            f"essdsl: interrupted at epoch {trainer.epoch + 1}, step {trainer.step}; state saved to {exc.checkpoint}\n"
            f"resume with: {resume_hint}",
            file=sys.stderr,
        )
        raise typer.Exit(130)
    except Diverged as exc:
        write_metrics(trainer.run_dir, trainer.history)
        fail(str(exc))
    except RunError as exc:
        fail(str(exc))


# ----------------------------------------------------------------- search
@app.command()
def search(
    space_or_artifact: str = typer.Argument(..., metavar="SPACE_OR_ARTIFACT", help="a .space file, or a compiled artifact build/<name>.pt (with build/<name>.manifest.json beside it)"),
    task: Optional[str] = typer.Option(None, "--task", help="the task to run (default lm: language modelling; a resumed run keeps its own)"),
    task_option: Optional[list[str]] = typer.Option(None, "--task-option", metavar="KEY=VALUE", help=f"a task's own setting (repeatable). {options_help()}"),
    data: Optional[str] = typer.Option(None, "--data", help="folder with train.txt/valid.txt/test.txt (PTB format); default: the built-in synthetic corpus"),
    ninp: Optional[int] = typer.Option(None, "--ninp", help="embedding size (default 300 with --data, 32 on the synthetic corpus)"),
    nhid: Optional[int] = typer.Option(None, "--nhid", help="hidden size (default 300 with --data, 32 on the synthetic corpus)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="epochs (default 50 with --data, 3 on the synthetic corpus)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="stop after this many training steps in total (default: no limit)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="training batch size (default 256 with --data, 32 on the synthetic corpus)"),
    eval_batch_size: int = typer.Option(10, "--eval-batch-size", help="batch size of the validation pass"),
    bptt: Optional[int] = typer.Option(None, "--bptt", help="mean BPTT length (default 35 with --data, 20 on the synthetic corpus)"),
    order: str = typer.Option("first", "--order", help="architecture gradient: 'first' (at the current weights) or 'second' (one unrolled step, finite-difference Hessian)"),
    seed: int = typer.Option(0, "--seed", help="random seed (also seeds the synthetic corpus)"),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available), cpu or cuda"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: 1 for nhid <= 128, else torch's default)"),
    synthetic_tokens: Optional[int] = typer.Option(None, "--synthetic-tokens", help="training tokens of the built-in corpus when --data is omitted (default 60000)"),
    out: Optional[Path] = typer.Option(None, "--out", help="run folder (default runs/<space-name>-<timestamp>)"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this folder from its last checkpoint"),
    lr: Optional[float] = typer.Option(None, "--lr", help="SGD learning rate of the model weights (default 20)"),
    wd: float = typer.Option(5e-7, "--wd", help="weight decay of the model weights"),
    clip: float = typer.Option(0.25, "--clip", help="gradient-norm clip of the model weights"),
    arch_lr: float = typer.Option(3e-3, "--arch-lr", help="Adam learning rate of the architecture weights"),
    arch_wd: float = typer.Option(1e-3, "--arch-wd", help="Adam weight decay of the architecture weights"),
    dropout: Optional[float] = typer.Option(None, "--dropout", help="output dropout (default 0.75 with --data, 0.1 synthetic)"),
    dropouth: Optional[float] = typer.Option(None, "--dropouth", help="dropout on past states entering the cell (default 0.25 / 0.05)"),
    dropoutx: Optional[float] = typer.Option(None, "--dropoutx", help="dropout on inputs entering the cell (default 0.75 / 0.1)"),
    dropouti: Optional[float] = typer.Option(None, "--dropouti", help="dropout on the embedded inputs (default 0.2 / 0.05)"),
    dropoute: Optional[float] = typer.Option(None, "--dropoute", help="embedding-row dropout (default 0)"),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", envvar="ESSDSL_COMPILE", show_default="decided per run", help="run one time step under torch.compile (faster steps after a one-time compile, cached between runs). Default: compile only where the run is long enough to repay the compile (the choice and why are printed); env ESSDSL_COMPILE=1/0 forces it"),
    final_epochs: Optional[int] = typer.Option(None, "--final-epochs", envvar="ESSDSL_FINAL_EPOCHS", help="then train the derived genotype from scratch for N epochs in RUN_DIR/final and report its valid ppl (default 8 on the synthetic corpus, 0 with --data: use 'essdsl train')"),
) -> None:
    """Search a space with bilevel (DARTS-family) optimization and write RUN_DIR/genotype.space."""
    check_options(locals())
    check_run_folder(out)
    _check_task(task)
    if order not in ("first", "second"):
        fail(f"--order must be 'first' or 'second', not '{order}'")
    dev = _device(device)
    space = _resolve_space(space_or_artifact, ninp, nhid)
    run = None

    if resume is not None:
        run = _resumed_run(resume, "search", "a search")
        task = _resumed_task(run, task)
        sizes = dict(run["sizes"])
        if ninp is not None or nhid is not None:
            asked = {"ninp": _pick(ninp, sizes.get("ninp")), "nhid": _pick(nhid, sizes.get("nhid"))}
            _check_same_run(run, space, asked, "space")
        _check_same_run(run, space, sizes, "space")
        synthetic_tokens_given = synthetic_tokens
        cfg, data_dir, dropouts, synthetic_tokens = _run_settings(run)
        if data is not None and (data_dir is None or Path(data).resolve() != Path(data_dir).resolve()):
            fail(f"refusing to resume: --data {data} is not the data this run used ({data_dir or 'the synthetic corpus'})")
        typed = _typed_options("search")
        _refuse_changed_settings(typed, dict(
            seed=seed, epochs=epochs, max_steps=max_steps, batch_size=batch_size, eval_batch_size=eval_batch_size, bptt=bptt,
            lr=lr, wd=wd, clip=clip, arch_lr=arch_lr, arch_wd=arch_wd, order=order, dropout=dropout, dropouth=dropouth,
            dropoutx=dropoutx, dropouti=dropouti, dropoute=dropoute, synthetic_tokens=synthetic_tokens_given,
        ), _recorded_settings(run, cfg, dropouts, synthetic_tokens))  # fmt: skip
        threads, device, final_epochs = _restore_options(run, typed, threads=threads, device=device, final_epochs=final_epochs)
        dev = _device(device)
        restored_compile = None if "compile_" in typed else (run.get("options") or {}).get("compile")
    else:
        from essdsl.tasks.lm import PRESETS, preset_name

        task = task or "lm"
        preset = PRESETS[preset_name(data)]
        base = preset["search"]
        sizes = {
            "ninp": _pick(ninp, space["sizes"].get("ninp", base["ninp"])),
            "nhid": _pick(nhid, space["sizes"].get("nhid", base["nhid"])),
        }
        from essdsl.nas.runconfig import RunConfig

        cfg = RunConfig(
            search=True,
            epochs=_pick(epochs, base["epochs"]),
            max_steps=max_steps,
            batch_size=_pick(batch_size, base["batch_size"]),
            eval_batch_size=eval_batch_size,
            bptt=_pick(bptt, base["bptt"]),
            lr=_pick(lr, base["lr"]),
            wd=wd,
            clip=clip,
            arch_lr=arch_lr,
            arch_wd=arch_wd,
            order=order,
            seed=seed,
        )
        base_drop = preset["search_dropouts"]
        dropouts = {
            k: _pick(v, base_drop[k])
            for k, v in (("dropout", dropout), ("dropouth", dropouth), ("dropoutx", dropoutx), ("dropouti", dropouti), ("dropoute", dropoute))
        }
        data_dir = str(Path(data).resolve()) if data is not None else None

    if resume is None:
        restored_compile = None
    from essdsl.tasks.lm import PRESETS, preset_name

    final_epochs = _pick(final_epochs, PRESETS[preset_name(data_dir)]["final_epochs"])
    if final_epochs < 0:
        fail(f"--final-epochs must be 0 or more, got {final_epochs}")
    graph = _load_graph_text(space["text"], space["path"], sizes)
    space_name = graph.name
    _set_threads(threads, max(sizes.values()))
    task_impl = _load_task(task, cfg.seed, _task_options(task, task_option, data=data_dir, synthetic_tokens=synthetic_tokens), bptt=cfg.bptt, dropouts=dropouts)
    corpus = task_impl.corpus
    from essdsl.nas.derive import arch_summary

    model, model_manifest, model_cfg = task_impl.build(graph, True, cfg.seed, space["text"])
    if not any(n.startswith("arch.") for n, _ in model.named_parameters()):
        fail(f"{space['path']} has no choices left (a genotype?): nothing to search; train it with 'essdsl train'")
    # The weights the search starts from (the seed fixes them, so a resumed run gets the same).
    arch_start = {n: p.detach().clone() for n, p in _arch_tensors(model, model_manifest).items()}
    compile_key = _compile_key(space["sha256"], model_cfg, cfg, dev)
    compiled = _apply_compile_policy(model, compile_, restored_compile, dev, cfg, task_impl, compile_key)
    options = {"compile": compiled, "compile_requested": compile_, "final_epochs": final_epochs, "threads": threads, "device": str(dev)}
    space_record = {"path": space["path"], "sha256": space["sha256"], "name": space_name, "text": space["text"], "artifact": space["artifact"]}
    run_dir, run = _open_run(
        "search", SEARCH_CHECKPOINT, out, resume, run, space_record, sizes, cfg, dropouts,
        model_cfg, data_dir, synthetic_tokens, task_impl, dev, extra={"model_manifest": model_manifest, "options": options},
    )  # fmt: skip
    from essdsl.nas.growing import growing_options

    growing = growing_options(graph, task_impl, cfg.seed, rebuild_step=(lambda m: _compile_again(m, dev)) if compiled else None)
    trainer, progress = _start_trainer(
        "search", SEARCH_CHECKPOINT, model, model_manifest, task_impl, cfg, run_dir, dev, resume is not None, space, sizes,
        model_cfg, data_dir, synthetic_tokens,
        describe_arch=lambda m: arch_summary(model_manifest, _arch_tensors(m, model_manifest)), growing=growing,
    )  # fmt: skip
    trainer.assess_epoch = _health_check(model, model_manifest, arch_start, task_impl, trainer if growing else None)
    if growing:
        trainer.on_growth = lambda e: progress.message(
            f"grew {trainer.grower.plan.family}: +{e['member']} ({e['size_before']} -> {e['size_after']} nodes) at epoch {e['epoch']}, step {e['step']}"
            + (f", after pruning {', '.join(e['pruned'])}" if e["pruned"] else "")
            + f"; loss on a fixed batch {e['loss_before']:.6f} -> {e['loss_after']:.6f}"
        )
    progress.message(
        f"searching {space['path']} ({space_name}) on {corpus.describe()}; {sum(p.numel() for n, p in model.named_parameters() if not n.startswith('arch.')):,} weights, "
        f"{cfg.order}-order, run folder {run_dir}"
    )
    started = time.time()
    _run_trainer(trainer, progress, f"essdsl search {_quote(space_or_artifact)} --resume {_quote(run_dir)}", corpus)
    _mark_compiled(model, compile_key)
    record = trainer.history[-1] if trainer.history else None
    growth = trainer.grower.to_json() if growing else None
    path, text = _write_genotype(run_dir, run, _arch_tensors(trainer.model, trainer.manifest), record, growth=growth)
    progress.message(f"genotype written to {path} ({time.time() - started:.0f}s)")
    _finish_message(corpus, record, progress.console, what="supernet")
    _report_health(record, progress.console)
    typer.echo(text)
    if final_epochs and record is not None:
        requested = (run.get("options") or {}).get("compile_requested", compile_) if "compile_" not in _typed_options("search") else compile_
        _RESUME_HINT["train"] = f"essdsl search {_quote(space_or_artifact)} --resume {_quote(run_dir)}"  # continues the final training too
        try:
            _train_derived(path, run_dir / "final", run, cfg, sizes, final_epochs, device, threads, requested, eval_batch_size)
        finally:
            _RESUME_HINT.pop("train", None)
        final = _read_metrics(run_dir / "final")
        if final:
            _final_summary(corpus, record, final[-1], final_epochs, progress.console)


def _train_derived(genotype: Path, final_dir: Path, run: dict, cfg, sizes: dict, epochs: int, device: str,
                   threads: Optional[int], compile_: Optional[bool], eval_batch_size: int) -> None:  # fmt: skip
    """Train the derived genotype from scratch with the search's data and sizes (resumes an interrupted one)."""
    resuming = (final_dir / TRAIN_CHECKPOINT).exists()
    if resuming and _read_metrics(final_dir) and len(_read_metrics(final_dir)) >= epochs:
        return  # already trained by an earlier (resumed) run
    train(
        genotype=str(genotype), task=run.get("task", "lm"), task_option=None, data=run.get("data"), ninp=sizes["ninp"], nhid=sizes["nhid"], epochs=epochs,
        max_steps=None, lr=20.0, wd=8e-7, clip=0.25, batch_size=cfg.batch_size, eval_batch_size=eval_batch_size,
        bptt=cfg.bptt, seed=cfg.seed, device=device, threads=threads, synthetic_tokens=run.get("synthetic_tokens"),
        out=None if resuming else final_dir, resume=final_dir if resuming else None, asgd=False, compile_=compile_,
    )  # fmt: skip


def _final_summary(corpus, search_record: dict, final_record: dict, epochs: int, out) -> None:
    from essdsl.cli.output import print_table

    columns = ["supernet (search)", f"derived genotype ({epochs} epoch{'s' if epochs != 1 else ''} from scratch)", "unigram", "uniform (vocab)"]
    from essdsl.nas.health import format_ppl

    row = [format_ppl(search_record["valid_ppl"]), format_ppl(final_record["valid_ppl"]), f"{corpus.unigram_ppl:.2f}", f"{corpus.vocab:,}"]
    if corpus.floor_ppl is not None:
        columns.append("true floor exp(H)")
        row.append(f"{corpus.floor_ppl:.2f}")
    print_table(out, "validation perplexity of the search result", columns, [row], right=set(columns))
    verdict = "beats" if final_record["valid_ppl"] < corpus.unigram_ppl else "does NOT beat"
    out.print(f"the derived genotype {verdict} the unigram model ({format_ppl(final_record['valid_ppl'])} vs {corpus.unigram_ppl:.2f})", markup=False, highlight=False)


def _health_check(model, manifest: dict, arch_start: dict, task, growing_trainer=None):
    """The trainer's per-epoch assessment of a search: :func:`essdsl.nas.health.search_health`
    of the current architecture weights against the start and the task's baseline (LM: the
    unigram model), compared on the task's first metric (of a growing search: the grown
    model's, :func:`essdsl.nas.growing.growth_assess`)."""
    from essdsl.nas.health import search_health

    metric = task.metrics[0].name
    baseline = task.baseline("valid")

    def health(manifest, arch, start, record):
        return {"health": search_health(manifest, arch, start, record[f"valid_{metric}"], baseline[1] if baseline else None)}

    if growing_trainer is not None:
        from essdsl.nas.growing import growth_assess

        return growth_assess(growing_trainer, arch_start, health)

    def assess(record: dict) -> dict:
        return health(manifest, _arch_tensors(model, manifest), arch_start, record)

    return assess


def _compile_again(model, dev) -> None:
    """The time step of a grown model under torch.compile, as the run's first model was."""
    from essdsl.compile.fast import compile_step

    compile_step(model, mode=_compile_mode(True, dev), report=lambda text: print(f"essdsl: {text}", file=sys.stderr))


# ----------------------------------------------------------------- derive
@app.command()
def derive(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="a search run folder"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="where to write the genotype (default RUN_DIR/genotype.space)"),
) -> None:
    """Derive the genotype again from a search run's last checkpoint."""
    from essdsl.nas.checkpoint import load_checkpoint
    from essdsl.nas.runconfig import RunError

    run = _read_run_manifest(run_dir)
    if run.get("kind") != "search":
        fail(f"{run_dir} is a '{run.get('kind')}' run; derive reads search runs")
    try:
        state = load_checkpoint(run_dir / SEARCH_CHECKPOINT)
    except RunError as exc:
        fail(str(exc))
    arch = {k: v for k, v in state["model"].items() if k.startswith("arch.")}
    history = state.get("history") or []
    growth = (state.get("run") or {}).get("growth")  # a growing search: derived at the size it grew to
    path, text = _write_genotype(run_dir, run, arch, history[-1] if history else None, output, growth=growth)
    typer.echo(text, nl=False)
    print(f"essdsl: genotype written to {path}", file=sys.stderr)


# ----------------------------------------------------------------- train
@app.command()
def train(
    genotype: str = typer.Argument(..., metavar="GENOTYPE", help="a genotype .space file (no choices left)"),
    task: Optional[str] = typer.Option(None, "--task", help="the task to run (default lm: language modelling; a resumed run keeps its own)"),
    task_option: Optional[list[str]] = typer.Option(None, "--task-option", metavar="KEY=VALUE", help=f"a task's own setting (repeatable). {options_help()}"),
    data: Optional[str] = typer.Option(None, "--data", help="folder with train.txt/valid.txt/test.txt; default: the built-in synthetic corpus"),
    ninp: Optional[int] = typer.Option(None, "--ninp", help="embedding size (default 850 with --data, 32 synthetic)"),
    nhid: Optional[int] = typer.Option(None, "--nhid", help="hidden size (default 850 with --data, 32 synthetic)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="epochs (default 300 with --data, 8 synthetic)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="stop after this many steps in total"),
    lr: float = typer.Option(20.0, "--lr", help="SGD learning rate"),
    wd: float = typer.Option(8e-7, "--wd", help="weight decay"),
    clip: float = typer.Option(0.25, "--clip", help="gradient-norm clip"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="batch size (default 64 with --data, 32 synthetic)"),
    eval_batch_size: int = typer.Option(10, "--eval-batch-size", help="batch size of the validation pass"),
    bptt: Optional[int] = typer.Option(None, "--bptt", help="mean BPTT length (default 35 with --data, 20 synthetic)"),
    seed: int = typer.Option(0, "--seed", help="random seed"),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available), cpu or cuda"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: 1 for nhid <= 128, else torch's default)"),
    synthetic_tokens: Optional[int] = typer.Option(None, "--synthetic-tokens", help="training tokens of the built-in corpus when --data is omitted (default 60000)"),
    out: Optional[Path] = typer.Option(None, "--out", help="run folder (default runs/<genotype-name>-<timestamp>)"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the training run in this folder"),
    asgd: bool = typer.Option(False, "--asgd", help="switch to averaged SGD when the validation loss stalls (DARTS final training)"),
    compile_: Optional[bool] = typer.Option(None, "--compile/--no-compile", envvar="ESSDSL_COMPILE", show_default="decided per run", help="run one time step under torch.compile (faster steps after a one-time compile, cached between runs). Default: compile only where the run is long enough to repay the compile (the choice and why are printed); env ESSDSL_COMPILE=1/0 forces it"),
) -> None:
    """Train a genotype as a discrete model from scratch; writes RUN_DIR/model.pt."""
    check_options(locals())
    check_run_folder(out)
    _check_task(task)
    dev = _device(device)
    space = _resolve_space(genotype, ninp, nhid)
    run = None

    if resume is not None:
        run = _resumed_run(resume, "train", "a training run")
        task = _resumed_task(run, task)
        sizes = dict(run["sizes"])
        asked = {"ninp": _pick(ninp, sizes["ninp"]), "nhid": _pick(nhid, sizes["nhid"])}
        _check_same_run(run, space, asked, "genotype")
        synthetic_tokens_given = synthetic_tokens
        cfg, data_dir, dropouts, synthetic_tokens = _run_settings(run)
        if data is not None and (data_dir is None or Path(data).resolve() != Path(data_dir).resolve()):
            fail(f"refusing to resume: --data {data} is not the data this run used ({data_dir or 'the synthetic corpus'})")
        typed = _typed_options("train")
        _refuse_changed_settings(typed, dict(
            seed=seed, epochs=epochs, max_steps=max_steps, batch_size=batch_size, eval_batch_size=eval_batch_size, bptt=bptt,
            lr=lr, wd=wd, clip=clip, asgd=asgd, synthetic_tokens=synthetic_tokens_given,
        ), _recorded_settings(run, cfg, dropouts, synthetic_tokens))  # fmt: skip
        threads, device = _restore_options(run, typed, threads=threads, device=device)
        dev = _device(device)
        restored_compile = None if "compile_" in typed else (run.get("options") or {}).get("compile")
    else:
        from essdsl.nas.runconfig import RunConfig
        from essdsl.tasks.lm import PRESETS, preset_name

        task = task or "lm"
        preset = PRESETS[preset_name(data)]
        base = preset["train"]
        sizes = {"ninp": _pick(ninp, base["ninp"]), "nhid": _pick(nhid, base["nhid"])}
        cfg = RunConfig(
            search=False,
            epochs=_pick(epochs, base["epochs"]),
            max_steps=max_steps,
            batch_size=_pick(batch_size, base["batch_size"]),
            eval_batch_size=eval_batch_size,
            bptt=_pick(bptt, base["bptt"]),
            lr=lr,
            wd=wd,
            clip=clip,
            seed=seed,
            asgd=asgd,
        )
        dropouts = dict(preset["train_dropouts"])
        data_dir = str(Path(data).resolve()) if data is not None else None
    graph = _load_graph_text(space["text"], space["path"], sizes)
    _set_threads(threads, max(sizes.values()))
    if any(spec.has_op_choice or spec.has_combine_choice for spec in graph.mixed_nodes()):
        fail(f"{space['path']} still has choices; derive a genotype first (essdsl search / essdsl derive)")
    task_impl = _load_task(task, cfg.seed, _task_options(task, task_option, data=data_dir, synthetic_tokens=synthetic_tokens), bptt=cfg.bptt, dropouts=dropouts)
    corpus = task_impl.corpus
    model, model_manifest, model_cfg = task_impl.build(graph, False, cfg.seed, space["text"])
    compile_key = _compile_key(space["sha256"], model_cfg, cfg, dev)
    compiled = _apply_compile_policy(model, compile_, restored_compile if resume is not None else None, dev, cfg, task_impl, compile_key)
    space_record = {"path": space["path"], "sha256": space["sha256"], "name": graph.name, "text": space["text"]}
    run_dir, run = _open_run(
        "train", TRAIN_CHECKPOINT, out, resume, run, space_record, sizes, cfg, dropouts,
        model_cfg, data_dir, synthetic_tokens, task_impl, dev,
        extra={"options": {"compile": compiled, "compile_requested": compile_, "threads": threads, "device": str(dev)}},
    )  # fmt: skip
    trainer, progress = _start_trainer(
        "train", TRAIN_CHECKPOINT, model, model_manifest, task_impl, cfg, run_dir, dev, resume is not None, space, sizes,
        model_cfg, data_dir, synthetic_tokens,
    )  # fmt: skip
    progress.message(f"training {space['path']} on {corpus.describe()}; {sum(p.numel() for p in model.parameters()):,} weights; run folder {run_dir}")
    _run_trainer(trainer, progress, _RESUME_HINT.get("train") or f"essdsl train {_quote(genotype)} --resume {_quote(run_dir)}", corpus)
    _mark_compiled(model, compile_key)
    record = trainer.history[-1] if trainer.history else None
    progress.message(f"model written to {run_dir / TRAIN_CHECKPOINT}")
    _finish_message(corpus, record, progress.console)


# ----------------------------------------------------------------- eval
@app.command(name="eval")
def evaluate(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="RUN_DIR/model.pt of 'essdsl train' (or a search's checkpoint.pt, or a run folder)"),
    split: str = typer.Option("valid", "--split", help="valid or test"),
    data: Optional[str] = typer.Option(None, "--data", help="data folder (default: the data the run used)"),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available), cpu or cuda"),
    batch_size: int = typer.Option(10, "--batch-size", help="evaluation batch size"),
    bptt: int = typer.Option(35, "--bptt", help="evaluation segment length"),
    task: Optional[str] = typer.Option(None, "--task", help="the task to evaluate on (default: the run's own)"),
    task_option: Optional[list[str]] = typer.Option(None, "--task-option", metavar="KEY=VALUE", help="a task's own setting (repeatable); see 'essdsl search --help'"),
) -> None:
    """Print the perplexity of a trained model on the valid or test split."""
    check_options(locals())
    _check_task(task)
    if split not in ("valid", "test"):
        fail(f"--split must be valid or test, not '{split}'")
    if checkpoint.is_dir():
        candidates = [checkpoint / TRAIN_CHECKPOINT, checkpoint / SEARCH_CHECKPOINT]
        found = [c for c in candidates if c.exists()]
        if not found:
            fail(f"{checkpoint} holds no {TRAIN_CHECKPOINT} or {SEARCH_CHECKPOINT}")
        checkpoint = found[0]
    from essdsl.nas.checkpoint import load_checkpoint
    from essdsl.nas.runconfig import RunError

    dev = _device(device)
    try:
        state = load_checkpoint(checkpoint)
    except RunError as exc:
        fail(str(exc))
    described = state["run"]
    try:
        text, path, sizes, model_cfg = described["space_text"], described["space_path"], described["sizes"], dict(described["model_config"])
    except KeyError:
        fail(f"{checkpoint} lacks the model description (space, sizes); it was not written by essdsl train/search")
    task_name = _resumed_task({"task": described.get("task", "lm")}, task)
    data_dir = data if data is not None else described.get("data")
    seed = int(state.get("config", {}).get("seed", 0))
    dropouts = {k: v for k, v in model_cfg.items() if k.startswith("dropout")}
    options = _task_options(task_name, task_option, data=data_dir, synthetic_tokens=described.get("synthetic_tokens") if data is None else None)
    task_impl = _load_task(task_name, seed, options, bptt=bptt, dropouts=dropouts)
    corpus = task_impl.corpus
    check_corpus_fits(corpus, [(split, batch_size)])
    if corpus.vocab != model_cfg["vocab"]:
        fail(f"the data has a vocabulary of {corpus.vocab} words but the model was trained with {model_cfg['vocab']}")
    graph = _load_graph_text(text, path, sizes)
    model = task_impl.build_model(graph, bool(model_cfg.get("search", False)), seed)
    weights = state.get("best_model") or state["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        fail(f"{checkpoint} does not match the model it describes ({str(exc).splitlines()[0]})")
    model.to(dev)
    metrics = task_impl.evaluate(model, split, batch_size)
    loss, ppl = metrics["loss"], metrics["ppl"]
    line = f"{split} ppl {ppl:.2f}  (loss {loss:.4f} nats/token, {len(corpus.split(split)):,} tokens)"
    if corpus.floor_ppl is not None:
        line += f"  unigram {corpus.unigram_ppl:.2f}  floor {corpus.floor_ppl:.2f}"
    typer.echo(line)


# ----------------------------------------------------------------- compare
def _read_metrics(run_dir: Path) -> list[dict]:
    from essdsl.nas.runfiles import RunFileError, read_metrics

    try:
        return read_metrics(run_dir / "metrics.jsonl")
    except RunFileError as exc:
        fail(str(exc))


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR...", help="search (or train) run folders"),
    as_json: bool = typer.Option(False, "--json", help="print the table and the genotype diffs as one JSON object"),
) -> None:
    """Table of runs (space, supernet and from-scratch valid ppl, params, time) and the
    semantic diff of their genotypes; exit status 1 when the genotypes differ (as diff)."""
    from essdsl.cli.output import console, print_table

    runs, genotypes = [], []
    for run_dir in run_dirs:
        run = _read_run_manifest(run_dir)
        row = _compare_row(run_dir, run)
        runs.append(row)
        genotypes.append((str(run_dir), Path(row["genotype"]), run["sizes"]))
    diffs, notes = _genotype_diffs(genotypes)
    differ = any(d["edits"] for d in diffs)
    if as_json:
        typer.echo(json.dumps({"runs": runs, "diffs": diffs, "notes": notes, "genotypes_differ": differ}, indent=2))
        raise typer.Exit(1 if differ else 0)
    out = console()

    from essdsl.nas.health import format_ppl

    def ppl(value):
        return format_ppl(value) if value is not None else "-"

    columns = ["run", "space", "kind", "supernet valid ppl", "from-scratch valid ppl", "params", "time"]
    rows = [
        [
            r["run"], r["space"], r["kind"], ppl(r["supernet_valid_ppl"]),
            ppl(r["from_scratch_valid_ppl"]) + (f" ({r['from_scratch_epochs']} ep)" if r["from_scratch_epochs"] else ""),
            f"{r['params']:,}" if r["params"] is not None else "-", f"{r['time_s']:.0f}s" if r["time_s"] is not None else "-",
        ]
        for r in runs
    ]  # fmt: skip
    print_table(out, "runs", columns, rows, right=set(columns[3:]))
    out.print(
        "supernet valid ppl: the search's weight-sharing supernet at its last epoch; from-scratch valid ppl: the derived "
        "genotype trained alone (a search's final/ run, or a train run), the number that ranks architectures",
        markup=False, highlight=False,
    )  # fmt: skip
    for note in notes:
        out.print(note, markup=False, highlight=False)
    for d in diffs:
        out.print(f"{d['from']} -> {d['to']}: " + ("same genotype" if not d["edits"] else f"{len(d['edits'])} difference(s)"), markup=False, highlight=False)
        for line in d["edits"]:
            out.print(line, markup=False, highlight=False)
    if differ:
        raise typer.Exit(1)


def _compare_row(run_dir: Path, run: dict) -> dict:
    """One run for compare: which perplexity is which, parameters, time."""
    metrics = _read_metrics(run_dir)
    last = metrics[-1] if metrics else {}
    search = run.get("kind") == "search"
    genotype_path = run_dir / "genotype.space" if search else Path(run["space"]["path"])
    scratch = (_read_metrics(run_dir / "final") or [{}])[-1] if search else last
    return {
        "run": str(run_dir),
        "space": run["space"]["name"],
        "kind": run.get("kind", "?"),
        "supernet_valid_ppl": last.get("valid_ppl") if search else None,
        "from_scratch_valid_ppl": scratch.get("valid_ppl"),
        "from_scratch_epochs": scratch.get("epoch"),
        "params": _param_count(run, genotype_path),
        "time_s": last.get("elapsed_s"),
        "genotype": str(genotype_path),
    }


def _genotype_diffs(genotypes: list) -> tuple[list[dict], list[str]]:
    """Semantic diffs of every genotype against the first one, and notes on missing ones."""
    if len(genotypes) < 2:
        return [], []
    try:
        from essdsl.lang.diff import diff_graphs, render_edits
    except ImportError:
        fail("the semantic diff (essdsl.lang.diff) is not available in this installation")
    from essdsl.lang.check import load_graph
    from essdsl.errors import SpaceError

    base_name, base_path, base_sizes = genotypes[0]
    if not base_path.exists():
        return [], [f"{base_name}: no genotype yet (run 'essdsl derive {base_name}')"]
    diffs, notes = [], []
    try:
        base_graph = load_graph(base_path, base_sizes)
        for name, path, sizes in genotypes[1:]:
            if not path.exists():
                notes.append(f"{name}: no genotype yet")
                continue
            edits = render_edits(diff_graphs(base_graph, load_graph(path, sizes)))
            diffs.append({"from": base_name, "to": name, "edits": edits.splitlines() if edits else []})
    except SpaceError as exc:
        fail_space(exc)
    return diffs, notes


def _param_count(run: dict, genotype_path: Path) -> Optional[int]:
    """Weights of the derived (discrete) model at the run's sizes and vocabulary."""
    from essdsl.lang.check import load_graph
    from essdsl.errors import SpaceError

    if not genotype_path.exists():
        return None
    try:
        graph = load_graph(genotype_path, run["sizes"])
        from essdsl.compile import ModelConfig, build_model

        model = build_model(graph, ModelConfig(vocab=run["corpus"]["vocab"], search=False), impl="generated")
    except (SpaceError, ImportError):
        return None
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("arch."))


# ----------------------------------------------------------------- plot
@app.command()
def plot(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="a search or training run folder"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for the PNGs (default RUN_DIR/plots)"),
) -> None:
    """PNG plots of a run: perplexities over epochs and every architecture weight (θ, φ) over time."""
    _read_run_manifest(run_dir)
    metrics = _read_metrics(run_dir)
    if not metrics:
        fail(f"{run_dir} has no finished epoch yet (metrics.jsonl is empty or missing)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = out or run_dir / "plots"  # created by the first write (a clear error if it is a file)
    from essdsl.files import atomic_write_bytes

    def save(fig, name):
        import io

        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        atomic_write_bytes(folder / name, buffer.getvalue())
        written.append(folder / name)

    written: list[Path] = []
    epochs = [m["epoch"] for m in metrics]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [m["train_ppl"] for m in metrics], marker="o", label="train ppl")
    ax.plot(epochs, [m["valid_ppl"] for m in metrics], marker="o", label="valid ppl")
    run = _read_run_manifest(run_dir)
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
    save(fig, "perplexity.png")

    manifest = run.get("model_manifest", {}).get("arch", {})
    arch_names = list(metrics[-1].get("arch", {}))
    for name in arch_names:
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
        save(fig, f"{name.replace('.', '_')}.png")
    for path in written:
        typer.echo(str(path))
