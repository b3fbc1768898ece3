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

if __name__ == "__main__":
    sys.argv = [sys.argv[0], "bench", *sys.argv[1:]]
    if not any(not a.startswith("-") for a in sys.argv[2:]) and "--space" not in sys.argv:
        sys.argv.insert(2, str(ROOT / "spaces" / "darts_rnn.space"))
    if "--space" in sys.argv:  # python bench/supernet_step.py --space FILE
        i = sys.argv.index("--space")
        sys.argv[i : i + 2] = [sys.argv[i + 1]]
    main()
