"""How fast ``essdsl lsp`` answers an editor on a large file.

Starts the server as an editor does (``python -m essdsl lsp``, JSON-RPC over
stdio, the client of tests/lsp_client.py), opens the generated 1,000-node chain
space of bench/check_speed.py and times, wall clock at the client:

* ``diagnostics after an edit``: didChange (one character, alternately breaking
  and fixing a name) until the publishDiagnostics of that version arrives — the
  server parses, resolves and checks the whole file;
* ``hover right after an edit``: the first request on a new version (it pays for
  the check);
* hover, definition, references, completion, document symbols, formatting on an
  already-checked version.

Each is repeated (``--repeats``) and the median and maximum printed, next to
``check_text`` timed in this process on the same text just before (what the
server cannot beat for diagnostics; on a loaded machine both grow together).

    python bench/lsp_latency.py [--nodes 1000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from check_speed import chain_space  # noqa: E402
from lsp_client import LspClient  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def position_of(text: str, needle: str, shift: int = 0) -> tuple[int, int]:
    index = text.index(needle) + shift
    return text.count("\n", 0, index), index - (text.rfind("\n", 0, index) + 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000, help="nodes of the generated chain space")
    ap.add_argument("--repeats", type=int, default=15, help="repeats per measurement (median and max printed)")
    args = ap.parse_args()

    text = chain_space(args.nodes)
    middle = args.nodes // 2 | 1  # a mixed node
    needle = f"node n{middle} = mix"
    broken = text.replace(f"from n{middle - 4}..", f"from m{middle - 4}..", 1)
    from essdsl.lang.check import check_text

    check_text(text)  # build the parser first, as a running server has
    results: dict[str, list[float]] = {"check_text in-process": [timed(lambda: check_text(text)) for _ in range(5)]}
    client = LspClient()
    uri = "file:///bench/chain.space"
    try:
        start = time.perf_counter()
        client.open(uri, text)
        assert client.diagnostics(uri, 1) == []
        results["open (first check)"] = [time.perf_counter() - start]
        version = 1

        def change_and_wait():
            nonlocal version
            version += 1
            client.change(uri, broken if version % 2 == 0 else text, version)
            client.diagnostics(uri, version)

        def change_then_hover():
            nonlocal version
            version += 1
            client.change(uri, broken if version % 2 == 0 else text, version)
            start = time.perf_counter()
            client.at("textDocument/hover", uri, *position_of(text, needle, 5))
            results.setdefault("hover right after an edit", []).append(time.perf_counter() - start)
            client.diagnostics(uri, version)

        for _ in range(args.repeats):
            time.sleep(0.3)  # a pause, as between edits
            results.setdefault("diagnostics after an edit", []).append(timed(change_and_wait))
        for _ in range(args.repeats):
            time.sleep(0.3)
            change_then_hover()
        if version % 2 == 0:
            change_and_wait()  # end on the valid text
        line, character = position_of(text, needle, 5)
        requests = {
            "hover": lambda: client.at("textDocument/hover", uri, line, character),
            "definition": lambda: client.at("textDocument/definition", uri, *position_of(text, f"from n{middle - 4}..", 5)),
            "references": lambda: client.at("textDocument/references", uri, line, character, context={"includeDeclaration": True}),
            "completion": lambda: client.at("textDocument/completion", uri, line, 0),
            "document symbols": lambda: client.request("textDocument/documentSymbol", {"textDocument": {"uri": uri}}),
            "formatting": lambda: client.request(
                "textDocument/formatting", {"textDocument": {"uri": uri}, "options": {"tabSize": 2, "insertSpaces": True}}
            ),
        }
        for name, request in requests.items():
            results[name] = [timed(request) for _ in range(args.repeats)]
    finally:
        client.close()

    print(f"essdsl lsp on a {args.nodes}-node chain space ({len(text):,} characters, {text.count(chr(10))} lines), "
          f"{args.repeats} repeats, wall clock at the client")
    print(f"{'what':<30} {'median ms':>10} {'max ms':>8}")
    for name, seconds in results.items():
        print(f"{name:<30} {statistics.median(seconds) * 1000:>10.1f} {max(seconds) * 1000:>8.1f}")


if __name__ == "__main__":
    main()
