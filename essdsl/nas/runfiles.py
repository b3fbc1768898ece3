"""Every file of a run folder or a compiled artifact, read through one validated schema.

A run folder holds ``manifest.json`` (what the run is), ``metrics.jsonl`` (one
JSON object per epoch) and a checkpoint (``checkpoint.pt`` of a search,
``model.pt`` of a training run); ``essdsl compile`` writes ``NAME.pt`` and
``NAME.manifest.json``.  Whatever is on disk — truncated, hand-edited, a list
where an object belongs, invalid UTF-8 — is read here and either comes back
with the shape the commands rely on or raises :class:`RunFileError`, whose
message names the file and the field (``manifest.json: corpus.vocab: …``).

Checksums: the run manifest records the sha256 of every checkpoint written into
its folder (``checksums``: file name -> the last two digests, so a kill between
updating the manifest and renaming the new checkpoint still leaves a match);
the artifact manifest records ``artifact_sha256``.  Both are verified on load.

Non-finite numbers: JSON has none, so ``metrics.jsonl`` stores ``inf``, ``-inf``
and ``nan`` as those strings and they are read back as floats.

Checkpoints are unpickled with ``torch.load(weights_only=True)`` only: tensors
and plain data.  A file asking for anything else is refused, and the message
does not repeat torch's advice to load it with ``weights_only=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, conlist
from essdsl.errors import EssdslError

PathLike = Union[str, Path]
RUN_MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


class RunFileError(EssdslError):
    """A run file or artifact is missing, damaged, of the wrong shape or tampered with."""


# ----------------------------------------------------------------- schemas
class _Record(BaseModel):
    # Unknown keys are kept: newer versions add fields, and the schema checks
    # only what essdsl reads.  ``model_`` names are ours, not pydantic's.
    model_config = ConfigDict(extra="allow", protected_namespaces=(), populate_by_name=True, arbitrary_types_allowed=True)


class SpaceRecord(_Record):
    path: str
    sha256: str
    name: str
    text: str


class CorpusRecord(_Record):
    name: str
    source: str
    vocab: Optional[int] = Field(default=None, gt=0)  # a language model's; other tasks record their own fields
    unigram_ppl: Optional[float] = None
    floor_ppl: Optional[float] = None


class RunConfigRecord(_Record):
    search: bool
    epochs: int = Field(gt=0)
    max_steps: Optional[int] = None
    batch_size: int = Field(gt=0)
    eval_batch_size: int = Field(gt=0)
    bptt: int = Field(gt=0)
    lr: float
    wd: float
    clip: float
    seed: int


class ModelManifestRecord(_Record):
    arch: dict[str, dict[str, Any]] = Field(default_factory=dict)


class RunManifest(_Record):
    kind: Literal["search", "train"]
    run_id: str
    space: SpaceRecord
    sizes: dict[str, int]
    seed: int
    config: RunConfigRecord
    dropouts: dict[str, float]
    model_config_: dict[str, Any] = Field(alias="model_config")
    data: Optional[str] = None
    synthetic_tokens: Optional[int] = None
    data_fingerprint: str
    corpus: CorpusRecord
    model_manifest: ModelManifestRecord = Field(default_factory=ModelManifestRecord)
    checksums: Optional[dict[str, list[str]]] = None


class MetricsRecord(_Record):
    epoch: int = Field(ge=1)
    step: Optional[int] = None
    train_ppl: Optional[float] = None  # a language model's; other tasks record their own metrics
    valid_ppl: Optional[float] = None
    elapsed_s: float
    arch: dict[str, Union[conlist(float, min_length=1), conlist(conlist(float, min_length=1), min_length=1)]] = Field(default_factory=dict)


class ArtifactSpace(_Record):
    path: str
    sha256: str


class ArtifactManifest(_Record):
    format: str
    space: ArtifactSpace
    sizes: dict[str, int]
    artifact_sha256: Optional[str] = None


def _tensor():
    import torch

    return torch.Tensor


def _checkpoint_schema():
    """The checkpoint schema (built on first use: it needs torch's Tensor type)."""
    global _CHECKPOINT
    if _CHECKPOINT is not None:
        return _CHECKPOINT
    Tensor = _tensor()

    class Progress(_Record):
        epoch: int = Field(ge=0)
        step: int = Field(ge=0)
        lr: float
        rollbacks: int = Field(ge=0)
        best_metric: float
        valid_history: list[float]
        elapsed: float
        epoch_loss_sum: float
        epoch_size: int = Field(ge=0)
        asgd: bool

    class Rng(_Record):
        torch: Tensor
        cuda: Optional[Tensor] = None

    class RunDescription(_Record):
        # what the CLI stores for eval: absent in checkpoints of a bare Trainer, never null
        kind: Literal["search", "train"] = None
        task: str = None
        space_text: str = None
        space_path: str = None
        sizes: dict[str, int] = None
        model_config_: dict[str, Any] = Field(None, alias="model_config")

    class Checkpoint(_Record):
        format: str
        model: dict[str, Tensor]
        weight_optimizer: dict[str, Any]
        arch_optimizer: Optional[dict[str, Any]] = None
        progress: Progress
        rng: Rng
        streams: dict[str, Optional[dict[str, Any]]]
        carries: dict[str, Any]
        history: list[dict[str, Any]]
        best_model: Optional[dict[str, Tensor]] = None
        config: dict[str, Any]
        run: RunDescription

    _CHECKPOINT = Checkpoint
    return Checkpoint


_CHECKPOINT = None


def _explain(path: PathLike, exc: ValidationError, where: str = "") -> RunFileError:
    """One line: the file, the first wrong field and what is wrong with it."""
    errors = exc.errors()
    first = errors[0]
    # union members appear in the location as type names ("list[float]"): not fields
    field = ".".join(str(part) for part in first["loc"] if not (isinstance(part, str) and "[" in part)) or "(the whole file)"
    problem = first["msg"]
    if first["type"] == "missing":
        problem = "missing"
    got = "" if first["type"] == "missing" else f" (got {_short(first.get('input'))})"
    more = f"; and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''}" if len(errors) > 1 else ""
    return RunFileError(f"{path}{where}: field '{field}': {problem}{got}{more}")


def _short(value) -> str:
    text = type(value).__name__ if hasattr(value, "shape") else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(schema: type[BaseModel], data, path: PathLike, where: str = "") -> dict:
    """``data`` checked against ``schema``: the validated plain dict (fields by
    their names on disk), or :class:`RunFileError` naming ``path`` and the field."""
    if not isinstance(data, dict):
        raise RunFileError(f"{path}{where}: expected an object with fields, found {type(data).__name__ if data is not None else 'null'}")
    try:
        return schema.model_validate(data).model_dump(by_alias=True, exclude_unset=True)
    except ValidationError as exc:
        raise _explain(path, exc, where) from None


# ----------------------------------------------------------------- reading
def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of ``path`` (the ``what`` a message calls it); a RunFileError naming the
    file (and the line of a byte that is not UTF-8) otherwise."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise RunFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RunFileError(f"{path} is a folder, not the {what}") from None
    except OSError as exc:
        raise RunFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RunFileError(f"{path}:{line}: error: not UTF-8 text (byte 0x{data[exc.start]:02x}); the {what} is damaged") from None


def _read_json(path: Path, what: str):
    text = read_text(path, what)
    try:
        return json.loads(text)
    except ValueError as exc:
        line = getattr(exc, "lineno", 0)
        raise RunFileError(f"{path}:{line}: error: not valid JSON ({getattr(exc, 'msg', exc)}); the {what} is damaged") from None


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def read_run_manifest(run_dir: PathLike) -> dict:
    """``RUN_DIR/manifest.json``, validated."""
    path = Path(run_dir) / RUN_MANIFEST
    return validate(RunManifest, _read_json(path, "run manifest"), path)


def read_metrics(path: PathLike) -> list[dict]:
    """The epoch records of ``metrics.jsonl`` (empty when the file does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(read_text(path, "metrics file").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, parse_constant=_reject_constant)
        except ValueError as exc:
            raise RunFileError(f"{path}:{number}: error: not valid JSON ({getattr(exc, 'msg', exc)})") from None
        rows.append(validate(MetricsRecord, _restore_non_finite(record), path, f":{number}"))
    return rows


def json_safe(value):
    """``value`` with every non-finite float replaced by ``"inf"``, ``"-inf"`` or ``"nan"``."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def _restore_non_finite(value):
    """The inverse of :func:`json_safe`, at any depth."""
    if isinstance(value, str):
        return _NON_FINITE.get(value, value)
    if isinstance(value, dict):
        return {k: _restore_non_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_restore_non_finite(v) for v in value]
    return value


def metrics_line(record: dict) -> str:
    """One line of ``metrics.jsonl``: strict JSON (no ``Infinity``/``NaN``)."""
    return json.dumps(json_safe(record), sort_keys=True, allow_nan=False) + "\n"


def sha256_file(path: PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_artifact_manifest(artifact: PathLike) -> tuple[dict, Path]:
    """The manifest beside a compiled ``NAME.pt`` (validated), after checking the
    artifact's bytes against its recorded sha256; returns (manifest, its path)."""
    artifact = Path(artifact)
    path = artifact.parent / (artifact.name[: -len(".pt")] + ".manifest.json")
    if not artifact.is_file():
        raise RunFileError(f"{artifact}: no such compiled artifact (compile one with 'essdsl compile SPACE')")
    if not path.exists():
        raise RunFileError(f"{artifact} has no manifest beside it ({path} is missing); recompile with 'essdsl compile'")
    manifest = validate(ArtifactManifest, _read_json(path, "artifact manifest"), path)
    want = manifest.get("artifact_sha256")
    if not want:
        raise RunFileError(f"{path} records no checksum of {artifact} (compiled by an older essdsl?); recompile with 'essdsl compile'")
    have = sha256_file(artifact)
    if have != want:
        raise RunFileError(
            f"{artifact} does not match its manifest (sha256 {have[:12]}… != {want[:12]}… recorded in {path}): "
            "the file was changed or damaged after 'essdsl compile'; recompile it"
        )
    return manifest, path


# ----------------------------------------------------------------- checkpoints
def _recorded_checksums(path: Path) -> Optional[list[str]]:
    """The digests the run manifest accepts for checkpoint ``path``; None for a
    folder without a manifest or a run started before checksums were kept."""
    manifest_path = path.parent / RUN_MANIFEST
    if not manifest_path.exists():
        return None
    data = _read_json(manifest_path, "run manifest")
    if not isinstance(data, dict) or data.get("checksums") is None:
        return None
    checksums = data["checksums"]
    if not isinstance(checksums, dict) or not isinstance(checksums.get(path.name, []), list):
        raise RunFileError(f"{manifest_path}: field 'checksums': expected file name -> list of sha256")
    return checksums.get(path.name, [])


def save_checkpoint(state: dict, path: PathLike) -> str:
    """``torch.save`` ``state`` to ``path`` atomically and record its sha256 in the
    run manifest beside it (first, keeping the previous digest: a kill between
    the two writes leaves the old checkpoint, which still matches)."""
    import torch

    from essdsl.files import atomic_write_bytes, atomic_write_text

    path = Path(path)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    manifest_path = path.parent / RUN_MANIFEST
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        checksums = manifest.get("checksums") or {}
        previous = [d for d in checksums.get(path.name, [])[:1] if d != digest]
        checksums[path.name] = [digest, *previous]
        manifest["checksums"] = checksums
        atomic_write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    atomic_write_bytes(path, data)
    return digest


def load_checkpoint(path: PathLike, checkpoint_format: str) -> dict:
    """Read, verify (checksum, ``weights_only`` unpickling, schema) and return a checkpoint."""
    import torch

    path = Path(path)
    if path.is_dir():
        raise RunFileError(f"{path} is a folder, not a checkpoint")
    if not path.exists():
        raise RunFileError(f"no checkpoint at {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RunFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not data.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive
        hint = ""
        if path.suffix == ".space":
            hint = f"; to evaluate a genotype, train it first ('essdsl train {path}') and pass RUN_DIR/model.pt or the run folder"
        raise RunFileError(
            f"{path} is corrupt or not an essdsl checkpoint (not a torch.save archive; expected RUN_DIR/model.pt "
            f"of 'essdsl train', RUN_DIR/checkpoint.pt of 'essdsl search', or a run folder){hint}"
        )
    accepted = _recorded_checksums(path)
    if accepted is not None:
        have = hashlib.sha256(data).hexdigest()
        if have not in accepted:
            raise RunFileError(
                f"checkpoint {path} does not match the sha256 recorded in {path.parent / RUN_MANIFEST} "
                f"({have[:12]}…): it was changed or damaged after essdsl wrote it"
            )
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise RunFileError(f"checkpoint {path} is corrupt or not an essdsl checkpoint ({_unpickling_problem(exc)})") from None
    if isinstance(state, dict) and isinstance(state.get("format"), str) and state["format"].startswith("essdsl-checkpoint-"):
        if state["format"] != checkpoint_format:
            raise RunFileError(_other_format(path, state["format"], checkpoint_format))
    if not isinstance(state, dict) or state.get("format") != checkpoint_format:
        raise RunFileError(f"{path} is not an essdsl checkpoint (format {checkpoint_format} expected)")
    validate(_checkpoint_schema(), state, path)
    return state


def _other_format(path: Path, found: str, expected: str) -> str:
    """Why a checkpoint of another format is refused: which essdsl wrote it (from the
    run manifest beside it) and what to do."""
    from essdsl import __version__

    writer = "another essdsl version"
    try:
        recorded = json.loads((path.parent / RUN_MANIFEST).read_text(encoding="utf-8"))["versions"]["essdsl"]
        writer = f"essdsl {recorded}"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return (
        f"{path} was written by {writer} in checkpoint format '{found}'; this essdsl ({__version__}) reads "
        f"'{expected}' only (the trainer's state changed with the task layer). Finish or evaluate that run with the "
        f"essdsl that started it, or start the run again"
    )


def _unpickling_problem(exc: Exception) -> str:
    """What torch's refusal means, without its advice to turn the safety off."""
    text = str(exc)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"the Python object {found.group(1)}" if found else "Python objects"
        return f"it asks to load {what}; only tensors and plain data are loaded, since unpickling anything else could run code"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:200]


__all__ = [
    "ArtifactManifest",
    "MetricsRecord",
    "RunFileError",
    "RunManifest",
    "json_safe",
    "load_checkpoint",
    "metrics_line",
    "read_artifact_manifest",
    "read_metrics",
    "read_run_manifest",
    "save_checkpoint",
    "sha256_file",
    "validate",
]
