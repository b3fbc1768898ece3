"""The fast paths of a generated model: one time step (and the loss) under
``torch.compile``, bf16 autocast, CUDA graphs on GPU, and a measurement of
activation memory.

The generated module computes its time loop in ``forward`` and one time step in
``step``; :func:`compile_step` puts only ``step`` under ``torch.compile`` (the
loop stays in Python, so the variable BPTT length never triggers a
recompilation).  The eager module is untouched: ``torch.jit.script`` and
``state_dict`` see the same module as before, and :func:`uncompile_step`
returns to eager.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch


@dataclass
class CompileInfo:
    mode: str
    cold_seconds: float = 0.0  # time of the first (compiling) call, filled by the first step
    variants: int = 0  # compiled variants so far (per batch size, grad mode, pattern of inputs needing gradients)
    compile_seconds: float = 0.0  # time of all the calls that compiled one


def _compiled_graphs() -> int:
    """How many graphs torch.compile has compiled in this process (0 where torch does not count them)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - a torch without dynamo's counters
        return 0
    return counters["stats"]["unique_graphs"]


def _is_compile_error(exc: Exception) -> bool:
    """Whether ``exc`` is torch.compile failing (dynamo or inductor), not the computation."""
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:  # pragma: no cover - a torch without dynamo
        return False
    return isinstance(exc, TorchDynamoException)


def _with_fallback(eager, compiled, info: CompileInfo, what: str, report, on_failure=None):
    """Call ``compiled``; its first call (the cold compile) is timed into ``info``
    and reported once.  A later call that compiles another variant (another batch
    size, evaluation, a new pattern of inputs needing gradients) is reported too,
    with its time: otherwise it looks like a step that hangs for seconds.  If a
    compile fails (no C++ compiler, an unsupported op; on the first call any
    error, later only torch.compile's own), ``eager`` is used from then on and
    ``report`` says so: a variant first needed after hours of search must not
    end the run."""
    state = {"fn": None}

    def call(*args):
        fn = state["fn"]
        if fn is eager:
            return eager(*args)
        graphs, start = _compiled_graphs(), time.perf_counter()
        try:
            out = compiled(*args)
        except Exception as exc:  # noqa: BLE001 - a compiler failure: run eager instead
            if fn is not None and not _is_compile_error(exc):
                raise
            state["fn"] = eager
            if on_failure is not None:
                on_failure()
            if report is not None:
                cause = getattr(exc, "inner_exception", None) or exc  # dynamo's wrapper says only "backend raised"
                first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
                report(f"torch.compile failed on {what} ({first[:200]}); running it eagerly instead (--no-compile skips the attempt)")
            return eager(*args)
        seconds = time.perf_counter() - start
        if fn is None:
            state["fn"] = compiled
            info.cold_seconds = info.compile_seconds = seconds
            info.variants = 1
            if report is not None:
                report(f"compiled {what} with torch.compile in {seconds:.1f} s (cached for later runs; --no-compile to skip)")
        elif _compiled_graphs() > graphs:
            info.variants += 1
            info.compile_seconds += seconds
            if report is not None:
                report(f"compiled variant {info.variants} of {what} (for another batch size, evaluation, "
                       f"or inputs that need gradients differently) in {seconds:.1f} s")
        return out

    return call


