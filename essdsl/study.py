"""Studies: spaces × strategies × seeds under one budget, run as separate processes, then one table.

A study file (TOML) names the spaces, the strategies (``darts`` first or
second order, ``random`` sampling of K genotypes, a ``fixed`` genotype such as
the LSTM), the seeds, the task, the data and the budget.  ``run`` turns it into
*jobs*, each a short sequence of ``python -m essdsl search|train|eval``
processes writing to one run folder per (space, strategy, seed[, sample]);
``report`` reads only those folders' files.

Budget (the same for every strategy, counted in weight-update steps):

* ``train_steps`` T: every from-scratch training of a genotype (the DARTS
  winner, each random sample, the fixed genotype) runs exactly T steps with the
  seed of its run, so every reported metric comes from the same training.
* ``search_steps`` S: what a strategy spends choosing.  DARTS searches the
  supernet for S steps (each step also takes an architecture step), derives,
  and trains the genotype for T: S + T steps.  Random samples K genotypes and
  trains each for T: K·T steps, and its winner (lowest validation perplexity)
  needs no retraining; equal budgets therefore need K·T = S + T, which loading
  checks.  A fixed genotype has nothing to choose and spends T.
  Steps are equal, compute is not (a supernet step costs more than a step of
  one genotype, second order more still): the table reports search and
  training seconds beside the metric.

Resuming: a step is done when the study wrote its marker (``study-done.json``,
or ``test.json`` for an evaluation) after the process exited 0.  A step folder
with a checkpoint but no marker is continued with ``--resume``; one without a
checkpoint is started again from nothing.  Every start, skip, finish and
failure is appended to ``study-log.jsonl`` in the study folder.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from essdsl.files import atomic_write_bytes, atomic_write_text
from essdsl.options import RANGES
from essdsl.nas.sample import SampleError
from essdsl.errors import EssdslError

TASKS = ("lm",)
DONE = "study-done.json"
TEST = "test.json"
LOG = "study-log.jsonl"
# epochs given with --max-steps so that the step budget, not the epoch count, ends a run:
# the largest count the options table accepts (essdsl/options.py)
UNBOUNDED_EPOCHS = int(RANGES["epochs"].high)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class StudyError(EssdslError):
    """The study file is invalid, or a run of the study failed."""


# ----------------------------------------------------------------- the study file
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpaceEntry(_Strict):
    path: str
    label: Optional[str] = None


class DartsStrategy(_Strict):
    kind: Literal["darts"]
    order: Literal["first", "second"] = "first"
    label: Optional[str] = None
    spaces: Optional[list[str]] = None  # labels of the spaces it runs on (default: all)


class RandomStrategy(_Strict):
    kind: Literal["random"]
    samples: int = Field(ge=1)
    label: Optional[str] = None
    spaces: Optional[list[str]] = None


class FixedStrategy(_Strict):
    kind: Literal["fixed"]
    genotype: str
    label: Optional[str] = None


Strategy = Union[DartsStrategy, RandomStrategy, FixedStrategy]


class Budget(_Strict):
    search_steps: int = Field(ge=0)
    train_steps: int = Field(ge=1)


class ModelOptions(_Strict):
    """Options passed to every search and training process."""

    ninp: Optional[int] = Field(default=None, ge=1)
    nhid: Optional[int] = Field(default=None, ge=1)
    batch_size: Optional[int] = Field(default=None, ge=1)
    bptt: Optional[int] = Field(default=None, ge=1)
    synthetic_tokens: Optional[int] = Field(default=None, ge=1)
    threads: int = Field(default=1, ge=1)
    compile: bool = False
    device: str = "cpu"


class StudyFile(_Strict):
    name: Optional[str] = None
    task: Literal[TASKS] = "lm"  # type: ignore[valid-type]
    data: Optional[str] = None  # folder with train/valid/test.txt; omitted: the built-in corpus
    seeds: list[int] = Field(min_length=1)
    budget: Budget
    model: ModelOptions = ModelOptions()
    space: list[SpaceEntry] = Field(default_factory=list)
    strategy: list[Strategy] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self):
        searching = [s for s in self.strategy if s.kind != "fixed"]
        if searching and not self.space:
            raise ValueError("strategies 'darts' and 'random' need at least one [[space]]")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds are repeated")
        total = self.budget.search_steps + self.budget.train_steps
        for s in self.strategy:
            if s.kind == "random" and s.samples * self.budget.train_steps != total:
                raise ValueError(
                    f"random with samples = {s.samples} spends {s.samples} × {self.budget.train_steps} = "
                    f"{s.samples * self.budget.train_steps} steps but darts spends search_steps + train_steps = {total}; "
                    f"for equal budgets use samples = {total / self.budget.train_steps:g} or change the budget"
                )
            if s.kind == "darts" and self.budget.search_steps < 1:
                raise ValueError("strategy 'darts' needs budget.search_steps >= 1")
        return self


def _label(text: str) -> str:
    return _SAFE.sub("-", text).strip("-") or "x"


@dataclass(frozen=True)
class Study:
    path: Path
    name: str
    spec: StudyFile
    out: Path  # the study folder

    def resolve(self, relative: str) -> Path:
        """A path of the study file, relative to the file's folder."""
        p = Path(relative)
        return p if p.is_absolute() else (self.path.parent / p)

    @property
    def data(self) -> Optional[Path]:
        return self.resolve(self.spec.data).resolve() if self.spec.data else None

    def strategy_label(self, s) -> str:
        if s.label:
            return _label(s.label)
        if s.kind == "darts":
            return f"darts-{s.order}"
        if s.kind == "random":
            return f"random-{s.samples}"
        return _label(Path(s.genotype).stem)

    def space_label(self, entry: SpaceEntry) -> str:
        return _label(entry.label or Path(entry.path).stem)


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-after"))
        parts.append(f"{where}: {err['msg']}" if where else err["msg"])
    return "; ".join(parts)


