"""The manifest (what each architecture weight stands for) and the TorchScript artifact."""

from __future__ import annotations

import contextlib
import hashlib
import json
import warnings
from pathlib import Path
from typing import Optional, Union

from essdsl import __version__
from essdsl.lang.layout import arch_params, parameter_layout
from essdsl.lang.graph import CellGraph, MixedSpec
from essdsl.compile.config import CELL_DROPOUTS, CompileError, ModelConfig, decoder_tied, embedding_dim, hidden_layout, op_mask, uses_norm


def _node_entry(graph: CellGraph, spec: MixedSpec, config: ModelConfig) -> dict:
    return {
        "node": spec.name,
        "edges": [e.label for e in spec.edges],
        "edge_ops": [list(e.ops) for e in spec.edges],
        "ops": list(spec.op_names),
        "mask": op_mask(spec),
        "transform": spec.transform,
        "select": spec.select,
        "keep": spec.keep,
        "combine": list(spec.combine),
        "norm": "batchnorm" if uses_norm(spec, config) else "none",
        "dim": graph.dim(spec.name),
        "arch": [f"arch.{p.name}" for p in arch_params(spec)],
    }


def arch_entries(graph: CellGraph) -> dict:
    """For every arch tensor, the choices its entries stand for."""
    out = {}
    for spec in graph.mixed_nodes():
        if spec.has_op_choice:
            out[f"arch.{spec.name}_ops"] = {
                "node": spec.name,
                "kind": "ops",
                "shape": [len(spec.edges), len(spec.op_names)],
                "select": spec.select,
                "keep": spec.keep,
                "edges": [e.label for e in spec.edges],
                "ops": list(spec.op_names),
                "mask": op_mask(spec),
                "transform": spec.transform,
                "combine": list(spec.combine),
            }
        if spec.has_combine_choice:
            out[f"arch.{spec.name}_combine"] = {
                "node": spec.name,
                "kind": "combine",
                "shape": [len(spec.combine)],
                "choices": list(spec.combine),
            }
    return out


def build_manifest(
    graph: CellGraph,
    config: ModelConfig,
    model=None,
    path: Optional[Union[str, Path]] = None,
    source_text: Optional[str] = None,
    target: str = "lm",
) -> dict:
    """A JSON-able description of the compiled model (``target="lm"``) or of the cell
    alone (``target="cell"``: format ``essdsl-cell/1``, no vocabulary or decoder, plus
    the cell's ``input_size`` and ``output_size``).

    ``path`` (or ``source_text``) identifies the .space text; without either the
    manifest carries a hash of the resolved IR instead.
    """
    import torch

    from essdsl.lang.ir import strip_spans

    space: dict = {"name": graph.name, "kind": graph.kind, "path": str(path) if path is not None else None}
    if source_text is None and path is not None:
        source_text = Path(path).read_text(encoding="utf-8")
    if source_text is not None:
        space["sha256"] = hashlib.sha256(source_text.encode("utf-8")).hexdigest()
    else:
        ir_text = json.dumps(strip_spans(graph.space), sort_keys=True, default=str)
        space["ir_sha256"] = hashlib.sha256(ir_text.encode("utf-8")).hexdigest()
    layout = parameter_layout(graph)
    manifest = {
        "format": "essdsl-model/1",
        "space": space,
        "sizes": {k: v for k, v in graph.sizes.items() if k != "vocab"} | {"vocab": config.vocab},
        "config": config.to_dict(),
        "versions": {"essdsl": __version__, "torch": torch.__version__},
        "embedding_dim": embedding_dim(graph),
        "output": graph.output,
        "decoder": "tied" if decoder_tied(graph) else "separate",
        "hidden": [
            {"stream": s.stream, "kind": s.kind, "shape": [s.depth, "B", s.dim], "offsets": s.offsets}
            for s in hidden_layout(graph)
        ],
        "cell_parameters": [
            {"name": f"{'arch' if p.role == 'arch' else 'cell'}.{p.name}", "shape": list(p.shape), "role": p.role, "node": p.node}
            for p in layout
        ],
        "arch": arch_entries(graph),
        "nodes": {spec.name: _node_entry(graph, spec, config) for spec in graph.mixed_nodes()},
    }
    if target == "cell":
        manifest = _cell_manifest(manifest, graph, config)
    if model is not None:
        params = dict(model.named_parameters())
        manifest["parameters"] = {
            "total": sum(p.numel() for p in params.values()),
            "arch": sum(p.numel() for n, p in params.items() if n.startswith("arch.")),
            "weights": sum(p.numel() for n, p in params.items() if not n.startswith("arch.")),
        }
        missing = [name for name in manifest["arch"] if name not in params]
        if missing:
            raise CompileError(f"the model lacks the architecture tensors {missing}")
    return manifest


def _cell_manifest(manifest: dict, graph: CellGraph, config: ModelConfig) -> dict:
    """The language model's manifest narrowed to the cell alone: the same arch entries,
    hidden layout and parameter names, without what belongs to the LM head."""
    cell = {
        "format": "essdsl-cell/1",
        "target": "cell",
        "contract": "out, hidden = cell(x, hidden); x (T, B, input_size), out (T, B, output_size), hidden = cell.init_hidden(B)",
        "input_size": embedding_dim(graph),
        "output_size": graph.dims[graph.output],
    }
    head_only = ("format", "embedding_dim", "decoder")
    cell.update({k: v for k, v in manifest.items() if k not in head_only})
    cell["sizes"] = {k: v for k, v in manifest["sizes"].items() if k != "vocab"}
    cell["config"] = {k: v for k, v in manifest["config"].items() if k in ("search", *CELL_DROPOUTS)}
    return cell


@contextlib.contextmanager
def _quiet_jit(function: str):
    """Silence only the torch >= 2.10 deprecation warning of ``torch.jit.<function>``, only here."""
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("ignore", message=rf".*torch\.jit\.{function}.*deprecated", category=category)
        yield


def script_model(model):
    """``torch.jit.script`` with only its deprecation warning silenced."""
    import torch

    with _quiet_jit("script"):
        return torch.jit.script(model)


def _atomic_write(path: Path, write) -> None:
    """``write(buffer)`` serializes into memory; :func:`essdsl.files.atomic_write_bytes`
    puts it on disk (torch writing to a full disk itself aborts the process)."""
    import io

    from essdsl.files import atomic_write_bytes

    buffer = io.BytesIO()
    write(buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_artifact(model, path: Union[str, Path]) -> Path:
    """Script ``model`` and save it to ``path`` atomically (temporary file, then rename)."""
    import torch

    scripted = model if isinstance(model, torch.jit.ScriptModule) else script_model(model)
    target = Path(path)
    with _quiet_jit("save"):
        _atomic_write(target, lambda buffer: torch.jit.save(scripted, buffer))
    return target


def save_state(model, path: Union[str, Path]) -> Path:
    """``torch.save`` of the state dict, atomically (for the reference interpreter, which is not scriptable)."""
    import torch

    target = Path(path)
    _atomic_write(target, lambda buffer: torch.save(model.state_dict(), buffer))
    return target


def save_manifest(manifest: dict, path: Union[str, Path]) -> Path:
    target = Path(path)
    _atomic_write(target, lambda buffer: buffer.write((json.dumps(manifest, indent=2) + "\n").encode("utf-8")))
    return target
