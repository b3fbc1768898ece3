"""Editor support for .space files: a Language Server Protocol server (``essdsl lsp``).

The server needs the optional dependency pygls (``pip install 'essdsl[lsp]'``);
:mod:`essdsl.lsp.analysis` and :mod:`essdsl.lsp.features` hold what it answers,
:mod:`essdsl.lsp.server` wires them to pygls.
"""

from __future__ import annotations

INSTALL_HINT = "pip install 'essdsl[lsp]'"


def missing_dependency() -> str:
    """The name of the missing package the server needs, or '' when all are installed."""
    for module in ("pygls", "lsprotocol"):
        try:
            __import__(module)
        except ImportError:
            return module
    return ""