def load_study(path: Union[str, Path], out: Optional[Path] = None) -> Study:
    """Read and validate a study file; raises :class:`StudyError` with ``path: message``."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: the same parser as a package
        try:
            import tomli as tomllib
        except ImportError:
            raise StudyError("reading a study file needs Python 3.11 (tomllib) or the 'tomli' package") from None
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudyError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{path}: not valid TOML ({exc})") from None
    try:
        spec = StudyFile.model_validate(raw)
    except ValidationError as exc:
        raise StudyError(f"{path}: {_pydantic_message(exc)}") from None
    name = _label(spec.name or path.stem)
    study = Study(path, name, spec, out or Path("runs") / f"study-{name}")
    for entry in spec.space:
        if not study.resolve(entry.path).is_file():
            raise StudyError(f"{path}: space {entry.path} does not exist (paths are relative to the study file)")
    for s in spec.strategy:
        if s.kind == "fixed" and not study.resolve(s.genotype).is_file():
            raise StudyError(f"{path}: genotype {s.genotype} does not exist (paths are relative to the study file)")
    if study.data is not None and not study.data.is_dir():
        raise StudyError(f"{path}: data folder {spec.data} does not exist")
    labels = [study.space_label(e) for e in spec.space]
    if len(set(labels)) != len(labels):
        raise StudyError(f"{path}: two spaces have the same label; give them distinct 'label's")
    for s in spec.strategy:
        unknown = [name for name in (getattr(s, "spaces", None) or []) if name not in labels]
        if unknown:
            raise StudyError(f"{path}: strategy {study.strategy_label(s)} names unknown space(s) {', '.join(unknown)} (labels: {', '.join(labels)})")
    slabels = [study.strategy_label(s) for s in spec.strategy]
    if len(set(slabels)) != len(slabels):
        raise StudyError(f"{path}: two strategies have the same label; give them distinct 'label's")
    return study


# ----------------------------------------------------------------- jobs
@dataclass
class Step:
    """One process of a job: a search, a training or a test evaluation."""

    kind: Literal["search", "train", "eval"]
    folder: Optional[Path]  # the run folder it writes (eval: the run it evaluates)
    fresh: list[str]  # arguments of a new run (eval: built when it runs)
    resume: list[str] = field(default_factory=list)  # arguments that continue it
    # eval of a random unit: the sample with the lowest validation perplexity, chosen when it runs
    candidates: list[Path] = field(default_factory=list)

    @property
    def marker(self) -> Path:
        return self.folder / (TEST if self.kind == "eval" else DONE)


@dataclass
class Unit:
    """A row of the study: one (space, strategy, seed); random has one folder per sample."""

    space: str  # space label, or the fixed genotype's label
    strategy: str
    kind: str
    seed: int
    folder: Path
    finals: list[Path]  # training run folders whose genotype is a candidate (one, or K samples)
    search: Optional[Path] = None  # the search run folder (darts)


def _common_args(study: Study) -> list[str]:
    m = study.spec.model
    args = ["--device", m.device, "--threads", str(m.threads)]
    for option, value in (("--ninp", m.ninp), ("--nhid", m.nhid), ("--batch-size", m.batch_size), ("--bptt", m.bptt)):
        if value is not None:
            args += [option, str(value)]
    if study.data is not None:
        args += ["--data", str(study.data)]
    elif m.synthetic_tokens is not None:
        args += ["--synthetic-tokens", str(m.synthetic_tokens)]
    return args


def _train_step(study: Study, genotype: Path, folder: Path, seed: int) -> Step:
    budget = ["--max-steps", str(study.spec.budget.train_steps), "--epochs", str(UNBOUNDED_EPOCHS)]
    threads = ["--threads", str(study.spec.model.threads), "--device", study.spec.model.device]
    return Step("train", folder, ["train", str(genotype), "--seed", str(seed), "--out", str(folder), *budget, *_common_args(study)],
                ["train", str(genotype), "--resume", str(folder), *threads])  # fmt: skip


def _train_steps(study: Study, genotype: Path, folder: Path, seed: int) -> list[Step]:
    return [_train_step(study, genotype, folder, seed), Step("eval", folder, [])]


def _sample_genotypes(study: Study, space_path: Path, folder: Path, k: int, seed: int) -> list[Path]:
    """Write (once) the K genotypes a random unit trains: ``essdsl sample SPACE -n K --seed SEED``."""
    from essdsl.lang.check import load_graph_text
    from essdsl.nas.sample import draw, sample_file_name

    data = space_path.read_bytes()
    import hashlib

    from essdsl.errors import SpaceError

    try:
        graph = load_graph_text(data.decode("utf-8"), str(space_path))
    except SpaceError as exc:
        raise SampleError(exc.render()) from None
    paths = []
    for sample in draw(graph, str(space_path), hashlib.sha256(data).hexdigest(), k, seed):
        path = folder / "samples" / sample_file_name(graph.name, sample, seed)
        if not path.exists() or path.read_text(encoding="utf-8") != sample.text:
            atomic_write_text(path, sample.text)
        paths.append(path)
    return paths


def plan(study: Study) -> tuple[list[Unit], list[list[Step]]]:
    """The study's units (rows) and jobs (step sequences that may run in parallel)."""
    units, jobs = [], []
    spec = study.spec
    for seed in spec.seeds:
        for strategy in spec.strategy:
            slabel = study.strategy_label(strategy)
            if strategy.kind == "fixed":
                genotype = study.resolve(strategy.genotype)
                folder = study.out / slabel / slabel / f"seed{seed}"
                units.append(Unit(slabel, slabel, "fixed", seed, folder, [folder / "final"]))
                jobs.append(_train_steps(study, genotype, folder / "final", seed))
                continue
            for entry in spec.space:
                if strategy.spaces is not None and study.space_label(entry) not in strategy.spaces:
                    continue
                space_path = study.resolve(entry.path)
                folder = study.out / study.space_label(entry) / slabel / f"seed{seed}"
                if strategy.kind == "darts":
                    search = folder / "search"
                    units.append(Unit(study.space_label(entry), slabel, "darts", seed, folder, [folder / "final"], search))
                    search_args = ["search", str(space_path), "--order", strategy.order, "--seed", str(seed), "--out", str(search),
                                   "--max-steps", str(spec.budget.search_steps), "--epochs", str(UNBOUNDED_EPOCHS), *_common_args(study)]  # fmt: skip
                    resume = ["search", str(space_path), "--resume", str(search), "--threads", str(spec.model.threads), "--device", spec.model.device]
                    jobs.append([Step("search", search, search_args, resume), *_train_steps(study, search / "genotype.space", folder / "final", seed)])
                else:
                    try:
                        genotypes = _sample_genotypes(study, space_path, folder, strategy.samples, seed)
                    except SampleError as exc:
                        raise StudyError(f"{study.path}: cannot sample {entry.path}: {exc}") from None
                    finals = [folder / f"sample{i:03d}" for i in range(len(genotypes))]
                    units.append(Unit(study.space_label(entry), slabel, "random", seed, folder, finals))
                    # one job: the samples one after the other, then the test of the chosen one only
                    jobs.append([*(_train_step(study, g, f, seed) for g, f in zip(genotypes, finals)), Step("eval", None, [], candidates=finals)])
    return units, jobs


