"""Editor support: ``essdsl lsp``, the language server an editor starts for .space files."""

from __future__ import annotations

from typing import Optional

import typer

from essdsl.cli import app
from essdsl.cli.common import fail, parse_sizes


@app.command()
def lsp(
    stdio: bool = typer.Option(False, "--stdio", help="talk over stdin/stdout (the only transport; accepted because editors pass it)"),
    ninp: Optional[int] = typer.Option(None, help="input size used for sizes and parameters in hovers (default 300)"),
    nhid: Optional[int] = typer.Option(None, help="hidden size used for sizes and parameters in hovers (default 300)"),
    vocab: Optional[int] = typer.Option(None, help="vocabulary size used for parameter counts (default 10000)"),
) -> None:
    """Run the language server for .space files over stdin/stdout (started by an editor).

    Diagnostics as you type, formatting, hover (a node's meaning, size,
    choices and parameters), go to definition, references, completion and the
    outline. Needs the optional dependency pygls: pip install 'essdsl\\[lsp]'.
    See the README, "Editor support", for VS Code and Neovim.
    """
    from essdsl.lsp import INSTALL_HINT, missing_dependency

    sizes = parse_sizes(ninp, nhid, vocab)
    missing = missing_dependency()
    if missing:
        fail(f"the language server needs {missing}, which is not installed: {INSTALL_HINT}")
    from essdsl.lsp.server import serve

    serve(sizes)
