"""Model commands: ``compile`` (a .space -> TorchScript artifact + manifest, or the generated source).

torch and the checker are imported inside the command only, so ``essdsl --help`` stays fast.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from . import app
from .common import fail, parse_sizes, print_report


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
) -> None:
    """Compile FILE into a supernet (or discrete model) as a TorchScript artifact plus a manifest.

    Writes build/<name>.pt (loadable with plain torch.jit.load) and
    build/<name>.manifest.json (what every architecture weight stands for).
    """
    if impl not in ("generated", "reference"):
        fail(f"--impl must be 'generated' or 'reference', got {impl!r}")
    if vocab <= 0:
        fail(f"--vocab must be a positive integer, got {vocab}")
    from ..check import check_file

    sizes = parse_sizes(ninp, nhid, None)
    start = time.perf_counter()
    graph, report = check_file(file, sizes)
    print_report(report)
    if not report.ok or graph is None:
        raise typer.Exit(1)

    from ..compile import ModelConfig, build_manifest, build_model, generate_source
    from ..compile.config import embedding_dim
    from ..compile.manifest import save_artifact, save_manifest, save_state

    config = ModelConfig(vocab=vocab, search=not discrete)
    try:
        embedding_dim(graph)
    except ValueError as exc:
        fail(f"{file}: {exc}")
    if emit_python:
        typer.echo(generate_source(graph, config), nl=False)
        return
    model = build_model(graph, config, impl=impl)
    manifest = build_manifest(graph, config, model, path=file)
    manifest["implementation"] = impl
    # The reference interpreter walks the graph in Python and is not TorchScript-able:
    # its artifact is the state dict (same names as the generated module's).
    manifest["artifact"] = "torchscript" if impl == "generated" else "state_dict"
    artifact = output or Path("build") / f"{graph.name}.pt"
    manifest_path = artifact.with_name(artifact.stem + ".manifest.json")
    try:
        (save_artifact if impl == "generated" else save_state)(model, artifact)
        save_manifest(manifest, manifest_path)
    except OSError as exc:
        fail(f"cannot write {artifact}: {exc.strerror or exc}")
    elapsed = time.perf_counter() - start
    counts = manifest["parameters"]
    what = "supernet" if config.search and manifest["arch"] else "model"
    typer.echo(
        f"{file}: {what} '{graph.name}': {counts['total']:,} parameters "
        f"({counts['weights']:,} weights, {counts['arch']:,} architecture in {len(manifest['arch'])} tensors)"
    )
    kind = "TorchScript module" if impl == "generated" else "state dict of the reference interpreter"
    typer.echo(f"wrote {artifact} ({kind}) and {manifest_path} in {elapsed:.2f} s")
