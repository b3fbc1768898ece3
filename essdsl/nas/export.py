"""Export a space as a compiled artifact: the language model or the cell alone, as a
TorchScript module (or the reference interpreter's state dict) plus its manifest,
optionally with the weights of a trained run.

This is ``essdsl compile`` without the printing; the CLI and :func:`essdsl.api.export`
call it.  Both files are written atomically, after every check passed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from essdsl.errors import EssdslError
from essdsl.nas.runconfig import SettingError

TARGETS = ("lm", "cell")
IMPLEMENTATIONS = ("generated", "reference")


class ExportError(EssdslError):
    """The weights asked for do not belong to the space being exported."""


@dataclass
class Exported:
    """What :func:`export_artifact` wrote (``artifact`` is None for emitted source)."""

    graph_name: str
    manifest: dict
    artifact: Optional[Path] = None
    manifest_path: Optional[Path] = None
    source: Optional[str] = None
    seconds: float = 0.0
    what: str = "supernet"


def trained_weights(space_file: Path, checkpoint: Path, sizes: dict) -> dict:
    """Sizes, model config and weights (the best epoch's if kept) of a run's checkpoint,
    which must have been trained on ``space_file``'s exact text (the run records it)."""
    from essdsl.nas.checkpoint import load_checkpoint

    state = load_checkpoint(checkpoint)
    try:
        described = state["run"]
        text, run_sizes, model_config = described["space_text"], dict(described["sizes"]), dict(described["model_config"])
    except KeyError:
        raise ExportError(f"{checkpoint} lacks the model description (space, sizes); it was not written by essdsl train/search") from None
    try:
        same = Path(space_file).read_text(encoding="utf-8") == text
    except (OSError, UnicodeDecodeError):
        same = True  # the checker reports the unreadable file itself
    if not same:
        raise ExportError(f"{checkpoint} was trained on another text than {space_file} (compile the genotype the run used)")
    for key, value in sizes.items():
        if run_sizes.get(key) != value:
            raise SettingError(key, "{setting} {value} differs from the {trained} the weights in {checkpoint} were trained with",
                               value=value, trained=run_sizes.get(key), checkpoint=checkpoint)  # fmt: skip
    return {"sizes": run_sizes, "model_config": model_config, "state": state.get("best_model") or state["model"]}


def export_artifact(space_file: Path, sizes: Optional[dict] = None, *, vocab: int = 10000, target: str = "lm", impl: str = "generated",
                    discrete: bool = False, weights: Optional[Path] = None, output: Optional[Path] = None,
                    emit_python: bool = False, report=None) -> Exported:  # fmt: skip
    """Compile ``space_file`` at ``sizes`` for ``target`` and write it (or only generate
    its source when ``emit_python``).  ``report(Report)`` receives the checker's report
    before anything is built; a space with errors raises its SpaceError."""
    space_file, sizes = Path(space_file), dict(sizes or {})
    if impl not in IMPLEMENTATIONS:
        raise SettingError("impl", "{setting} must be 'generated' or 'reference', got {value!r}", value=impl)
    if target not in TARGETS:
        raise SettingError("target", "{setting} must be 'lm' or 'cell', got {value!r}", value=target)
    if vocab <= 0:
        raise SettingError("vocab", "{setting} must be a positive integer, got {value}", value=vocab)
    from essdsl.errors import CheckError
    from essdsl.lang.check import check_file

    trained = trained_weights(space_file, weights, sizes) if weights is not None else None
    if trained is not None:
        sizes = trained["sizes"]
    start = time.perf_counter()
    graph, checked = check_file(space_file, sizes)
    if report is not None:
        report(checked)
    if not checked.ok or graph is None:
        raise CheckError(checked.diagnostics, checked.path, checked.source)

    from essdsl.compile import ModelConfig, build_cell, build_manifest, build_model, generate_source
    from essdsl.compile.config import embedding_dim
    from essdsl.compile.manifest import save_artifact, save_manifest, save_state
    from essdsl.files import check_output_path
    from essdsl.nas.runfiles import sha256_file

    config = ModelConfig(vocab=vocab, search=not discrete) if trained is None else ModelConfig(**trained["model_config"])
    try:
        embedding_dim(graph)
    except ValueError as exc:
        raise ExportError(f"{space_file}: {exc}") from None
    if emit_python:
        return Exported(graph.name, {}, source=generate_source(graph, config, target=target))
    model = (build_model if target == "lm" else build_cell)(graph, config, impl=impl)
    if trained is not None:
        try:
            own = model.state_dict().keys()  # the cell takes the run's cell.*/arch.*/norms.* tensors
            model.load_state_dict({k: v for k, v in trained["state"].items() if target == "lm" or k in own})
        except RuntimeError as exc:
            raise ExportError(f"{weights} does not match the model of {space_file} ({str(exc).splitlines()[0]})") from None
        model.eval()  # an exported trained model is for inference: dropout off, BatchNorm on its running statistics
    manifest = build_manifest(graph, config, model, path=space_file, target=target)
    manifest["implementation"] = impl
    # The reference interpreter walks the graph in Python and is not TorchScript-able:
    # its artifact is the state dict (same names as the generated module's).
    manifest["artifact"] = "torchscript" if impl == "generated" else "state_dict"
    artifact = Path(output) if output else Path("build") / (f"{graph.name}.pt" if target == "lm" else f"{graph.name}.cell.pt")
    check_output_path(artifact, [space_file])
    manifest_path = artifact.with_name(artifact.stem + ".manifest.json")
    check_output_path(manifest_path, [space_file])
    (save_artifact if impl == "generated" else save_state)(model, artifact)
    manifest["artifact_sha256"] = sha256_file(artifact)  # verified by 'essdsl search ARTIFACT'
    save_manifest(manifest, manifest_path)
    what = "supernet" if config.search and manifest["arch"] else "model"
    what = what if target == "lm" else f"cell of the {what}"
    return Exported(graph.name, manifest, artifact, manifest_path, seconds=time.perf_counter() - start, what=what)
