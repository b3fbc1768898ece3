"""Time one supernet training step (forward + backward) per implementation.

Rows, each measured in the same run on the same weights and tokens, after a
warm-up step, as the median over ``repeats`` rounds in which every row takes
one step in turn (so the machine's speed drifting hits all rows alike):

* ``reference``: the edge-by-edge interpreter (the correctness oracle; baseline);
* ``official-darts``: the official DARTS search model re-implemented from its code
  (``official_darts.py``: nine normalisations by one shared BatchNorm and the
  dropout-mask products per time step, log-softmax and NLL loss); only for spaces
  with DARTS's parameter layout, e.g. ``spaces/darts_rnn.space``;
* ``generated``: the generated straight-line module, eager;
* ``generated+compile``: the same with one time step and the loss under
  ``torch.compile``, as ``essdsl search`` and ``train`` run it;
* ``generated+compile+bf16``: that under bf16 autocast (architecture weights fp32);
* ``gemm-floor``: the supernet's GEMM work (3 × forward matmul FLOPs per token ×
  tokens) divided by the rate a large plain matmul reaches on this machine.

Those rows time forward + backward (``step`` = ``fwd+bwd``).  At the batch sizes
in ``search_batches`` the whole search step is timed too, as ``essdsl search``
runs it (architecture update, then weight update, through the trainer), first
order (``step`` = ``search-1st``) and second order (``search-2nd``), for the
reference interpreter and the compiled module, each with its GEMM floor.

Also: the estimated (``essdsl stats --memory``) vs measured activation memory,
and on request the loss difference of bf16 vs fp32 after N training steps.
Used by ``bench/supernet_step.py`` and ``essdsl bench``.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from essdsl.lang.check import load_graph
from essdsl.compile import ModelConfig, build_manifest, build_model
from essdsl.compile.fast import SavedActivations, autocast, compile_loss, compile_step
from essdsl.tasks.corpus import Corpus
from essdsl.nas.runconfig import RunConfig
from essdsl.nas.trainer import Trainer
from essdsl.tasks.base import Batch
from essdsl.tasks.lm import LanguageModelTask, cross_entropy
from essdsl.lang.stats import memory_estimate, stats_dict
from essdsl.benchmark.official_darts import OfficialDartsLM, load_essdsl_state

NO_DROPOUT = dict(dropout=0.0, dropouth=0.0, dropoutx=0.0, dropouti=0.0, dropoute=0.0)


FWD_BWD = "fwd+bwd"
FWD_BWD_PASSES = 3  # forward, input gradients, weight gradients
# GEMM work of a search step in forward passes' worth.  An architecture-only
# gradient (weights frozen) needs the forward and the input gradients (2), a
# weight gradient all three GEMMs (3).  First order: arch step (2) + weight step
# (3).  Second order: unrolled step's weight gradient (3), validation gradient of
# arch and weights (3), two finite-difference arch gradients (2 + 2), weight step (3).
SEARCH_STEPS = {"search-1st": ("first", 2 + 3), "search-2nd": ("second", 3 + 3 + 2 + 2 + 3)}


@dataclass
class Row:
    impl: str
    batch: int
    dtype: str
    seconds_per_step: float
    note: str = ""
    step: str = FWD_BWD


def _step_fn(model, tokens, targets, bf16: bool, device: str, loss_fn: Callable = cross_entropy):
    hidden = model.init_hidden(tokens.size(1))

    def step():
        model.zero_grad(set_to_none=True)
        with autocast(device, bf16):
            logits, _ = model(tokens, hidden)
            loss = loss_fn(logits.float(), targets)
        loss.backward()
        return loss

    return step


def _compiled_model(graph, config, device: str):
    """The generated module with its time step compiled (CUDA graphs on GPU) and the
    compiled loss, as search and train run them: (model, CompileInfo, loss)."""
    model = build_model(graph, config, impl="generated")
    info = compile_step(model, mode="reduce-overhead" if device == "cuda" else "default")
    return model, info, compile_loss(cross_entropy)


def _floor_row(forward_flops_per_token: float, passes: int, tokens: int, rate: float, batch: int, step: str,
               column: str, log) -> Row:  # fmt: skip
    """The GEMM floor of a step doing ``passes`` forward passes' worth of GEMMs over
    ``tokens`` at ``rate``; logged with ``column`` (dtype or step) like the timed rows."""
    work = forward_flops_per_token * passes * tokens
    note = f"{work / 1e9:.3g} GFLOP at {rate / 1e9:.1f} GFLOP/s"
    log(f"  B={batch:<4} {'gemm-floor':<24} {column} {work / rate:8.3f} s/step  ({note})")
    return Row("gemm-floor", batch, "fp32", work / rate, note, step=step)


def _search_step_fn(model, graph, config, order: str, batch: int, tokens, targets, loss, run_dir: Path):
    """One full search step (arch update, then weight update) of ``model`` through
    the :class:`Trainer`, on fixed training and validation segments."""
    vocab = config.vocab
    ids = torch.randint(0, vocab, (batch * (tokens.size(0) + 2),)).numpy()
    corpus = Corpus("random", [str(i) for i in range(vocab)], ids, ids, ids)
    cfg = RunConfig(search=True, batch_size=batch, bptt=tokens.size(0), lr=1.0, order=order)
    manifest = build_manifest(graph, config, model)
    task = LanguageModelTask(corpus, bptt=cfg.bptt, criterion=loss)
    trainer = Trainer(model, task, cfg, run_dir, manifest=manifest, device=tokens.device)
    train_batch = Batch((tokens, targets), targets.numel())
    search_batch = Batch((targets, tokens), targets.numel())  # another segment of the same shape
    trainer.carry = model.init_hidden(batch)
    trainer.search_carry = model.init_hidden(batch)

    def step():
        trainer.arch_update(train_batch, search_batch)
        trainer.weight_update(train_batch)

    return step


def _search_rows(graph, config, batch, tokens, targets, state, repeats, device, include_reference, include_compile,
                 forward_flops_per_token, log) -> list[Row]:  # fmt: skip
    """Time the full first- and second-order search steps, round-robin, with their floors."""
    models = {}
    if include_reference:
        models["reference"] = (build_model(graph, config, impl="reference"), cross_entropy)
    if include_compile:
        compiled, _, compiled_loss = _compiled_model(graph, config, device)
        models["generated+compile"] = (compiled, compiled_loss)
    else:
        models["generated"] = (build_model(graph, config, impl="generated"), cross_entropy)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        steps = {}
        for impl, (model, loss) in models.items():
            model.load_state_dict(state)
            model.to(device).train()
            for kind, (order, _) in SEARCH_STEPS.items():
                steps[(impl, kind)] = _search_step_fn(model, graph, config, order, batch, tokens, targets, loss, Path(tmp))
        log(f"  B={batch:<4} warming up {len(steps)} search steps (first and second order), then {repeats} rounds")
        medians, rate = _time_with_peak(steps, repeats, device)
    for (impl, kind), seconds in medians.items():
        rows.append(Row(impl, batch, "fp32", seconds, step=kind))
        log(f"  B={batch:<4} {impl:<24} {kind:<10} {seconds:8.3f} s/step")
    for kind, (_, passes) in SEARCH_STEPS.items():
        rows.append(_floor_row(forward_flops_per_token, passes, tokens.numel(), rate, batch, kind, f"{kind:<10}", log))
    return rows


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_steps(steps: dict[str, Callable], repeats: int, device: str = "cpu") -> dict[str, float]:
    """Median seconds per call of each step: every step is warmed up once (compiling
    what compiles), then the steps are timed round-robin, one call each per round,
    so that a change in the machine's speed during the run hits every row alike."""
    for step in steps.values():
        step()
    _sync(device)
    times: dict[str, list] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


