"""The language-model settings around a compiled cell, and facts about a cell
that both implementations (generated and reference) must agree on.

Everything here reads the resolved :class:`~essdsl.graph.CellGraph`; nothing
here imports torch, so the layout can be inspected cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from ..graph import CellGraph, MixedSpec, Stream, decoder_tied, embedding_dim  # noqa: F401 - re-exported for the compiler

ZERO = "zero"

# Initialisation ranges (DARTS): cell weights uniform(-0.04, 0.04), embedding
# uniform(-0.1, 0.1), architecture logits 1e-3 * randn.
CELL_INIT_RANGE = 0.04
EMBEDDING_INIT_RANGE = 0.1
ARCH_INIT_SCALE = 1e-3


@dataclass(frozen=True)
class ModelConfig:
    """How the cell is wrapped into a language model.

    ``search=True`` builds the supernet (``norm batchnorm`` applied);
    ``search=False`` builds the discrete model (``norm`` ignored).  The cell
    sizes (ninp, nhid, ...) live in the graph; ``vocab`` lives here.
    """

    vocab: int = 10000
    dropout: float = 0.75  # locked dropout on the cell's outputs
    dropouth: float = 0.25  # variational mask on past states entering the cell
    dropoutx: float = 0.75  # variational mask on inputs entering the cell
    dropouti: float = 0.2  # locked dropout on the embedded inputs
    dropoute: float = 0.0  # dropout of whole embedding rows
    search: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class HiddenSlot:
    """One tensor of the hidden list: the past values of one stream.

    Shape ``(len(offsets), B, dim)``; entry ``j`` holds offset ``-(j + 1)``
    (``h[t-1]`` first).
    """

    stream: str
    kind: str  # "state" | "input"
    dim: int
    depth: int  # number of past values carried

    @property
    def offsets(self) -> list[int]:
        return [-(j + 1) for j in range(self.depth)]


def hidden_layout(graph: CellGraph) -> list[HiddenSlot]:
    """States (declaration order) first, then inputs whose window reaches back."""
    slots = [HiddenSlot(name, "state", graph.dims[name], -w.earliest) for name, w in graph.states.items()]
    slots += [
        HiddenSlot(name, "input", graph.dims[name], -w.earliest) for name, w in graph.inputs.items() if w.earliest < 0
    ]
    return slots


def op_mask(spec: MixedSpec) -> list[list[bool]]:
    """``mask[e][k]``: op ``k`` (a column of the arch tensor) is a candidate of edge ``e``."""
    return [[op in edge.ops for op in spec.op_names] for edge in spec.edges]


def uses_norm(spec: MixedSpec, config: ModelConfig) -> bool:
    return bool(config.search) and spec.norm == "batchnorm"


def norm_nodes(graph: CellGraph, config: ModelConfig) -> list[MixedSpec]:
    return [s for s in graph.mixed_nodes() if uses_norm(s, config)]


def past_stream_keys(graph: CellGraph) -> list[str]:
    return [k for k in graph.order() if isinstance(graph.spec(k), Stream)]


def sizes_summary(graph: CellGraph, config: Optional[ModelConfig] = None) -> dict:
    out = {k: v for k, v in graph.sizes.items() if k != "vocab"}
    if config is not None:
        out["vocab"] = config.vocab
    return out
