"""``essdsl search | derive | train | eval | compare | plot``: runs on data.

Options, calls to the Python API (:mod:`essdsl.api`) and printing, nothing else: the
API builds the task and the model, keeps the run folder and trains; the progress bar
and the tables are this module's.  Torch is imported by the API inside the commands,
so ``essdsl check`` stays fast.  Errors are :class:`essdsl.errors.EssdslError`
subclasses, printed once by :func:`essdsl.cli.main` as ``essdsl: error: …`` (with
this command line's flag names), never as a traceback.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Optional

import typer

from essdsl import api
from essdsl.api import Observer, Run
from essdsl.cli import app, parallel, task_report
from essdsl.nas.runconfig import Interrupted
from essdsl.options import check_options


def _quote(value) -> str:
    """A path as one shell word (the printed resume hint must work when pasted)."""
    import shlex

    return shlex.quote(str(value))


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


def _settings(resume: Optional[Path], typed: set, **values) -> dict:
    """The settings to hand to the API: every value for a new run; for --resume only the
    ones typed on the command line (the run's own are used, and a typed one that
    differs is refused)."""
    if resume is None:
        return {k: v for k, v in values.items() if v is not None}
    return {k: v for k, v in values.items() if k in typed and v is not None}


def _task_options(task: Optional[str], given: Optional[list[str]]) -> Optional[dict]:
    from essdsl import tasks

    return tasks.parse_options(task or "lm", given) if given else None


def _how(resume: Optional[Path], typed: set, **values) -> dict:
    """How a run executes (device, threads, compile, final epochs): a resumed run keeps
    its own unless typed again."""
    return {k: (v if resume is None or k in typed or (k == "compile" and "compile_" in typed) else None) for k, v in values.items()}


def _interrupted(exc: Interrupted, hint: str) -> None:
    print(f"essdsl: interrupted at epoch {exc.epoch}, step {exc.step}; state saved to {exc.checkpoint}\nresume with: {hint}", file=sys.stderr)
    raise typer.Exit(130)


class _Progress(Observer):
    """What a run shows on stderr: notes, a rich progress bar (epoch, step, loss, ppl,
    tokens/s, ETA), one line per epoch, and the summaries of a finished search or training."""

    def __init__(self, language_model: bool = True):
        from essdsl.cli.output import console

        # Piped or redirected: no live bar (its frames end in \r), one line per epoch.
        self.console = console(stderr=True)
        self.language_model = language_model  # the bar shows a perplexity (else the loss alone) and tokens/s
        self.progress = None
        self.started = time.time()
        self.searched_run: Optional[Run] = None

    def note(self, text: str) -> None:
        print(f"essdsl: {text}", file=sys.stderr)

    def message(self, text: str) -> None:
        self.console.print(text)

    def start(self, total_steps: int, epochs: int, done: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  " + ("ppl {task.fields[ppl]:.2f}  {task.fields[tps]:,.0f} tok/s" if self.language_model
                       else "{task.fields[tps]:,.0f} items/s")),  # fmt: skip
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
            disable=not self.console.is_terminal,
        )
        self.task = self.progress.add_task("run", total=total_steps, completed=done, epoch=1, epochs=epochs, loss=0.0, ppl=0.0, tps=0.0)
        self.progress.__enter__()
        self.started = time.time()

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.__exit__(None, None, None)
            self.progress = None

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

    def epoch(self, record: dict, task) -> None:
        if not task_report.is_language_model(task):
            self.console.print(task_report.epoch_line(record, task, _epoch_span(record)), markup=False, highlight=False)
            return
        self.console.print(_epoch_line(record, task.corpus), markup=False, highlight=False)

    def searched(self, run: Run, record: Optional[dict], genotype) -> None:
        self.searched_run = run
        self.message(f"genotype written to {genotype.path} ({time.time() - self.started:.0f}s)")
        if not task_report.is_language_model(run.task):
            task_report.finish_message(run.task, record, self.console, what="supernet")
            task_report.report_health(record, run.task, self.console)
            typer.echo(genotype.text)
            return
        _finish_message(run.task.corpus, record, self.console, what="supernet")
        _report_health(record, self.console)
        typer.echo(genotype.text)

    def trained(self, run: Run) -> None:
        self.message(f"model written to {run.checkpoint}")
        if not task_report.is_language_model(run.task):
            task_report.finish_message(run.task, run.last, self.console)
            task_report.comparison(run, run.task, self.console, "trained genotype")
            return
        _finish_message(run.task.corpus, run.last, self.console)


def _is_language_model_run(task: Optional[str], resume: Optional[Path]) -> bool:
    """Whether the run about to start (or be resumed) is a language model's (its progress
    bar shows a perplexity)."""
    if task is None and resume is not None:
        from essdsl.nas.runs import read_manifest

        from essdsl.errors import EssdslError

        try:
            task = read_manifest(resume).get("task")
        except EssdslError:  # the API reports an unreadable run folder properly
            return True
    return task in (None, "lm")


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


def _finish_message(corpus, record: Optional[dict], out, what: str = "model") -> None:
    """The last epoch's valid perplexity next to the corpus's reference points, and
    whether it beats the unigram model."""
    if record is None:
        return
    fraction = record.get("epoch_fraction", 1.0)
    span = "last epoch" if fraction >= 1.0 else (f"after {fraction:.2g} of an epoch" if record["epoch"] == 1 else f"epoch {record['epoch']}, {fraction:.2g} of it")
    columns = [f"{what} ({span})", "unigram", "uniform (vocab)"]
    from essdsl.nas.health import format_ppl

    valid = format_ppl(record["valid_ppl"], record.get("valid_loss"))
    _reference_table(out, "validation perplexity", corpus, columns, [valid])
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


def _reference_table(out, title: str, corpus, columns: list, values: list) -> None:
    """One row of perplexities followed by the corpus's reference points: the unigram
    model, uniform guessing (the vocabulary) and, on the built-in corpus, the true floor."""
    from essdsl.cli.output import print_table

    row = [*values, f"{corpus.unigram_ppl:.2f}", f"{corpus.vocab:,}"]
    if corpus.floor_ppl is not None:
        columns = [*columns, "true floor exp(H)"]
        row.append(f"{corpus.floor_ppl:.2f}")
    print_table(out, title, columns, [row], right=set(columns))


def _final_summary(corpus, search_record: dict, final_record: dict, epochs: int, out) -> None:
    from essdsl.nas.health import format_ppl

    columns = ["supernet (search)", f"derived genotype ({epochs} epoch{'s' if epochs != 1 else ''} from scratch)", "unigram", "uniform (vocab)"]
    _reference_table(out, "validation perplexity of the search result", corpus, columns,
                     [format_ppl(search_record["valid_ppl"]), format_ppl(final_record["valid_ppl"])])  # fmt: skip
    verdict = "beats" if final_record["valid_ppl"] < corpus.unigram_ppl else "does NOT beat"
    out.print(f"the derived genotype {verdict} the unigram model ({format_ppl(final_record['valid_ppl'])} vs {corpus.unigram_ppl:.2f})", markup=False, highlight=False)


# ----------------------------------------------------------------- search
@app.command()
@parallel.data_parallel
def search(
    space_or_artifact: str = typer.Argument(..., metavar="SPACE_OR_ARTIFACT", help="a .space file, or a compiled artifact build/<name>.pt (with build/<name>.manifest.json beside it)"),
    task: Optional[str] = typer.Option(None, "--task", help="the task to run (default lm: language modelling; a resumed run keeps its own). Each task has its own default sizes and recipe: lm's are given below; chunking, ner, tagging: ninp = nhid = 64, 10 epochs (a search 3), batch 32, SGD lr 10, clip 5, dropout 0.33 (cell 0.1)"),
    task_option: Optional[list[str]] = typer.Option(None, "--task-option", metavar="KEY=VALUE", help="a task's own setting (repeatable); 'essdsl tasks' lists every task's options"),
    data: Optional[str] = typer.Option(None, "--data", help="the task's data: lm, a folder with train.txt/valid.txt/test.txt (PTB format; default: the built-in synthetic corpus); chunking/ner/tagging, a CoNLL folder; forecast, a CSV file"),
    ninp: Optional[int] = typer.Option(None, "--ninp", help="embedding size (default 300 with --data, 32 on the synthetic corpus)"),
    nhid: Optional[int] = typer.Option(None, "--nhid", help="hidden size (default 300 with --data, 32 on the synthetic corpus)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="epochs (default 50 with --data, 3 on the synthetic corpus)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="stop after this many training steps in total (default: no limit)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="training batch size (default 256 with --data, 32 on the synthetic corpus)"),
    eval_batch_size: Optional[int] = typer.Option(None, "--eval-batch-size", help="batch size of the validation pass (default: the task's, 10 for lm)"),
    bptt: Optional[int] = typer.Option(None, "--bptt", help="mean BPTT length (default 35 with --data, 20 on the synthetic corpus)"),
    order: str = typer.Option("first", "--order", help="architecture gradient: 'first' (at the current weights) or 'second' (one unrolled step, finite-difference Hessian)"),
    seed: int = typer.Option(0, "--seed", help="random seed (also seeds the synthetic corpus)"),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available), cpu or cuda"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (default: 1 for nhid <= 128, else torch's default)"),
    synthetic_tokens: Optional[int] = typer.Option(None, "--synthetic-tokens", help="training tokens of the built-in corpus when --data is omitted (default 60000)"),
    out: Optional[Path] = typer.Option(None, "--out", help="run folder (default runs/<space-name>-<timestamp>)"),
    resume: Optional[Path] = typer.Option(None, "--resume", help="continue the run in this folder from its last checkpoint"),
    lr: Optional[float] = typer.Option(None, "--lr", help="SGD learning rate of the model weights (default: the task's, 20 for lm)"),
    wd: Optional[float] = typer.Option(None, "--wd", help="weight decay of the model weights (default: the task's, 5e-7 for lm)"),
    clip: Optional[float] = typer.Option(None, "--clip", help="gradient-norm clip of the model weights (default: the task's, 0.25 for lm)"),
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
    typed = _typed_options("search")
    settings = _settings(
        resume, typed, ninp=ninp, nhid=nhid, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        eval_batch_size=eval_batch_size, bptt=bptt, order=order, seed=seed, lr=lr, wd=wd, clip=clip, arch_lr=arch_lr,
        arch_wd=arch_wd, dropout=dropout, dropouth=dropouth, dropoutx=dropoutx, dropouti=dropouti, dropoute=dropoute,
        synthetic_tokens=synthetic_tokens,
    )  # fmt: skip
    if data is not None:
        settings["data"] = data
    how = _how(resume, typed, device=device, threads=threads, compile=compile_, final_epochs=final_epochs)
    progress = _Progress(_is_language_model_run(task, resume))
    try:
        run = api.search(space_or_artifact, task, out=out, resume=resume, task_options=_task_options(task, task_option),
                         observer=progress, **how, **settings)  # fmt: skip
    except Interrupted as exc:
        folder = progress.searched_run.folder if progress.searched_run is not None else exc.checkpoint.parent
        _interrupted(exc, f"essdsl search {_quote(space_or_artifact)} --resume {_quote(folder)}")
    final, record = run.final, run.last
    if not task_report.is_language_model(run.task):
        return  # the final training printed its table against the baselines
    if final is not None and final.metrics and record is not None:
        epochs_trained = run.manifest["options"].get("final_epochs") or len(final.metrics)
        _final_summary(run.task.corpus, record, final.metrics[-1], epochs_trained, progress.console)


# ----------------------------------------------------------------- derive
@app.command()
def derive(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="a search run folder"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="where to write the genotype (default RUN_DIR/genotype.space)"),
) -> None:
    """Derive the genotype again from a search run's last checkpoint."""
    genotype = api.derive(run_dir, output)
    typer.echo(genotype.text, nl=False)
    print(f"essdsl: genotype written to {genotype.path}", file=sys.stderr)


