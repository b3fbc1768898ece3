"""Forward + backward time of one supernet training step, per implementation, side by side.

    python bench/supernet_step.py [--space spaces/darts_rnn.space] [--nhid 300] [--batch 64 --batch 256]
                                  [--repeats 3] [--json PATH] [--bf16-steps 100]

Same as `essdsl bench SPACE`.  Rows: reference interpreter, the official-DARTS-shaped
step, generated eager, generated with one time step under torch.compile, that under
bf16 autocast, and the GEMM-only floor of this machine; at B=64 also the whole
first- and second-order search step, reference vs compiled.  Ends with
`speedup vs reference: X.XX (B=64)` and `fraction of GEMM floor: Y.YY (B=64)`.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from essdsl.cli import main  # noqa: E402

DEFAULT_SPACE = ROOT / "spaces" / "darts_rnn.space"


def bench_argv(args: list[str]) -> list[str]:
    """The ``essdsl bench`` arguments for this script's: ``--space FILE`` becomes the
    positional SPACE, and without either the default space is added.  Whether SPACE is
    there is decided by the bench command's own parser (values of options such as
    ``--batch 64`` are not a space)."""
    import typer.main

    from essdsl.cli import app

    args = list(args)
    if "--space" in args:  # python bench/supernet_step.py --space FILE
        i = args.index("--space")
        args[i : i + 2] = args[i + 1 : i + 2]
    command = typer.main.get_command(app).commands["bench"]
    parsed = command.make_context("bench", list(args), resilient_parsing=True)
    if parsed.params.get("space") is None:
        args = [str(DEFAULT_SPACE), *args]
    return ["bench", *args]


if __name__ == "__main__":
    sys.argv = [sys.argv[0], *bench_argv(sys.argv[1:])]
    main()