PEAK = "matmul-peak"
PEAK_SIZE = 2048


def _matmul_fn(device: str, size: int = PEAK_SIZE) -> Callable:
    """One large fp32 matmul: its rate is this machine's practical GEMM peak."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    return lambda: a @ b


def _time_with_peak(steps: dict, repeats: int, device: str) -> tuple[dict, float]:
    """Median seconds per step of each of ``steps`` and, timed in the same rounds,
    this machine's matmul rate (FLOP/s) for the floor."""
    medians = time_steps({**steps, PEAK: _matmul_fn(device)}, repeats, device)
    return medians, 2 * PEAK_SIZE**3 / medians.pop(PEAK)


def official_nll(log_prob: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The official training loss: NLL of the model's log-probabilities."""
    return F.nll_loss(log_prob.reshape(-1, log_prob.size(-1)), targets.reshape(-1))


def _official_model(graph, vocab: int, state: dict) -> Optional[torch.nn.Module]:
    """The official-DARTS-shaped module when the space has exactly DARTS's layout, else None."""
    steps = sum(1 for s in graph.mixed_nodes())
    if steps == 0 or graph.dims.get(graph.output) is None:
        return None
    candidate = OfficialDartsLM(vocab, graph.dims[graph.output], steps=steps)
    try:
        load_essdsl_state(candidate, state)
    except (RuntimeError, KeyError):
        return None
    return candidate


def run(
    space: str,
    nhid: int = 300,
    vocab: int = 10000,
    bptt: int = 35,
    batches: tuple = (64, 256),
    repeats: int = 3,
    device: str = "cpu",
    bf16_batches: tuple = (64,),
    include_reference: bool = True,
    include_compile: bool = True,
    search_batches: tuple = (64,),
    log: Callable[[str], None] = print,
) -> dict:
    graph = load_graph(space, {"ninp": nhid, "nhid": nhid, "vocab": vocab})
    config = ModelConfig(vocab=vocab, search=True, **NO_DROPOUT)
    forward_flops_per_token = stats_dict(graph)["flops_per_token"]["supernet"]
    log(f"{graph.name}: nhid {nhid}, vocab {vocab}, T {bptt}, {device}, {torch.get_num_threads()} threads, "
        f"median of {repeats} rounds")  # fmt: skip
    rows: list[Row] = []
    memory: list[dict] = []
    for batch in batches:
        torch.manual_seed(0)
        tokens = torch.randint(0, vocab, (bptt, batch), device=device)
        targets = torch.randint(0, vocab, (bptt, batch), device=device)
        base = build_model(graph, config, impl="generated").to(device).train()
        state = {k: v.clone() for k, v in base.state_dict().items()}

        entries: dict[str, tuple] = {}  # name -> (model, bf16, loss)

        def add(name: str, model, bf16: bool = False, loss: Callable = cross_entropy) -> None:
            if isinstance(model, OfficialDartsLM):  # the official parameter layout
                load_essdsl_state(model, state)
            else:
                model.load_state_dict(state)
            entries[name] = (model.to(device).train(), bf16, loss)

        if include_reference:
            add("reference", build_model(graph, config, impl="reference"))
        official = _official_model(graph, vocab, state)
        if official is not None:
            add("official-darts", official, loss=official_nll)  # it returns log-probabilities, as the official model
        add("generated", base)
        compile_info = None
        if include_compile:
            compiled, compile_info, compiled_loss = _compiled_model(graph, config, device)
            add("generated+compile", compiled, loss=compiled_loss)
            if batch in bf16_batches:
                add("generated+compile+bf16", compiled, bf16=True, loss=compiled_loss)
        elif batch in bf16_batches:
            add("generated+bf16", build_model(graph, config, impl="generated"), bf16=True)
        log(f"  B={batch:<4} warming up {len(entries)} implementations, then {repeats} rounds of one step each")
        steps = {name: _step_fn(model, tokens, targets, bf16, device, loss) for name, (model, bf16, loss) in entries.items()}
        medians, rate = _time_with_peak(steps, repeats, device)
        for name, seconds in medians.items():
            row = Row(name, batch, "bf16" if entries[name][1] else "fp32", seconds)
            rows.append(row)
            log(f"  B={batch:<4} {name:<24} {row.dtype:<5} {seconds:8.3f} s/step")
        if compile_info is not None:
            log(f"         (cold compile {compile_info.cold_seconds:.1f} s)")
        # activation memory: estimate from the IR vs bytes autograd keeps
        with SavedActivations() as saved:
            logits, _ = base(tokens, base.init_hidden(batch))
            loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1))
        del logits, loss
        estimate = memory_estimate(graph, batch, bptt)
        memory.append({"batch": batch, "activations_estimate_bytes": estimate["activations_bytes"],
                       "activations_measured_bytes": saved.bytes})  # fmt: skip
        log(f"  B={batch:<4} activations: estimate {estimate['activations_bytes'] / 2**20:,.0f} MiB, "
            f"measured {saved.bytes / 2**20:,.0f} MiB")  # fmt: skip
        rows.append(_floor_row(forward_flops_per_token, FWD_BWD_PASSES, bptt * batch, rate, batch, FWD_BWD, f"{'fp32':<5}", log))
        if batch in search_batches:
            rows += _search_rows(graph, config, batch, tokens, targets, state, repeats, device, include_reference,
                                 include_compile, forward_flops_per_token, log)  # fmt: skip
    return summarize(rows, memory, graph.name, device)


