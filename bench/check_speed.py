"""How long ``essdsl check`` takes: parse, graph and checks timed separately.

Times every shipped .space file and a generated space with 1,000 nodes (a
chain alternating fixed and mixed nodes, each mixed node choosing among the
previous few nodes), reporting the median of several repeats.  The parser is
built once before timing (as a long-running process, or the on-disk grammar
cache, would have it).

    python bench/check_speed.py [--nodes 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from essdsl.lang.check import check_graph  # noqa: E402
from essdsl.errors import has_errors  # noqa: E402
from essdsl.lang.graph import build_graph  # noqa: E402
from essdsl.lang.parse import _parser, parse_space  # noqa: E402


def chain_space(nodes: int, window: int = 4) -> str:
    """A valid space of ``nodes`` cell nodes: n0 reads the inputs; then fixed and
    mixed nodes alternate, mixed ones choosing among the previous ``window`` nodes."""
    lines = [
        f"space chain_{nodes}",
        "ops rnn_ops = {tanh, relu, sigmoid, identity, zero}",
        "defaults { transform highway  select edge_softmax  keep 1 }",
        "cell {",
        "  input x[t] : ninp",
        "  state h[t-1] : nhid",
        "  node n0 = highway(tanh, x[t], h[t-1], carry = h[t-1])",
    ]
    for i in range(1, nodes):
        if i % 2:
            first = max(0, i - window)
            lines.append(f"  node n{i} = mix {{ from n{first}..n{i - 1} ops rnn_ops }}")
        else:
            lines.append(f"  node n{i} = tanh(n{i - 1} + n{i - 2})")
    lines.append(f"  h[t] = mean(n{max(0, nodes - 8)}..n{nodes - 1})")
    lines.append("}")
    return "\n".join(lines) + "\n"


def time_stages(text: str, path: str, repeats: int) -> dict:
    parse_s, graph_s, check_s = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        space = parse_space(text, path)
        t1 = time.perf_counter()
        graph, diags = build_graph(space)
        t2 = time.perf_counter()
        diags = diags + check_graph(graph)
        t3 = time.perf_counter()
        if has_errors(diags):
            raise SystemExit(f"{path} has errors; the benchmark needs a valid space")
        parse_s.append(t1 - t0)
        graph_s.append(t2 - t1)
        check_s.append(t3 - t2)
    med = statistics.median
    return {
        "nodes": len(graph.computed()),
        "parse": med(parse_s),
        "graph": med(graph_s),
        "check": med(check_s),
        "total": med(a + b + c for a, b, c in zip(parse_s, graph_s, check_s)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000, help="size of the generated chain space")
    ap.add_argument("--repeats", type=int, default=5, help="repeats per file (median reported)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    _parser()
    build_ms = (time.perf_counter() - t0) * 1000
    cases = [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in sorted((ROOT / "spaces").glob("*.space"))]
    cases += [(str(p.relative_to(ROOT)), p.read_text(encoding="utf-8")) for p in sorted((ROOT / "genotypes").glob("*.space"))]
    cases.append((f"<generated chain, {args.nodes} nodes>", chain_space(args.nodes)))

    print(f"parser construction (cached tables if present): {build_ms:.1f} ms")
    print(f"{'file':<36} {'nodes':>6} {'parse ms':>9} {'graph ms':>9} {'check ms':>9} {'total ms':>9}")
    for name, text in cases:
        r = time_stages(text, name, args.repeats)
        print(
            f"{name:<36} {r['nodes']:>6} {r['parse'] * 1000:>9.2f} {r['graph'] * 1000:>9.2f} "
            f"{r['check'] * 1000:>9.2f} {r['total'] * 1000:>9.2f}"
        )


if __name__ == "__main__":
    main()
