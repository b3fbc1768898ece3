"""The language-model settings around a compiled cell, and facts about a cell
that both implementations (generated and reference) must agree on.

Everything here reads the resolved :class:`~essdsl.lang.graph.CellGraph`; nothing
here imports torch, so the layout can be inspected cheaply.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

from essdsl.lang.dims import expr_dim
from essdsl.lang.exprs import (
    EHighway,
    ELinear,
    ERef,
    RExpr,
    walk,
)
from essdsl.lang.graph import (  # noqa: F401 - re-exported for the compiler
    CellGraph,
    MixedSpec,
    Stream,
    decoder_tied,
    embedding_dim,
)
from essdsl.compile.names import module_attribute
from essdsl.errors import EssdslError


class CompileError(EssdslError, ValueError):
    """A graph or setting the compiler cannot turn into a module (an unknown
    implementation or target, a parameter name that is not an identifier, ...)."""


# Initialisation ranges of the official DARTS code (quark0/darts rnn/model.py,
# INITRANGE = 0.04): cell weights, the embedding and an untied decoder all
# uniform(-0.04, 0.04), decoder bias 0, architecture logits 1e-3 * randn.
CELL_INIT_RANGE = 0.04
EMBEDDING_INIT_RANGE = 0.04
ARCH_INIT_SCALE = 1e-3

# Module name of the one normalisation shared by every ``norm batchnorm shared``
# node (the official DARTS search cell's single ``bn``).  Not under ``norms.``,
# so no node name can collide with it.
SHARED_NORM = "shared_norm"


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


# The dropouts that belong to the cell (variational masks on the values entering its
# matrix products); dropout, dropouti and dropoute belong to the language-model head.
CELL_DROPOUTS = ("dropouth", "dropoutx")


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


def uses_norm(spec, config: ModelConfig) -> bool:
    """The node (mixed or fixed) is normalised: ``norm batchnorm`` in a supernet."""
    return bool(config.search) and getattr(spec, "norm", "none") == "batchnorm"


def norm_nodes(graph: CellGraph, config: ModelConfig) -> list[MixedSpec]:
    return [s for s in graph.mixed_nodes() if uses_norm(s, config)]


def own_norms(graph: CellGraph, config: ModelConfig) -> dict[str, int]:
    """Nodes with a normalisation of their own (``norms.<attribute>``, the node's name
    made safe by :func:`module_attribute`): attribute -> size."""
    return {
        module_attribute(k): graph.dim(k)
        for k in graph.computed()
        if uses_norm(graph.spec(k), config) and not graph.spec(k).norm_shared
    }


def shared_norm_size(graph: CellGraph, config: ModelConfig) -> Optional[int]:
    """Size of the shared normalisation, or None when no node uses it."""
    keys = [k for k in graph.computed() if uses_norm(graph.spec(k), config) and graph.spec(k).norm_shared]
    return graph.dim(keys[0]) if keys else None


def norm_target(spec, config: ModelConfig) -> Optional[str]:
    """Which normalisation a node's value goes through: None, ``SHARED_NORM`` or the
    node's own (its key in ``norms``)."""
    if not uses_norm(spec, config):
        return None
    return SHARED_NORM if spec.norm_shared else module_attribute(spec.name)


# ---------------------------------------------------------------- dropout masks
# Where the variational dropouts apply (docs/semantics.md, "Dropout"): every
# value that enters a matrix product — an input of linear/project/highway, or a
# mixed node's candidate source before its transform's GEMM — is multiplied by
# a mask fixed over the segment: an input stream by its ``dropoutx`` mask, any
# other value (past state, node, Hadamard pair) by the ``dropouth`` mask of its
# size.  Values outside matrix products (a highway's carry, sums, products,
# means) stay unmasked.  This is the official DARTS rule (``h_mask`` on h[t-1]
# and on every s_j before ``_Ws[i]``), i.e. variational RNN dropout.

def input_mask_key(stream: str) -> str:
    return f"dropoutx.{stream}"


def hidden_mask_key(size: int) -> str:
    return f"dropouth.{size}"


def operand_mask_key(graph: CellGraph, sources: tuple[str, ...]) -> str:
    """Mask of a value entering a matrix product: one input stream -> its dropoutx mask, else dropouth by size."""
    if len(sources) == 1:
        spec = graph.spec(sources[0])
        if isinstance(spec, Stream) and spec.kind == "input":
            return input_mask_key(spec.name)
    return hidden_mask_key(graph.dim(sources[0]))


def expr_operand_key(graph: CellGraph, e: RExpr) -> str:
    """``operand_mask_key`` of one input of a linear/project/highway expression."""
    if isinstance(e, ERef):
        return operand_mask_key(graph, (e.key,))
    return hidden_mask_key(expr_dim(e, graph))


def mask_keys(graph: CellGraph) -> list[str]:
    """Every variational mask a step reads, in a stable order (dropoutx per input stream, then dropouth per size)."""
    keys: dict[str, None] = {}
    for k in graph.computed():
        spec = graph.spec(k)
        if isinstance(spec, MixedSpec):
            for edge in spec.edges:
                keys.setdefault(operand_mask_key(graph, edge.sources), None)
        else:
            for e in walk(spec.expr):
                if isinstance(e, (ELinear, EHighway)):
                    for t in e.inputs:
                        keys.setdefault(expr_operand_key(graph, t), None)
    return sorted(keys, key=lambda k: (not k.startswith("dropoutx."), k))


def mask_rate(key: str, config) -> float:
    """The dropout probability of a variational mask (``config``: anything with dropoutx/dropouth)."""
    return config.dropoutx if key.startswith("dropoutx.") else config.dropouth


def mask_size(graph: CellGraph, key: str) -> int:
    kind, _, rest = key.partition(".")
    return graph.dims[rest] if kind == "dropoutx" else int(rest)


def past_stream_keys(graph: CellGraph) -> list[str]:
    return [k for k in graph.order() if isinstance(graph.spec(k), Stream)]


def sizes_summary(graph: CellGraph, config: Optional[ModelConfig] = None) -> dict:
    out = {k: v for k, v in graph.sizes.items() if k != "vocab"}
    if config is not None:
        out["vocab"] = config.vocab
    return out
