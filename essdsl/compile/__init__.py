"""Compile a resolved cell graph into a language model, or into the cell alone.

* :func:`build_model` — ``impl="generated"``: the generated straight-line module
  (fast, TorchScript-able); ``impl="reference"``: the edge-by-edge interpreter
  (the correctness oracle).  Both have identical parameter names and shapes.
* :func:`build_cell` — the cell without the language model around it
  (``out, hidden = cell(x, hidden)``), for task heads; same two implementations,
  and the same ``cell.*`` / ``arch.*`` / ``norms.*`` parameter names as the model.
* :func:`generate_source` — the generated module's Python source.
* :func:`build_manifest` — a JSON-able description of the model: what every
  architecture tensor's entries stand for, the hidden layout, the sizes.
* :func:`save_artifact` — ``torch.jit.script`` + ``torch.jit.save``, atomically.
"""

from __future__ import annotations

from essdsl.compile.config import CompileError, ModelConfig, hidden_layout
from essdsl.compile.manifest import build_manifest, save_artifact, script_model
from essdsl.compile.codegen import generate_source


def build_model(graph, config: ModelConfig, impl: str = "generated"):
    """An ``nn.Module`` language model around ``graph``'s cell (see the module docstring)."""
    if impl == "generated":
        from essdsl.compile.codegen import load_source

        cls = load_source(generate_source(graph, config), graph)
        model = cls()
        if model.encoder.num_embeddings != config.vocab:
            raise CompileError(f"the generated module has {model.encoder.num_embeddings} embeddings, not the configured {config.vocab}")
        return model
    if impl == "reference":
        from essdsl.compile.reference import ReferenceModel

        return ReferenceModel(graph, config)
    raise CompileError(f"unknown implementation {impl!r} (known: generated, reference)")


def build_cell(graph, config: ModelConfig, impl: str = "generated"):
    """The cell of ``graph`` alone, as an ``nn.Module`` (docs/compile.md).

    ``out, hidden = cell(x, hidden)`` with ``x`` (T, B, d_in) float, d_in the input
    streams' size (ninp), ``out`` (T, B, d_out) the output state's values, and
    ``hidden = cell.init_hidden(B)`` (the language model's hidden layout).  The cell
    applies its own variational dropouts (``config.dropouth``/``dropoutx``, overridable
    through ``cell.mask_override``); ``config.vocab``, ``dropout``, ``dropouti`` and
    ``dropoute`` belong to a head and are not used."""
    if impl == "generated":
        from essdsl.compile.codegen import load_source

        return load_source(generate_source(graph, config, target="cell"), graph, target="cell")()
    if impl == "reference":
        from essdsl.compile.reference import ReferenceCell

        return ReferenceCell(graph, config)
    raise CompileError(f"unknown implementation {impl!r} (known: generated, reference)")


__all__ = [
    "CompileError",
    "ModelConfig",
    "build_model",
    "build_cell",
    "build_manifest",
    "save_artifact",
    "script_model",
    "generate_source",
    "hidden_layout",
]