# ----------------------------------------------------------------- running
class _Log:
    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()

    def write(self, event: str, step: Step, **extra) -> None:
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": event, "kind": step.kind, "folder": str(step.folder), **extra}
        with self.lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")




def _environment(study: Study) -> dict:
    env = dict(os.environ)
    env["ESSDSL_COMPILE"] = "1" if study.spec.model.compile else "0"
    env["ESSDSL_FINAL_EPOCHS"] = "0"  # the study trains the derived genotype itself, with the study's budget
    # the worktree's essdsl first, as `python -m essdsl` from the checkout would
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Runner:
    def __init__(self, study: Study, jobs: int = 1, echo=None):
        self.study = study
        self.jobs = jobs
        self.log = _Log(study.out / LOG)
        self.echo = echo or (lambda text: print(text, file=sys.stderr))
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.env = _environment(study)
        self.counts = {"done": 0, "skipped": 0}
        self.lock = threading.Lock()

    def _count(self, key: str) -> None:
        with self.lock:
            self.counts[key] += 1

    def _run_step(self, step: Step) -> bool:
        if step.candidates:
            step.folder = best_candidate(step.candidates)
            if step.folder is None:
                self.failures.append(f"eval: no sample of {step.candidates[0].parent} finished with a finite validation perplexity")
                return False
        if step.marker.exists():
            self.log.write("skip", step)
            self._count("skipped")
            return True
        if step.kind == "eval":
            return self._evaluate(step)
        if (step.folder / ("checkpoint.pt" if step.kind == "search" else "model.pt")).exists():
            args = step.resume
        else:
            if step.folder.exists():  # started but killed before its first checkpoint
                shutil.rmtree(step.folder)
            args = step.fresh
        resumed = args is step.resume
        self.log.write("start", step, resumed=resumed, args=args)
        self.echo(f"study: {'resuming' if resumed else 'running'} {step.kind} {step.folder}")
        step.folder.parent.mkdir(parents=True, exist_ok=True)
        started = time.time()
        proc = subprocess.run([sys.executable, "-m", "essdsl", *args], env=self.env, capture_output=True, text=True)
        seconds = round(time.time() - started, 3)
        if step.folder.exists() and step.kind != "eval":
            (step.folder / "study-output.txt").write_text(proc.stdout + proc.stderr, encoding="utf-8")
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            self.log.write("fail", step, returncode=proc.returncode, message=tail)
            if proc.returncode in (130, -2):
                self.stop.set()
            else:
                self.failures.append(f"{step.kind} {step.folder}: {tail}")
            return False
        atomic_write_text(step.marker, json.dumps({"seconds": seconds, "args": args}) + "\n")
        self.log.write("done", step, seconds=seconds)
        self._count("done")
        return True

    def _evaluate(self, step: Step) -> bool:
        """The test perplexity of a trained run, from the API (in this process: torch is
        imported by the first evaluation)."""
        from essdsl import api

        self.log.write("start", step, resumed=False, args=["evaluate", str(step.folder), "test"])
        self.echo(f"study: running eval {step.folder}")
        started = time.time()
        try:
            result = api.evaluate(step.folder, split="test", device=self.study.spec.model.device)
        except EssdslError as exc:
            self.log.write("fail", step, message=str(exc))
            self.failures.append(f"eval {step.folder}: {exc}")
            return False
        seconds = round(time.time() - started, 3)
        atomic_write_text(step.marker, json.dumps({"split": "test", "ppl": result["ppl"], "seconds": seconds}) + "\n")
        self.log.write("done", step, seconds=seconds)
        self._count("done")
        return True

    def _run_job(self, job: list[Step]) -> None:
        for step in job:
            if self.stop.is_set() or not self._run_step(step):
                return

    def run(self, jobs: list[list[Step]]) -> None:
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = [pool.submit(self._run_job, job) for job in jobs]
            try:
                for f in futures:
                    f.result()
            except KeyboardInterrupt:
                # the processes share the terminal's SIGINT: they checkpoint and exit; start no more
                self.stop.set()
                for f in futures:
                    f.cancel()
                raise


