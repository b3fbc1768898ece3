"""essdsl: neural architecture search spaces as text.

The public Python API (see :mod:`essdsl.api` and the README's "From Python")::

    import essdsl
    run = essdsl.search("spaces/ess_joint.space", max_steps=30, final_epochs=0)
    genotype = essdsl.derive(run)

The names below are imported on first use, so ``import essdsl`` (and the command
line's language commands) stay fast and do not import torch.
"""

__version__ = "0.2.0"

_API = ("Genotype", "Observer", "Run", "Space", "compare", "compile_space", "derive", "evaluate", "load_space", "plot", "search", "train", "trainer")

__all__ = ["EssdslError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from essdsl import api

        return getattr(api, name)
    if name == "EssdslError":
        from essdsl.errors import EssdslError

        return EssdslError
    raise AttributeError(f"module 'essdsl' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_API) + ["EssdslError"])