def compile_step(model, mode: str = "default", report=None) -> CompileInfo:
    """Compile ``model.step`` with ``torch.compile`` (``mode``: default, reduce-overhead,
    max-autotune).  Returns a :class:`CompileInfo` whose ``cold_seconds`` is set by
    the first call.  Torch caches compiled code between runs (inductor's FX graph
    cache), so the next run with the same shapes starts faster.

    If compilation fails (no C++ compiler, an unsupported op), the model falls
    back to its eager step and ``report`` (a callable taking a message) says so;
    ``report`` also gets the cold compile time once."""
    if not hasattr(type(model), "step"):
        raise TypeError("only generated models have a step() to compile (use impl='generated')")
    info = CompileInfo(mode=mode)
    eager = type(model).step.__get__(model)
    # Static shapes: a run steps at one training batch size and evaluates at one or
    # two others, each its own variant.  With torch's automatic dynamic shapes the
    # second batch size gives a dynamic variant whose guards then fail to evaluate
    # on every later call (torch 2.13: "'NoneType' object has no attribute 'size'"),
    # so evaluation recompiled at each call until torch's limit of 8 variants, and
    # ran eagerly after it.
    compiled = _with_fallback(eager, torch.compile(eager, mode=mode, fullgraph=False, dynamic=False), info, "one time step", report,
                              on_failure=lambda: uncompile_step(model))  # fmt: skip

    def step(xs, past, masks, arch):
        # A segment's first steps read past states from the detached hidden state.
        # Compiled as they come, each requires_grad pattern of the inputs is one more
        # variant (first step, second step of a three-step window, ...; each again
        # when only the architecture is differentiated), and torch stops compiling
        # after 8.  Where some past states carry a gradient and some do not, the
        # others get requires_grad too (fresh leaves whose gradient is dropped), so
        # each kind of backward has two variants: the first step, whose backward
        # stops at the hidden state, and every later one.  (Running those steps
        # eagerly is not an option: the compiled steps update BatchNorm's running
        # statistics in place, which the eager step saved for its backward.)
        if torch.is_grad_enabled():
            grads = [p.requires_grad for p in past]
            if any(grads) and not all(grads):
                past = [p if p.requires_grad else p.detach().requires_grad_() for p in past]
        return compiled(xs, past, masks, arch)

    model.step = step
    model._essdsl_compile_info = info
    if mode == "reduce-overhead":
        # CUDA graph trees must be told where an iteration begins: each forward
        # (one BPTT segment, whose backward runs before the next forward) starts
        # one, so the recorded per-step graphs replay in order and the buffers of
        # earlier segments may be reused.  The forward's results (stacked logits,
        # hidden) are ordinary tensors, never graph-owned buffers.
        forward = type(model).forward.__get__(model)

        def forward_new_generation(tokens, hidden):
            torch.compiler.cudagraph_mark_step_begin()
            return forward(tokens, hidden)

        model.forward = forward_new_generation
    return info


def compile_loss(loss, report=None):
    """``loss(logits, targets)`` under ``torch.compile`` with dynamic shapes (the
    BPTT length, hence the row count, varies per step).  For a cross-entropy over
    a large vocabulary inductor fuses log-softmax, the target pick and, in
    backward, softmax minus one-hot into passes over the logits, instead of
    materializing the log-probabilities, a zero-filled gradient and a copy: about
    a third less time for the loss at 2,240 × 10,000 on CPU.  Falls back to
    ``loss`` itself if compilation fails."""
    return _with_fallback(loss, torch.compile(loss, dynamic=True), CompileInfo(mode="default"), "the loss", report)


def uncompile_step(model) -> None:
    """Back to the eager step (e.g. before ``torch.jit.script`` or pickling)."""
    for attr in ("step", "forward", "_essdsl_compile_info"):
        if attr in model.__dict__:
            del model.__dict__[attr]


def is_compiled(model) -> bool:
    return "step" in model.__dict__