SETTINGS = "study-settings.json"


def _settings(study: Study) -> dict:
    """What every run of the study shares; runs made under other settings cannot be mixed in."""
    spec = study.spec
    return {"task": spec.task, "data": str(study.data) if study.data else None,
            "budget": spec.budget.model_dump(), "model": spec.model.model_dump(exclude={"threads", "device", "compile"})}  # fmt: skip


def run_study(study: Study, jobs: int = 1, echo=None) -> Runner:
    """Run (or continue) every step of the study; seeds, spaces and strategies may be added between runs."""

    settings = _settings(study)
    recorded = _read_json(study.out / SETTINGS)
    if recorded is not None and recorded != settings:
        changed = ", ".join(k for k in settings if recorded.get(k) != settings[k])
        raise StudyError(f"{study.out} holds runs made with other settings ({changed} changed in {study.path}); "
                         f"choose another --out, or delete the folder to start again")  # fmt: skip
    _units, steps = plan(study)
    study.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(study.out / SETTINGS, json.dumps(settings, indent=2, sort_keys=True) + "\n")
    shutil.copyfile(study.path, study.out / "study.toml")
    runner = Runner(study, jobs, echo)
    runner.run(steps)
    return runner


# ----------------------------------------------------------------- results
def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _metrics(folder: Path) -> list[dict]:
    try:
        lines = (folder / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _elapsed(folder: Path) -> float:
    rows = _metrics(folder)
    return float(rows[-1].get("elapsed_s", 0.0)) if rows else 0.0


def _process_seconds(folder: Optional[Path]) -> float:
    """Wall seconds of the processes (search or train, and eval) that the study ran for a folder."""
    if folder is None:
        return 0.0
    return sum(float((_read_json(folder / name) or {}).get("seconds", 0.0)) for name in (DONE, TEST))


def _genotype_of(folder: Path) -> Optional[Path]:
    manifest = _read_json(folder / "manifest.json")
    if not manifest:
        return None
    return Path(manifest["space"]["path"])


def _params(genotype: Path, folder: Path) -> Optional[int]:
    """Weights of the trained genotype at the run's sizes and vocabulary (essdsl.lang.stats, no torch)."""
    from essdsl.lang.check import load_graph
    from essdsl.errors import SpaceError
    from essdsl.lang.stats import StatsError, stats_dict

    manifest = _read_json(folder / "manifest.json") or {}
    sizes = dict(manifest.get("sizes") or {})
    vocab = (manifest.get("corpus") or {}).get("vocab")
    if vocab:
        sizes["vocab"] = vocab
    try:
        return stats_dict(load_graph(genotype, sizes))["params"]["derived_min"]
    except (SpaceError, StatsError, OSError):
        return None


@dataclass
class Result:
    space: str
    strategy: str
    kind: str  # darts | random | fixed
    seed: int
    test_ppl: Optional[float]
    valid_ppl: Optional[float]
    params: Optional[int]
    search_s: float
    train_s: float
    wall_s: float  # every process of the unit, start to exit (imports and evaluations included)
    genotype: Optional[Path]
    folder: Path
    complete: bool


def _final_valid(folder: Path) -> Optional[float]:
    """Validation perplexity at the end of a finished training run (None if unfinished or not finite)."""
    rows = _metrics(folder)
    if not (folder / DONE).exists() or not rows or not math.isfinite(rows[-1]["valid_ppl"]):
        return None
    return float(rows[-1]["valid_ppl"])


def best_candidate(folders: list[Path]) -> Optional[Path]:
    """The finished training run with the lowest final validation perplexity (ties: the first)."""
    scored = [(v, i) for i, v in enumerate(map(_final_valid, folders)) if v is not None]
    return folders[min(scored)[1]] if scored else None


def unit_result(unit: Unit) -> Result:
    """The reported model of a unit: its one final, or the random sample with the lowest validation perplexity."""
    search_s = _elapsed(unit.search) if unit.search is not None else 0.0
    wall_s = _process_seconds(unit.search) + sum(_process_seconds(f) for f in unit.finals)
    best = best_candidate(unit.finals)
    if best is None:
        return Result(unit.space, unit.strategy, unit.kind, unit.seed, None, None, None, search_s, 0.0, wall_s, None, unit.folder, False)
    if unit.kind == "random":  # choosing cost the other samples' trainings
        search_s = sum(_elapsed(f) for f in unit.finals if f != best)
    test = (_read_json(best / TEST) or {}).get("ppl")
    complete = test is not None and all((f / DONE).exists() for f in unit.finals)
    genotype = _genotype_of(best)
    params = _params(genotype, best) if genotype is not None else None
    return Result(unit.space, unit.strategy, unit.kind, unit.seed, test, _final_valid(best), params, search_s, _elapsed(best), wall_s, genotype, best, complete)


def _mean_std(values: list[float]) -> tuple[Optional[float], Optional[float]]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _pm(mean: Optional[float], std: Optional[float]) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {std:.2f}" if std is not None else f"{mean:.2f}"


GROUP_COLUMNS = ("space", "strategy", "runs", "test ppl", "valid ppl", "params", "search s", "train s", "wall s", "best seed")
RUN_COLUMNS = ("space", "strategy", "seed", "test_ppl", "valid_ppl", "params", "search_s", "train_s", "wall_s", "complete", "folder", "genotype")


def group_results(results: list[Result]) -> list[dict]:
    groups: dict[tuple[str, str], list[Result]] = {}
    for r in results:
        groups.setdefault((r.space, r.strategy), []).append(r)
    rows = []
    for (space, strategy), members in groups.items():
        done = [r for r in members if r.test_ppl is not None]
        test_mean, test_std = _mean_std([r.test_ppl for r in done])
        valid_mean, valid_std = _mean_std([r.valid_ppl for r in done])
        params = sorted({r.params for r in done if r.params is not None})
        best = min(done, key=lambda r: r.test_ppl) if done else None
        rows.append({
            "space": space, "strategy": strategy, "runs": f"{len(done)}/{len(members)}",
            "test_mean": test_mean, "test_std": test_std, "valid_mean": valid_mean, "valid_std": valid_std,
            "params": params, "search_s": _mean_std([r.search_s for r in done])[0], "train_s": _mean_std([r.train_s for r in done])[0], "wall_s": _mean_std([r.wall_s for r in done])[0],
            "best": best, "members": members,
        })  # fmt: skip
    return rows


def _params_text(params: list[int]) -> str:
    if not params:
        return "-"
    return f"{params[0]:,}" if len(params) == 1 else f"{params[0]:,}–{params[-1]:,}"


def _seconds(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def table_rows(groups: list[dict]) -> list[list[str]]:
    return [
        [g["space"], g["strategy"], g["runs"], _pm(g["test_mean"], g["test_std"]), _pm(g["valid_mean"], g["valid_std"]),
         _params_text(g["params"]), _seconds(g["search_s"]), _seconds(g["train_s"]), _seconds(g["wall_s"]), str(g["best"].seed) if g["best"] else "-"]
        for g in groups
    ]  # fmt: skip


def markdown_table(groups: list[dict]) -> str:
    lines = ["| " + " | ".join(GROUP_COLUMNS) + " |", "|" + "|".join("---" if i < 2 else "---:" for i in range(len(GROUP_COLUMNS))) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(groups)]
    return "\n".join(lines) + "\n"


def _csv(rows: list[list], header) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def groups_csv(groups: list[dict]) -> str:
    def num(v):
        return "" if v is None else f"{v:.4f}"

    header = ("space", "strategy", "runs", "test_ppl_mean", "test_ppl_std", "valid_ppl_mean", "valid_ppl_std", "params_min", "params_max", "search_s_mean", "train_s_mean", "wall_s_mean", "best_seed")
    rows = [
        [g["space"], g["strategy"], g["runs"], num(g["test_mean"]), num(g["test_std"]), num(g["valid_mean"]), num(g["valid_std"]),
         g["params"][0] if g["params"] else "", g["params"][-1] if g["params"] else "", num(g["search_s"]), num(g["train_s"]), num(g["wall_s"]),
         g["best"].seed if g["best"] else ""]
        for g in groups
    ]  # fmt: skip
    return _csv(rows, header)


def runs_csv(results: list[Result]) -> str:
    rows = [[r.space, r.strategy, r.seed, "" if r.test_ppl is None else f"{r.test_ppl:.4f}", "" if r.valid_ppl is None else f"{r.valid_ppl:.4f}",
             "" if r.params is None else r.params, f"{r.search_s:.3f}", f"{r.train_s:.3f}", f"{r.wall_s:.3f}", r.complete, str(r.folder), str(r.genotype or "")]
            for r in results]  # fmt: skip
    return _csv(rows, RUN_COLUMNS)


def plot_png(groups: list[dict], title: str) -> bytes:
    """Test perplexity of every run, one column per (space, strategy), the mean as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(groups) + 2), 4))
    for x, g in enumerate(groups):
        values = [(r.seed, r.test_ppl) for r in g["members"] if r.test_ppl is not None]
        if g["test_mean"] is not None:
            ax.bar(x, g["test_mean"], width=0.6, color="#cfd8e3", edgecolor="#5a6b7d")
        for i, (seed, v) in enumerate(values):
            ax.plot(x + (i - (len(values) - 1) / 2) * 0.12, v, "o", color="#1f4e79")
    names = [g["space"] if g["space"] == g["strategy"] else f"{g['space']}\n{g['strategy']}" for g in groups]
    ax.set_xticks(range(len(groups)), names, fontsize=7)
    ax.set_ylabel("test perplexity (lower is better)")
    tops = [g["test_mean"] for g in groups if g["test_mean"] is not None]
    if tops:
        low = min(r.test_ppl for g in groups for r in g["members"] if r.test_ppl is not None)
        ax.set_ylim(bottom=max(0.0, low * 0.9))
    ax.set_title(f"{title}: one dot per seed, bar = mean")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def best_diffs(groups: list[dict]) -> str:
    """Semantic diff (essdsl.lang.diff) from the best searched or sampled genotype to the best of every other group.

    A fixed genotype (e.g. the LSTM) is a reference only when nothing was
    searched: diffs within the spaces' own cell shape are the readable ones."""
    from essdsl.lang.check import load_graph
    from essdsl.lang.diff import diff_graphs, render_edits
    from essdsl.errors import SpaceError

    best = [g["best"] for g in groups if g["best"] is not None and g["best"].genotype is not None]
    if not best:
        return ""
    chosen = [r for r in best if r.kind != "fixed"] or best
    reference = min(chosen, key=lambda r: r.test_ppl)
    out = [f"reference: the best {'searched or sampled ' if chosen is not best else ''}run, {reference.space} / {reference.strategy} seed {reference.seed} "
           f"(test ppl {reference.test_ppl:.2f}, {reference.genotype})\n"]  # fmt: skip
    try:
        ref_graph = load_graph(reference.genotype)
        for r in best:
            if r is reference:
                continue
            edits = diff_graphs(ref_graph, load_graph(r.genotype))
            text = render_edits(edits).rstrip("\n") if edits else "(the same cell)"
            out.append(f"\n### {r.space} / {r.strategy} (seed {r.seed}, test ppl {r.test_ppl:.2f})\n\n```\n{text}\n```\n")
    except SpaceError as exc:
        out.append(f"\n(cannot diff: {exc})\n")
    return "".join(out)


@dataclass
class Report:
    results: list[Result]
    groups: list[dict]
    markdown: str
    files: list[Path]


def report_study(study: Study) -> Report:

    units, _jobs = plan(study) if study.out.exists() else ([], [])
    if not units:
        raise StudyError(f"{study.out} holds no runs of this study yet; run 'essdsl study run {study.path}' first")
    results = [unit_result(u) for u in units]
    if not any(r.test_ppl is not None for r in results):
        raise StudyError(f"no run of {study.path} has finished yet (study folder {study.out})")
    groups = group_results(results)
    spec = study.spec
    header = (
        f"# Study {study.name}\n\n"
        f"task {spec.task}, data {spec.data or 'built-in synthetic corpus'}, seeds {', '.join(map(str, spec.seeds))}; "
        f"budget per run: {spec.budget.search_steps} search + {spec.budget.train_steps} training steps "
        f"(random: samples × {spec.budget.train_steps}); test ppl of the reported genotype trained from scratch, "
        f"mean ± std (sample) over seeds; search s and train s: seconds of training steps (metrics.jsonl); wall s: every process of the run, start to exit.\n\n"
    )
    diffs = best_diffs(groups)
    markdown = header + markdown_table(groups) + ("\n## Genotype diffs of each group's best\n\n" + diffs if diffs else "")
    files = {
        "table.md": markdown.encode("utf-8"),
        "table.csv": groups_csv(groups).encode("utf-8"),
        "runs.csv": runs_csv(results).encode("utf-8"),
        "metric.png": plot_png(groups, study.name),
    }
    written = []
    for name, data in files.items():
        atomic_write_bytes(study.out / name, data)
        written.append(study.out / name)
    return Report(results, groups, markdown, written)


__all__ = [
    "Budget",
    "Report",
    "Result",
    "Runner",
    "Study",
    "StudyError",
    "StudyFile",
    "load_study",
    "plan",
    "report_study",
    "run_study",
    "unit_result",
]
