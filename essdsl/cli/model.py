"""Model commands: ``compile`` (a .space -> TorchScript artifact + manifest, or the generated source).

torch and the checker are imported inside the command only, so ``essdsl --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from essdsl.cli import app
from essdsl.options import check_options
from essdsl.cli.common import fail, parse_sizes, print_report


@app.command("compile")
def compile_command(
    file: Path = typer.Argument(..., help="the .space file to compile"),
    ninp: Optional[int] = typer.Option(None, help="input (embedding) size [default: 300]"),
    nhid: Optional[int] = typer.Option(None, help="hidden size [default: 300]"),
    vocab: int = typer.Option(10000, help="vocabulary size of the language model"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="artifact path [default: build/<name>.pt]"),
    emit_python: bool = typer.Option(False, "--emit-python", help="print the generated module's source and write nothing"),
    impl: str = typer.Option(
        "generated", help="generated (TorchScript artifact) | reference (state dict of the edge-by-edge interpreter)"
    ),
    discrete: bool = typer.Option(
        False, "--discrete", help="compile the discrete model (no batchnorm) instead of the search supernet"
    ),
    weights: Optional[Path] = typer.Option(
        None, "--weights", help="export a trained model: load the weights of this checkpoint (RUN/model.pt of 'essdsl train', "
        "or a search's checkpoint.pt) into the artifact, at the run's sizes and vocabulary, saved in eval mode"
    ),
    target: str = typer.Option(
        "lm", "--target", help="lm (the language model: tokens -> logits) | cell (the cell alone: "
        "out, hidden = cell(x, hidden), for a task's own head) [default output: build/<name>.cell.pt]"
    ),
) -> None:
    """Compile FILE into a supernet (or discrete model) as a TorchScript artifact plus a manifest.

    Writes build/<name>.pt (loadable with plain torch.jit.load) and
    build/<name>.manifest.json (what every architecture weight stands for).
    """
    check_options(locals())
    from essdsl.errors import CheckError
    from essdsl.nas.export import export_artifact

    try:
        exported = export_artifact(file, parse_sizes(ninp, nhid, None), vocab=vocab, target=target, impl=impl, discrete=discrete,
                                   weights=weights, output=output, emit_python=emit_python, report=print_report)  # fmt: skip
    except CheckError:  # its diagnostics are printed already
        raise typer.Exit(1) from None
    if emit_python:
        typer.echo(exported.source, nl=False)
        return
    counts = exported.manifest["parameters"]
    typer.echo(
        f"{file}: {exported.what} '{exported.graph_name}': {counts['total']:,} parameters "
        f"({counts['weights']:,} weights, {counts['arch']:,} architecture in {len(exported.manifest['arch'])} tensors)"
    )
    kind = "TorchScript module" if impl == "generated" else "state dict of the reference interpreter"
    typer.echo(f"wrote {exported.artifact} ({kind}) and {exported.manifest_path} in {exported.seconds:.2f} s")


@app.command("bench")
def bench_command(
    space: Path = typer.Argument(..., help="the .space file whose supernet step to time (e.g. spaces/darts_rnn.space)"),
    nhid: int = typer.Option(300, "--nhid", help="ninp = nhid of the benchmarked model"),
    vocab: int = typer.Option(10000, "--vocab", help="vocabulary size"),
    bptt: int = typer.Option(35, "--bptt", help="time steps per segment"),
    batch: list[int] = typer.Option([64, 256], "--batch", help="batch sizes to time (repeat the option for several)"),
    repeats: int = typer.Option(3, "--repeats", help="timed rounds after one warm-up; each round times one step of every row in turn (median reported)"),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda"),
    bf16_batch: list[int] = typer.Option([64], "--bf16-batch", help="batch sizes that also get a bf16-autocast row"),
    no_reference: bool = typer.Option(False, "--no-reference", help="skip the (slow) reference interpreter row"),
    no_compile: bool = typer.Option(False, "--no-compile", help="skip the torch.compile rows (the search steps then time the eager generated module)"),
    search_batch: list[int] = typer.Option([64], "--search-batch", help="batch sizes that also time the full first- and second-order search step"),
    no_search_steps: bool = typer.Option(False, "--no-search-steps", help="skip timing the full search steps"),
    bf16_steps: int = typer.Option(0, "--bf16-steps", help="also train N steps in fp32 and bf16 (nhid 64) and report the loss difference"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="also write the results as JSON to this file"),
) -> None:
    """Time one supernet training step (forward + backward) per implementation, side by side.

    Rows: reference interpreter, the official-DARTS-shaped step (DARTS layouts only),
    the generated module eager and with one time step under torch.compile, bf16
    autocast, and this machine's GEMM-only floor; plus estimated vs measured
    activation memory.  At --search-batch sizes also the whole search step as
    'essdsl search' runs it (architecture update then weight update, first and
    second order), reference vs compiled, each against its own GEMM floor.  Ends with 'speedup vs reference: X.XX (B=64)' and
    'fraction of GEMM floor: Y.YY (B=64)'.

    Example: essdsl bench spaces/darts_rnn.space --batch 64 --repeats 3 --json bench.json
    """
    check_options(locals())
    import torch

    from essdsl.lang.check import check_file
    from essdsl.cli.common import print_report

    if device not in ("cpu", "cuda"):
        fail(f"--device must be cpu or cuda, not '{device}'")
    if device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: no CUDA device is available on this machine (the GPU benchmark is skipped)")
    if repeats < 1 or nhid < 1 or bptt < 1 or any(b < 1 for b in batch):
        fail("--repeats, --nhid, --bptt and --batch must be positive integers")
    _, report = check_file(space, {"ninp": nhid, "nhid": nhid})
    if not report.ok:
        print_report(report)
        raise typer.Exit(1)
    from essdsl.benchmark import bf16_drift, print_table, run, write_json

    result = run(
        str(space), nhid=nhid, vocab=vocab, bptt=bptt, batches=tuple(batch), repeats=repeats, device=device,
        bf16_batches=tuple(bf16_batch), include_reference=not no_reference, include_compile=not no_compile,
        search_batches=() if no_search_steps else tuple(search_batch),
    )  # fmt: skip
    if bf16_steps:
        drift = bf16_drift(str(space), steps=bf16_steps, device=device)
        result["bf16_drift"] = drift
        typer.echo(f"bf16 vs fp32 after {drift['steps']} steps (nhid {drift['nhid']}): loss {drift['loss_bf16']:.4f} vs "
                   f"{drift['loss_fp32']:.4f} (difference {drift['difference']:+.4f})")  # fmt: skip
    print_table(result, typer.echo)
    if json_path is not None:
        write_json(result, json_path)
        typer.echo(f"wrote {json_path}")