def summarize(rows: list[Row], memory: list[dict], name: str, device: str) -> dict:
    def best(batch, names, step=FWD_BWD):
        times = [r.seconds_per_step for r in rows
                 if r.batch == batch and r.impl in names and r.dtype == "fp32" and r.step == step]  # fmt: skip
        return min(times) if times else None

    fast = ("generated", "generated+compile")
    result = {
        "space": name,
        "device": device,
        "rows": [r.__dict__ for r in rows],
        "memory": memory,
    }
    for batch in sorted({r.batch for r in rows}):
        ours, ref = best(batch, fast), best(batch, ("reference",))
        official, floor = best(batch, ("official-darts",)), best(batch, ("gemm-floor",))
        suffix = f"b{batch}"
        result[f"speedup_vs_reference_{suffix}"] = ref / ours if ref and ours else None
        result[f"speedup_vs_official_darts_{suffix}"] = official / ours if official and ours else None
        result[f"floor_fraction_{suffix}"] = floor / ours if floor and ours else None
        for kind in SEARCH_STEPS:
            ours, ref, floor = (best(batch, names, kind) for names in (fast, ("reference",), ("gemm-floor",)))
            if ours is not None:
                key = kind.replace("-", "_")  # search_1st, search_2nd
                result[f"{key}_speedup_vs_reference_{suffix}"] = ref / ours if ref else None
                result[f"{key}_floor_fraction_{suffix}"] = floor / ours if floor else None
    return result


