"""Tasks: the data, the model around a compiled cell, the loss and the metrics of one job.

A task is a plug-in: one module that implements :class:`essdsl.tasks.base.Task`, plus one
:func:`register` call below naming it.  ``--task NAME`` (search, train, eval; default
``lm``) picks it, and the run manifest records the name and options so that resuming
or evaluating a run uses the same task.

Options.  A task declares its own settings as a small table of :class:`TaskOption`
rows in its registry entry, and the user sets them with ``--task-option KEY=VALUE``
(repeatable).  One generic flag rather than one flag per task option, because the
command's ``--help`` stays one screen however many tasks are registered, yet lists
every task's options with their types, defaults and meaning (the table lives here,
without importing the task's module, so ``--help`` stays torch-free and fast); values
are converted and checked against the table before any work starts.  The language
model's options ``data`` and ``synthetic_tokens`` keep their historical flags
``--data`` and ``--synthetic-tokens`` too.

Presets.  A registered name may be a preset of another task: the same factory with
some options fixed (``register("chunking", ..., preset={"scheme": "chunk"})``); the
manifest records the name the user chose.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from essdsl.errors import EssdslError


class TaskError(EssdslError, ValueError):
    """An unknown task or a task option it does not accept."""


@dataclass(frozen=True)
class TaskOption:
    """One setting a task accepts: ``--task-option name=VALUE``, converted by ``type``."""

    name: str
    type: Callable[[str], Any]
    default: Any = None
    help: str = ""

    def convert(self, task: str, text: str) -> Any:
        try:
            return self.type(text)
        except (TypeError, ValueError):
            kind = getattr(self.type, "__name__", "value")
            raise TaskError(f"task '{task}': option '{self.name}' expects {kind}, got '{text}'") from None


@dataclass(frozen=True)
class TaskSpec:
    """A registry entry: how to make the task and which options it takes."""

    name: str
    factory: str  # "module:callable"; called as factory(seed=..., **settings, **options)
    summary: str
    options: tuple = ()
    preset: dict = field(default_factory=dict)  # options this name fixes
    # "module:callable"; called as defaults(kind, options) -> the run settings of a
    # "search" or "train" run with these options (sizes, epochs, lr, dropouts, ...)
    defaults: str = ""

    def load_factory(self) -> Callable[..., Any]:
        return _load(self.factory)


def _load(reference: str) -> Callable[..., Any]:
    module, _, attribute = reference.partition(":")
    target = importlib.import_module(module)
    for part in attribute.split("."):
        target = getattr(target, part)
    return target


TASKS: dict[str, TaskSpec] = {}


def register(name: str, factory: str, summary: str, options: tuple = (), preset: Optional[dict] = None,
             of: Optional[str] = None, defaults: str = "") -> TaskSpec:  # fmt: skip
    """Add a task, or with ``of`` a preset of a registered one (its factory, options and
    defaults, with ``preset`` fixed)."""
    if of is not None:
        base = TASKS[of]
        factory, options, defaults = base.factory, base.options, base.defaults
    TASKS[name] = TaskSpec(name, factory, summary, tuple(options), dict(preset or {}), defaults)
    return TASKS[name]


def get(name: str) -> TaskSpec:
    if name not in TASKS:
        raise TaskError(f"unknown task '{name}' (known: {', '.join(sorted(TASKS))})")
    return TASKS[name]


def parse_options(name: str, pairs: list[str]) -> dict:
    """``["KEY=VALUE", ...]`` -> the task's options, converted and checked against its table."""
    spec = get(name)
    table = {o.name: o for o in spec.options}
    options: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise TaskError(f"a task option is KEY=VALUE, got '{pair}'")
        if key not in table:
            known = ", ".join(sorted(table)) or "none"
            raise TaskError(f"task '{name}' has no option '{key}' (its options: {known})")
        if key in spec.preset:
            raise TaskError(f"task '{name}' fixes {key}={spec.preset[key]}; choose '{name}'s base task to change it")
        options[key] = table[key].convert(name, value)
    return options


