"""essdsl: neural architecture search spaces as text."""

__version__ = "0.1.0"