def print_table(result: dict, log: Callable[[str], None] = print) -> None:
    log("")
    log(f"{'impl':<26} {'step':<10} {'batch':>5} {'dtype':>5} {'s/step':>9} {'vs ref':>7}")
    refs = {(r["batch"], r["step"]): r["seconds_per_step"] for r in result["rows"] if r["impl"] == "reference"}
    for r in result["rows"]:
        ratio = refs.get((r["batch"], r["step"]))
        vs = f"{ratio / r['seconds_per_step']:7.2f}" if ratio else "      -"
        log(f"{r['impl']:<26} {r['step']:<10} {r['batch']:>5} {r['dtype']:>5} {r['seconds_per_step']:9.3f} {vs}")
    for batch in sorted({r["batch"] for r in result["rows"]}):
        for kind in SEARCH_STEPS:
            key = kind.replace("-", "_")
            speedup, fraction = result.get(f"{key}_speedup_vs_reference_b{batch}"), result.get(f"{key}_floor_fraction_b{batch}")
            if fraction is not None:
                vs_ref = f"{speedup:.2f}x the reference, " if speedup is not None else ""
                log(f"{kind} step: {vs_ref}{fraction:.2f} of its GEMM floor (B={batch})")
    for batch in sorted({r["batch"] for r in result["rows"]}):
        for key, label in (("speedup_vs_reference", "speedup vs reference"),
                           ("speedup_vs_official_darts", "speedup vs official DARTS way"),
                           ("floor_fraction", "fraction of GEMM floor")):  # fmt: skip
            value = result.get(f"{key}_b{batch}")
            if value is not None and batch != 64:
                log(f"{label}: {value:.2f} (B={batch})")
    for key, label in (("speedup_vs_official_darts", "speedup vs official DARTS way"),
                       ("speedup_vs_reference", "speedup vs reference"),
                       ("floor_fraction", "fraction of GEMM floor")):  # fmt: skip
        value = result.get(f"{key}_b64")
        if value is not None:
            log(f"{label}: {value:.2f} (B=64)")


def bf16_drift(space: str, steps: int = 100, nhid: int = 64, vocab: int = 1000, batch: int = 32, bptt: int = 20,
               device: str = "cpu", seed: int = 0) -> dict:  # fmt: skip
    """Train the supernet's weights ``steps`` SGD steps in fp32 and in bf16 autocast from
    the same start on the same random token stream; return both final losses."""
    graph = load_graph(space, {"ninp": nhid, "nhid": nhid})
    config = ModelConfig(vocab=vocab, search=True, **NO_DROPOUT)
    torch.manual_seed(seed)
    stream = torch.randint(0, vocab, (steps, bptt + 1, batch), device=device)
    losses = {}
    start_state = None
    for dtype in ("fp32", "bf16"):
        torch.manual_seed(seed)
        model = build_model(graph, config).to(device).train()
        if start_state is None:
            start_state = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(start_state)
        opt = torch.optim.SGD([p for n, p in model.named_parameters() if not n.startswith("arch.")], lr=1.0)
        hidden = model.init_hidden(batch)
        for i in range(steps):
            opt.zero_grad(set_to_none=True)
            with autocast(device, dtype == "bf16"):
                logits, hidden = model(stream[i, :-1], hidden)
                loss = F.cross_entropy(logits.reshape(-1, vocab).float(), stream[i, 1:].reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
            opt.step()
            hidden = [h.detach() for h in hidden]
        losses[dtype] = float(loss.detach())
    return {"steps": steps, "nhid": nhid, "loss_fp32": losses["fp32"], "loss_bf16": losses["bf16"],
            "difference": losses["bf16"] - losses["fp32"]}  # fmt: skip


def write_json(result: dict, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