def create(name: str, seed: int, options: Optional[dict] = None, **settings):
    """The configured task ``name``: its factory called with the run's seed, the
    run-wide ``settings`` the task reads (LM: bptt, dropouts) and its options
    (defaults from its table, then the preset, then ``options``)."""
    spec = get(name)
    values = {o.name: o.default for o in spec.options}
    values.update(spec.preset)
    values.update(options or {})
    return spec.load_factory()(seed=seed, **settings, **values)


def defaults(name: str, kind: str, options: Optional[dict] = None) -> dict:
    """The settings a ``kind`` ("search" or "train") run of task ``name`` starts from
    (sizes, epochs, batch size, learning rate, dropouts, final epochs), given its options."""
    spec = get(name)
    values = {o.name: o.default for o in spec.options}
    values.update(spec.preset)
    values.update(options or {})
    return _load(spec.defaults)(kind, values)


def _optional_int(text: str) -> Optional[int]:
    return None if text.lower() in ("", "none") else int(text)


_optional_int.__name__ = "int"

register(
    "lm",
    "essdsl.tasks.lm:LanguageModelTask.load",
    "word-level language modelling (built-in corpus, or PTB/WikiText folders)",
    defaults="essdsl.tasks.lm:defaults",
    options=(
        TaskOption("data", str, None, "folder with train.txt/valid.txt/test.txt (also --data); default: the built-in corpus"),
        TaskOption("synthetic_tokens", _optional_int, None, "training tokens of the built-in corpus (also --synthetic-tokens)"),
    ),
)

register(
    "forecast",
    "essdsl.tasks.forecast:ForecastTask.load",
    "multivariate time-series forecasting (built-in Lorenz-96 series, or a CSV file)",
    defaults="essdsl.tasks.forecast:defaults",
    options=(
        TaskOption("data", str, None, "CSV file: a header line, one row per step, oldest first; default: the built-in Lorenz-96 series"),
        TaskOption("target", str, None, "comma-separated series to forecast (default: every series)"),
        TaskOption("columns", str, None, "comma-separated CSV columns read as series (default: every column but the time column)"),
        TaskOption("time_column", str, None, "the CSV's time column (default: a first column named time, date, ...)"),
        TaskOption("transform", str, "none", "none, or logdiff: 100 x the log-differences of every series"),
        TaskOption("window", int, 12, "input steps per sample"),
        TaskOption("horizon", int, 1, "forecast the values this many steps after the window"),
        TaskOption("data_seed", int, 0, "seed of the built-in series (the run's seed does not change the data)"),
        TaskOption("steps", _optional_int, None, "length of the built-in series (default 2000)"),
        TaskOption("variables", _optional_int, None, "variables of the built-in series (default 8)"),
    ),
)
# The classic VAR setting on statsmodels' US macro data: quarterly growth (100 x
# log-differences) of real GDP, consumption and investment, forecast from two years.
register(
    "macrodata",
    "",
    "forecast preset: growth of realgdp, realcons, realinv from --task-option data=.../macrodata.csv",
    preset={"columns": "realgdp,realcons,realinv", "transform": "logdiff", "window": 8},
    of="forecast",
)

def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


_flag.__name__ = "bool"

register(
    "tagging",
    "essdsl.tasks.tagging:TaggingTask.load",
    "sequence tagging (chunking, NER) on CoNLL column files with a bidirectional CRF tagger around the cell",
    options=(
        TaskOption("data", str, None, "folder with train.txt, test.txt and valid.txt or dev.txt (CoNLL columns)"),
        TaskOption("columns", str, None, "column names in file order: word, tag, '-' (ignored), others are features"),
        TaskOption("scheme", str, None, "labels the model is trained on: bio or iobes (files may use bio, iob1, iobes)"),
        TaskOption("chars", _flag, None, "a character CNN next to the word embedding"),
        TaskOption("crf", _flag, None, "a CRF over the tag scores (false: per-token softmax)"),
        TaskOption("max_train_sentences", _optional_int, None, "train on the first N training sentences"),
    ),
    defaults="essdsl.tasks.tagging:command_line_defaults",
)
register("chunking", "", "CoNLL-2000 chunking (word POS chunk)", of="tagging", preset={"preset": "chunking"})
register("ner", "", "CoNLL-2003 named entities (word POS chunk NE; words and characters)", of="tagging", preset={"preset": "ner"})
