"""The op registry: every elementwise op a .space file can name, in one table.

An op is one :class:`Op` entry.  Everything that needs to know about ops reads it:
the resolver (which names are ops, unknown names with a did-you-mean), the checker
(parameter-free ops that collapse without a ``zero`` to compete), the code
generator (:attr:`Op.code`), the reference interpreter (:attr:`Op.function`),
``stats`` (which ops keep their output for backward), derive and health (the zero
op, parameter-free ops) and the language server (:attr:`Op.doc`).  Adding an op is
one :func:`register` call; nothing else needs an edit.

This module imports no torch: :attr:`Op.function` takes and returns tensors through
their own methods, so the language layer stays cheap to import.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from essdsl.errors import EssdslError

ZERO = "zero"  # the "no connection" op: contributes nothing and is never kept
NEG = "neg"  # what ``a - b`` means inside a sum; not nameable as a candidate


@dataclass(frozen=True)
class Op:
    """One elementwise op.

    ``code`` is the generated module's expression with ``{}`` for the operand (it
    must be TorchScript and read only ``torch``); ``function`` computes the same on a
    tensor (the reference interpreter's).  ``parameter_free``: the op adds nothing a
    weight could learn to its edge (``identity``), so DARTS tends to collapse onto it.
    ``zero``: the op contributes nothing (never computed, never kept by derive).
    ``saves_output``: autograd keeps the op's output for backward (the memory
    estimate of ``stats``).  ``candidate``: may stand in an op set of a mixed node;
    ``applicable``: may be applied in an expression, ``op(e)``."""

    name: str
    function: Callable[[Any], Any]
    code: str
    doc: str = "op"
    parameter_free: bool = False
    zero: bool = False
    saves_output: bool = False
    candidate: bool = True
    applicable: bool = True

    def __post_init__(self):
        if not self.name.isidentifier():
            raise OpError(f"op name {self.name!r} is not an identifier")
        if self.code.count("{}") != 1:
            raise OpError(f"the code template of op '{self.name}' needs exactly one '{{}}' for the operand")

    def render(self, operand: str) -> str:
        """The generated code applying this op to ``operand``."""
        return self.code.format(operand)


class OpError(EssdslError, ValueError):
    """An op that cannot be registered or is not registered."""


_REGISTRY: dict[str, Op] = {}


def register(op: Op) -> Op:
    """Add ``op`` (its name must be new); returns it."""
    if op.name in _REGISTRY:
        raise OpError(f"op '{op.name}' is already registered")
    _REGISTRY[op.name] = op
    return op


def unregister(name: str) -> None:
    """Remove a registered op (tests that register a temporary one)."""
    del _REGISTRY[name]


def get(name: str) -> Op:
    """The op called ``name`` (KeyError when there is none)."""
    return _REGISTRY[name]


def is_op(name: str) -> bool:
    """``name`` is a registered op (also one that cannot be named everywhere, like neg)."""
    return name in _REGISTRY


def names() -> tuple[str, ...]:
    """Every registered op, in registration order."""
    return tuple(_REGISTRY)


def candidate_ops() -> tuple[str, ...]:
    """The ops an op set of a mixed node may list."""
    return tuple(op.name for op in _REGISTRY.values() if op.candidate)


def applicable_ops() -> tuple[str, ...]:
    """The ops an expression may apply, ``op(e)`` (and a highway's op)."""
    return tuple(op.name for op in _REGISTRY.values() if op.applicable)


def is_zero(name: str) -> bool:
    op = _REGISTRY.get(name)
    return op is not None and op.zero


def is_parameter_free(name: str) -> bool:
    op = _REGISTRY.get(name)
    return op is not None and op.parameter_free


def saves_output(name: str) -> bool:
    op = _REGISTRY.get(name)
    return op is not None and op.saves_output


def nonzero(ops) -> list[str]:
    """``ops`` without the zero op(s), in order."""
    return [op for op in ops if not is_zero(op)]


def apply(name: str, value):
    """The reference computation of op ``name`` on a tensor."""
    op = _REGISTRY.get(name)
    if op is None:
        raise OpError(f"no op '{name}'")
    return op.function(value)


def render(name: str, operand: str) -> str:
    """The generated code of op ``name`` on ``operand``."""
    return _REGISTRY[name].render(operand)


# The built-in ops.  Order matters: it is the order of "known ops" in diagnostics.
register(Op("tanh", lambda v: v.tanh(), "torch.tanh({})", "hyperbolic tangent", saves_output=True))
register(Op("relu", lambda v: v.relu(), "torch.relu({})", "rectified linear unit, max(0, v)", saves_output=True))
register(Op("sigmoid", lambda v: v.sigmoid(), "torch.sigmoid({})", "logistic sigmoid", saves_output=True))
register(
    Op(
        "identity",
        lambda v: v,
        "{}",
        "the value itself (parameter-free; with no `zero` to compete DARTS tends to collapse onto it)",
        parameter_free=True,
    )
)
register(
    Op(
        ZERO,
        lambda v: v.new_zeros(v.shape),
        "({} * 0.0)",
        "no connection: the edge contributes nothing and is never kept",
        zero=True,
        applicable=False,
    )
)
register(Op(NEG, lambda v: -v, "(-{})", "negation (what a - b means inside a sum)", candidate=False, applicable=False))