# ----------------------------------------------------------------- train
@app.command()
@parallel.data_parallel
def train(
    genotype: str = typer.Argument(..., metavar="GENOTYPE", help="a genotype .space file (no choices left)"),
    task: Optional[str] = typer.Option(None, "--task", help="the task to run (default lm: language modelling; a resumed run keeps its own). Each task has its own default sizes and recipe: lm's are given below; chunking, ner, tagging: ninp = nhid = 64, 10 epochs (a search 3), batch 32, SGD lr 10, clip 5, dropout 0.33 (cell 0.1)"),
    task_option: Optional[list[str]] = typer.Option(None, "--task-option", metavar="KEY=VALUE", help="a task's own setting (repeatable); 'essdsl tasks' lists every task's options"),
    data: Optional[str] = typer.Option(None, "--data", help="the task's data: lm, a folder with train.txt/valid.txt/test.txt (default: the built-in synthetic corpus); chunking/ner/tagging, a CoNLL folder; forecast, a CSV file"),
    ninp: Optional[int] = typer.Option(None, "--ninp", help="embedding size (default 850 with --data, 32 synthetic)"),
    nhid: Optional[int] = typer.Option(None, "--nhid", help="hidden size (default 850 with --data, 32 synthetic)"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="epochs (default 300 with --data, 8 synthetic)"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="stop after this many steps in total"),
    lr: Optional[float] = typer.Option(None, "--lr", help="SGD learning rate (default: the task's, 20 for lm)"),
    wd: Optional[float] = typer.Option(None, "--wd", help="weight decay (default: the task's, 8e-7 for lm)"),
    clip: Optional[float] = typer.Option(None, "--clip", help="gradient-norm clip (default: the task's, 0.25 for lm)"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="batch size (default 64 with --data, 32 synthetic)"),
    eval_batch_size: Optional[int] = typer.Option(None, "--eval-batch-size", help="batch size of the validation pass (default: the task's, 10 for lm)"),
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
    typed = _typed_options("train")
    settings = _settings(
        resume, typed, ninp=ninp, nhid=nhid, epochs=epochs, max_steps=max_steps, lr=lr, wd=wd, clip=clip,
        batch_size=batch_size, eval_batch_size=eval_batch_size, bptt=bptt, seed=seed, asgd=asgd, synthetic_tokens=synthetic_tokens,
    )  # fmt: skip
    if data is not None:
        settings["data"] = data
    how = _how(resume, typed, device=device, threads=threads, compile=compile_)
    try:
        api.train(genotype, task, out=out, resume=resume, task_options=_task_options(task, task_option),
                  observer=_Progress(_is_language_model_run(task, resume)), **how, **settings)  # fmt: skip
    except Interrupted as exc:
        _interrupted(exc, f"essdsl train {_quote(genotype)} --resume {_quote(exc.checkpoint.parent)}")


# ----------------------------------------------------------------- eval
@app.command(name="eval")
def evaluate(
    checkpoint: Path = typer.Argument(..., metavar="CHECKPOINT", help="RUN_DIR/model.pt of 'essdsl train' (or a search's checkpoint.pt, or a run folder)"),
    split: str = typer.Option("valid", "--split", help="valid or test"),
    data: Optional[str] = typer.Option(None, "--data", help="data folder (default: the data the run used)"),
    device: str = typer.Option("auto", "--device", help="auto (cuda if available), cpu or cuda"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="evaluation batch size (default: the run's validation batch size; lm: 10)"),
    bptt: int = typer.Option(35, "--bptt", help="evaluation segment length"),
    task: Optional[str] = typer.Option(None, "--task", help="the task to evaluate on (default: the run's own)"),
    task_option: Optional[list[str]] = typer.Option(None, "--task-option", metavar="KEY=VALUE", help="a task's own setting (repeatable); 'essdsl tasks' lists every task's options"),
) -> None:
    """Print the metrics of a trained model on the valid or test split (lm: perplexity; tagging: span F1; forecast: RMSE, MAE, RSE, CORR)."""
    check_options(locals())
    result = api.evaluate(checkpoint, split, task=task, device=device, batch_size=batch_size, bptt=bptt,
                          task_options=_task_options(task, task_option), data=data)  # fmt: skip
    if "ppl" not in result:  # another task than language modelling
        typer.echo(task_report.eval_line(result, split))
        return
    line = f"{split} ppl {result['ppl']:.2f}  (loss {result['loss']:.4f} nats/token, {result['size']:,} tokens)"
    if result["data"].get("floor_ppl") is not None:
        line += f"  unigram {result['data']['unigram_ppl']:.2f}  floor {result['data']['floor_ppl']:.2f}"
    typer.echo(line)


# ----------------------------------------------------------------- compare
@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., metavar="RUN_DIR...", help="search (or train) run folders"),
    as_json: bool = typer.Option(False, "--json", help="print the table and the genotype diffs as one JSON object"),
) -> None:
    """Table of runs (space, supernet and from-scratch valid ppl, params, time) and the
    semantic diff of their genotypes; exit status 1 when the genotypes differ (as diff)."""
    from essdsl.cli.output import console, print_table
    from essdsl.nas.health import format_ppl

    result = api.compare(run_dirs)
    runs, diffs, notes, differ = result["runs"], result["diffs"], result["notes"], result["genotypes_differ"]
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        raise typer.Exit(1 if differ else 0)
    out = console()

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




# ----------------------------------------------------------------- plot
@app.command()
def plot(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="a search or training run folder"),
    out: Optional[Path] = typer.Option(None, "--out", help="folder for the PNGs (default RUN_DIR/plots)"),
) -> None:
    """PNG plots of a run: perplexities over epochs and every architecture weight (θ, φ) over time."""
    for path in api.plot(run_dir, out):
        typer.echo(str(path))
