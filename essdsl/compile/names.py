"""Node names as attribute names of the compiled modules.

A node's BatchNorm is an attribute (``norms.<name>``) of the generated module
and a key of the reference model's ``ModuleDict``.  A node may be named
``training``, ``if`` or ``__init__``: as an attribute that would be a syntax
error, clobber ``nn.Module`` state, or be mangled by Python inside the class.
Such names (and, to keep the mapping one-to-one, any name that already starts
with the prefix) get :data:`PREFIX` in front; every other name is kept, so
state-dict keys of ordinary spaces do not change.
"""

from __future__ import annotations

import functools
import keyword

PREFIX = "nd_"


@functools.lru_cache(maxsize=1)
def _module_attributes() -> frozenset[str]:
    """Every attribute of a ModuleDict instance (``training`` and ``_parameters`` are set
    in __init__, so the class alone misses them).  torch is imported only here: the
    language commands (stats reads generated code) must not load it."""
    from torch import nn

    return frozenset(dir(nn.ModuleDict()))


def _unsafe(name: str) -> bool:
    return (
        not name.isidentifier()
        or keyword.iskeyword(name)
        or name.startswith("_")  # private (__x is mangled inside a class) or nn.Module internals
        or name in _module_attributes()
        or name.startswith(PREFIX)
    )


def module_attribute(name: str) -> str:
    """The attribute name of node ``name``'s submodule: ``name`` itself unless that is
    unsafe, else ``nd_<name>`` (injective: a kept name never starts with ``nd_``)."""
    return PREFIX + name if _unsafe(name) else name