def autocast(device: str, enabled: bool):
    """bf16 autocast for matmuls; parameters (architecture weights included) stay fp32."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


class SavedActivations:
    """Counts the bytes autograd saves for backward (distinct storages), i.e. the
    activation memory of a training step, on any device::

        with SavedActivations() as saved:
            loss = model(...)
        saved.bytes
    """

    def __init__(self):
        self.bytes = 0
        self._seen: set = set()
        self._hooks = None

    def _pack(self, tensor):
        try:
            storage = tensor.untyped_storage()
            key = (storage.data_ptr(), tensor.device)
            if key not in self._seen and storage.data_ptr() != 0:
                self._seen.add(key)
                self.bytes += storage.nbytes()
        except (RuntimeError, NotImplementedError):  # e.g. tensors without storage
            pass
        return tensor

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self._hooks.__exit__(*exc)
        return False


# ----------------------------------------------------------------- when to compile
# What torch.compile costs and saves, measured on this project's 2-core CPU VM
# (README, Performance): a cold compile of one variant of the time step takes
# 13-37 s (the demo search compiles 5 variants and the loss, a training run 3-4);
# loaded from torch's on-disk cache a variant takes a few seconds; a compiled step
# of a small cell runs in about half the eager time (the demo: 65 s cached vs 130 s
# eager), of a large one (nhid 300, B=64) in 80%.  The policy assumes the smaller
# saving, so it compiles only where the run is long enough for that to repay the
# compile.
COLD_SECONDS_PER_VARIANT = {"cpu": 18.0, "cuda": 25.0}
WARM_SECONDS_PER_VARIANT = 3.0
SAVED_FRACTION = {"cpu": 0.3, "cuda": 0.5}


@dataclass
class CompileDecision:
    compile: bool
    reason: str  # one line: why


def _marker_path(key: str):
    """A file in torch's inductor cache folder that records that a run of ``key``
    (the model's code and shapes) compiled there, i.e. that its variants are cached."""
    import hashlib
    from pathlib import Path

    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:  # pragma: no cover - a torch without inductor
        return None
    return Path(cache_dir()) / "essdsl" / hashlib.sha256(key.encode()).hexdigest()[:32]


def mark_compiled(key: str) -> None:
    """Remember that ``key`` has compiled into torch's cache (see :func:`decide_compile`)."""
    path = _marker_path(key)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    except OSError:  # a read-only cache: the next run just estimates a cold compile
        pass


def time_eager_step(model, batch_size: int, bptt: int, vocab: int, device) -> float:
    """Seconds of one eager forward+backward of ``model`` on random tokens, leaving the
    model (BatchNorm statistics, gradients) and torch's random state as they were."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    was_training = model.training
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        tokens = torch.randint(0, vocab, (bptt, batch_size), device=device)
        model.train()

        def one_step() -> float:
            hidden = model.init_hidden(batch_size)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            logits, _ = model(tokens, hidden)
            torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), tokens.reshape(-1)).backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter() - start

        seconds = one_step()
        if seconds < 2.0:  # the first call pays one-time costs (allocations, lazy init); a second is cheap here
            seconds = one_step()
    for p in model.parameters():
        p.grad = None
    model.load_state_dict(state)
    model.train(was_training)
    return seconds


def decide_compile(step_seconds: float, steps: int, passes_per_step: float, variants: int, device_type: str, cached: bool) -> CompileDecision:
    """Whether compiling the time step pays off for a run of ``steps`` steps of
    ``passes_per_step`` forward+backward passes of ``step_seconds`` each (eager):
    the expected saving against the expected compile time of ``variants`` variants,
    cold or (``cached``) loaded from torch's cache."""
    kind = "cuda" if device_type == "cuda" else "cpu"
    eager = step_seconds * passes_per_step * steps
    saving = SAVED_FRACTION[kind] * eager
    per_variant = WARM_SECONDS_PER_VARIANT if cached else COLD_SECONDS_PER_VARIANT[kind]
    cost = per_variant * variants
    where = "found in torch's cache" if cached else "not in torch's cache yet"
    facts = (f"{steps:,} steps at {step_seconds * passes_per_step:.3f} s eager ≈ {eager:.0f} s; compiling would save ≈ {saving:.0f} s "
             f"and cost ≈ {cost:.0f} s ({variants} variants, {where})")  # fmt: skip
    if saving > cost:
        return CompileDecision(True, f"compiling the time step with torch.compile: {facts}; --no-compile to skip")
    return CompileDecision(False, f"running eagerly (no torch.compile): {facts}; --compile to force it")


def enable_compile_cache() -> None:
    """Keep inductor's on-disk FX graph cache on (torch's default) so every variant
    compiled once is loaded, not compiled, by later runs."""
    try:
        import torch._inductor.config as inductor_config
    except ImportError:  # pragma: no cover
        return
    inductor_config.fx_graph_cache = True
