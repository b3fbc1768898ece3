"""Where and how a run executes: the device, torch's threads, and whether one time step
runs under ``torch.compile`` (decided per run from a timed eager step).

Messages for the user go to a ``report(text)`` callable (the CLI prints them as
``essdsl: text`` on stderr); nothing here prints.
"""

from __future__ import annotations

import json
import math
from typing import Callable, Optional

from essdsl.nas.runconfig import SettingError

Report = Callable[[str], None]


def choose_device(name: str):
    """``auto`` (cuda if torch sees one), ``cpu`` or ``cuda`` as a torch.device."""
    import torch

    if name not in ("auto", "cpu", "cuda"):
        raise SettingError("device", "{setting} must be auto, cpu or cuda, not '{value}'", value=name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SettingError("device", "{setting} cuda was asked for but torch sees no CUDA device (use {setting} cpu or auto)")
    return torch.device(name)


def set_threads(threads: Optional[int], width: int) -> None:
    """Small cells are Python-overhead bound: one intra-op thread is fastest and
    avoids oversubscribing a shared machine.  Larger cells use torch's default."""
    import torch

    if threads is not None:
        if threads < 1:
            raise SettingError("threads", "{setting} must be a positive integer, got {value}", value=threads)
        torch.set_num_threads(threads)
    elif width <= 128:
        torch.set_num_threads(1)


def compile_mode(enabled: bool, device) -> Optional[str]:
    """torch.compile mode for the time step: CUDA graphs on GPU, inductor's default on CPU."""
    if not enabled:
        return None
    return "reduce-overhead" if device.type == "cuda" else "default"


def compile_key(space_sha: str, model_cfg, cfg, dev) -> str:
    """What decides the compiled variants of a run: model code and shapes, torch version."""
    import torch

    fields = [space_sha, json.dumps(model_cfg.to_dict(), sort_keys=True), cfg.batch_size, cfg.eval_batch_size, cfg.search, cfg.order, dev.type, torch.__version__]
    return json.dumps(fields)


def apply_compile_policy(model, requested: Optional[bool], restored: Optional[bool], dev, cfg, task, key: str, report: Report) -> bool:
    """Decide whether to run the time step under torch.compile, report why in one line,
    and compile it (and the task's training loss) if so.  ``requested``: the caller's
    choice (None: decide); ``restored``: the choice of the run being resumed (wins over
    the estimate)."""
    from essdsl.compile.fast import _marker_path, compile_loss, compile_step, decide_compile, enable_compile_cache, time_eager_step
    from essdsl.tasks.corpus import expected_seq_len

    from essdsl.nas import distributed

    if distributed.compile_refusal(distributed.current()):
        chosen, reason = False, distributed.compile_refusal(distributed.current())
    elif restored is not None:
        chosen, reason = restored, f"{'compiling the time step' if restored else 'running eagerly'}, as the run was started (--compile/--no-compile to change)"
    elif requested is not None:
        chosen, reason = requested, ("compiling the time step: --compile or ESSDSL_COMPILE=1" if requested else "running eagerly: --no-compile or ESSDSL_COMPILE=0")
    elif not hasattr(task, "corpus"):  # the estimate below times the language model's step
        chosen, reason = False, "running eagerly: the compile estimate is made for language models only (--compile to compile)"
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
    report(reason)
    if chosen:
        enable_compile_cache()
        for module in stepped_modules(model):  # the LM itself; a tagger's two cells; a forecaster's one
            compile_step(module, mode=compile_mode(True, dev), report=report)
        if hasattr(task, "criterion"):  # the compiled path compiles the training loss too (evaluation stays eager)
            task.criterion = compile_loss(task.criterion, report=report)
    return chosen


def stepped_modules(model) -> list:
    """The generated modules in ``model`` (itself or its cells) whose time step can be compiled."""
    return [m for m in model.modules() if hasattr(type(m), "step")]


def mark_compiled(model, key: str) -> None:
    """After a compiled run: its variants are in torch's cache now (the next policy estimate uses that)."""
    from essdsl.compile import fast

    if any(getattr(getattr(m, "_essdsl_compile_info", None), "variants", None) for m in stepped_modules(model)):
        fast.mark_compiled(key)
