"""Fuzz the language front end: mutants of the shipped files through every stage.

Each input is a mutation of a shipped ``spaces/*.space`` or ``genotypes/*.space``
file: character, token and byte edits, plus splices aimed at the language's
limits (numbers of 18/19/5,000 digits, nesting 48-400 deep, sums of 100-20,000
terms, 1,000+ nodes, node names that are Python keywords or nn.Module
attributes, line-break look-alikes, BOMs, NULs, invalid UTF-8).  Every input
goes through what ``check``, ``fmt``, ``show``, ``stats`` and ``diff`` run, and
every so often one that checks is compiled (generated and reference models,
one forward pass each, compared).  A finding is any exception escaping a
stage, an error without a line, a report longer than the diagnostic cap
allows, or ``fmt`` not idempotent or changing the meaning.

    nice -n 10 python bench/fuzz_lang.py --inputs 100000 --seed 0 [--compile-every 2000]

Prints progress, then a summary line; exits 1 when anything was found (the
findings, with the input that caused each, go to ``--findings DIR``).  SIGTERM
or Ctrl-C stops it after the current input, still printing the summary.
``tests/test_fuzz.py`` runs the same code on a few hundred inputs.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Optional, Union

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from essdsl.lang import ir, limits  # noqa: E402
from essdsl.lang.check import check_text  # noqa: E402
from essdsl.lang.diff import diff_graphs, render_edits  # noqa: E402
from essdsl.errors import ParseError  # noqa: E402
from essdsl.lang.fmt import format_text  # noqa: E402
from essdsl.lang.parse import parse_space  # noqa: E402
from essdsl.lang.show import describe, to_dot  # noqa: E402
from essdsl.lang.stats import memory_estimate, stats_dict  # noqa: E402

SHIPPED = sorted((ROOT / "spaces").glob("*.space")) + sorted((ROOT / "genotypes").glob("*.space"))
SHIPPED_TEXTS = [p.read_text(encoding="utf-8") for p in SHIPPED]
SIZES = {"ninp": 8, "nhid": 8}
# A rendered report is at most the cap's diagnostics, each a message plus an excerpt.
MAX_REPORT_CHARS = (limits.MAX_DIAGNOSTICS + 1) * (3 * limits.MAX_EXCERPT + 400)

# Pieces of the language that mutations splice in, so that many mutants still parse.
TOKENS = [
    "space", "genotype", "ops", "defaults", "provenance", "cell", "input", "state", "node", "mix",
    "from", "output", "pairs", "transform", "combine", "select", "keep", "norm", "dim",
    "highway", "project", "linear", "mean", "tanh", "relu", "sigmoid", "identity", "zero", "neg",
    "sum", "product", "edge_softmax", "node_softmax", "batchnorm", "none",
    "s0", "s1", "s9", "h", "c", "x", "ninp", "nhid", "vocab", "rnn_ops",
    "t", "t-1", "t-9", "[t]", "[t-1]", "[t-3..t-1]", "[t-1..t]", "..", "0", "1", "2", "-1", "1e999",
    "{", "}", "(", ")", "[", "]", ",", "=", ":", "*", "+", "-", "#", '"', "\n", " ",
    "h[t]", "h[t-1]", "x[t]", "s0..s3", "carry = h[t-1]", "dim = nhid", "keep 9", "\x00", "\ufeff",
]  # fmt: skip
TOKEN_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+|\.\.|#[^\n]*|\s+|.", re.DOTALL)
HOSTILE_NAMES = [
    "if", "None", "class", "training", "forward", "cell", "arch", "norms", "keys", "_parameters", "__init__",
    "xs", "past", "masks", "list", "range", "super", "weight", "T", "Config", "nd_s1", "requires_grad_", "self",
]  # fmt: skip
LOOKALIKES = ["\f", "\r", "\v", "\x85", "\u2028", "\u2029", "\r\n", "\t"]


# ------------------------------------------------------------------ mutations
def mutate_characters(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 6)):
        if not text:
            break
        position = rng.randrange(len(text))
        action = rng.choice(["delete", "insert", "duplicate", "swap"])
        if action == "delete":
            text = text[:position] + text[position + rng.randint(1, 12) :]
        elif action == "insert":
            piece = rng.choice(TOKENS) if rng.random() < 0.7 else chr(rng.choice([rng.randint(0, 0x7F), rng.randint(0x80, 0x3000)]))
            text = text[:position] + piece + text[position:]
        elif action == "duplicate":
            length = rng.randint(1, 40)
            text = text[: position + length] + text[position : position + length] + text[position + length :]
        else:
            other = rng.randrange(len(text))
            i, j = sorted((position, other))
            if i != j:
                text = text[:i] + text[j] + text[i + 1 : j] + text[i] + text[j + 1 :]
    return text


def mutate_tokens(rng: random.Random, text: str) -> str:
    tokens = TOKEN_PATTERN.findall(text)
    for _ in range(rng.randint(1, 5)):
        if not tokens:
            break
        position = rng.randrange(len(tokens))
        action = rng.choice(["delete", "insert", "duplicate", "swap", "replace"])
        if action == "delete":
            del tokens[position]
        elif action == "insert":
            tokens.insert(position, rng.choice(TOKENS))
        elif action == "duplicate":
            length = rng.randint(1, 30)
            tokens[position:position] = tokens[position : position + length]
        elif action == "replace":
            tokens[position] = rng.choice(TOKENS)
        else:
            other = rng.randrange(len(tokens))
            tokens[position], tokens[other] = tokens[other], tokens[position]
    return "".join(tokens)


def _splice(rng: random.Random, text: str, piece: str) -> str:
    position = rng.randint(0, len(text))
    return text[:position] + piece + text[position:]


def mutate_at_the_limits(rng: random.Random, text: str) -> str:
    """One edit aimed at a limit of the language or at the code generator's names."""
    action = rng.choice(["number", "nest", "sum", "nodes", "name", "lookalike", "repeat"])
    if action == "number":
        digits = rng.choice([limits.MAX_NUMBER_DIGITS, limits.MAX_NUMBER_DIGITS + 1, 4301, 5000])
        numbers = [m.start() for m in re.finditer(r"(?<![A-Za-z0-9_])\d+", text)]
        if numbers:
            start = rng.choice(numbers)
            end = re.match(r"\d+", text[start:]).end() + start
            return text[:start] + "9" * digits + text[end:]
        return _splice(rng, text, "9" * digits)
    if action == "nest":
        depth = rng.choice([limits.MAX_NESTING - 3, limits.MAX_NESTING - 2, limits.MAX_NESTING, 400])
        match = rng.choice(list(re.finditer(r"= ([^\n]+)", text)) or [None])
        if match is None:
            return _splice(rng, text, "(" * depth + ")" * depth)
        opener = rng.choice(["tanh(", "linear(", "mean(", "(", "["])
        closer = "]" if opener == "[" else ")"
        return text[: match.start(1)] + opener * depth + match.group(1) + closer * depth + text[match.end(1) :]
    if action == "sum":
        terms = rng.choice([limits.MAX_OPERATORS - 1, limits.MAX_OPERATORS, limits.MAX_OPERATORS + 1, 2000] + [20000] * (rng.random() < 0.01))
        ref = rng.choice(["h[t-1]", "x[t]", "s0", "s1"])
        match = rng.choice(list(re.finditer(r"= ([^\n{]+)", text)) or [None])
        joined = " + ".join([ref] * terms)
        if match is None:
            return _splice(rng, text, joined)
        return text[: match.start(1)] + joined + text[match.end(1) :]
    if action == "nodes":
        # at the node limit a check takes ~0.3 s: aim there in 1 of 20 such edits
        count = rng.choice([limits.MAX_NODES - 1, limits.MAX_NODES + 1]) if rng.random() < 0.05 else rng.choice([20, 100])
        nodes = "".join(f"  node q{i} = tanh(h[t-1])\n" for i in range(count))
        at = text.find("cell {")
        return text[: at + 7] + "\n" + nodes + text[at + 7 :] if at >= 0 else _splice(rng, text, nodes)
    if action == "name":
        names = sorted(set(re.findall(r"node\s+([A-Za-z_][A-Za-z0-9_]*)", text)))
        if names:
            old = rng.choice(names)
            return re.sub(rf"(?<![A-Za-z0-9_]){re.escape(old)}(?![A-Za-z0-9_])", rng.choice(HOSTILE_NAMES), text)
        return _splice(rng, text, rng.choice(HOSTILE_NAMES))
    if action == "lookalike":
        for _ in range(rng.randint(1, 4)):
            text = _splice(rng, text, rng.choice(LOOKALIKES))
        return text
    lines = text.split("\n")
    index = rng.randrange(len(lines))
    copies = 3000 if rng.random() < 0.03 else rng.choice([2, 50])
    return "\n".join(lines[: index + 1] + [lines[index]] * copies + lines[index + 1 :])


def mutate_bytes(rng: random.Random, text: str) -> bytes:
    raw = bytearray(text.encode("utf-8"))
    for _ in range(rng.randint(1, 4)):
        if raw:
            raw[rng.randrange(len(raw))] = rng.randrange(256)
    if rng.random() < 0.1:
        raw[0:0] = b"\xef\xbb\xbf"
    return bytes(raw)


def mutant(rng: random.Random) -> tuple[int, Union[str, bytes]]:
    """(index of the shipped file it came from, the mutated text or bytes)."""
    index = rng.randrange(len(SHIPPED_TEXTS))
    text = SHIPPED_TEXTS[index]
    kind = rng.random()
    if kind < 0.3:
        return index, mutate_characters(rng, text)
    if kind < 0.6:
        return index, mutate_tokens(rng, text)
    if kind < 0.9:
        text = mutate_at_the_limits(rng, text)
        return index, mutate_tokens(rng, text) if rng.random() < 0.3 else text
    return index, mutate_bytes(rng, text)


# ------------------------------------------------------------------ the stages
BASE_GRAPHS: dict[int, object] = {}


def base_graph(index: int):
    if index not in BASE_GRAPHS:
        BASE_GRAPHS[index] = check_text(SHIPPED_TEXTS[index], str(SHIPPED[index]), SIZES)[0]
    return BASE_GRAPHS[index]


class Finding(AssertionError):
    """A broken promise that is not an exception of its own (a bad report, fmt changing meaning)."""


def exercise(source: Union[str, bytes], base: int = 0, compile_model: bool = False) -> bool:
    """Run ``source`` through check, fmt, show, stats and diff (and compile, if asked).
    Returns whether it checked clean; raises on any finding."""
    graph, report = check_text(source, "<fuzz>", SIZES)
    rendered = report.render()
    if len(rendered) > MAX_REPORT_CHARS:
        raise Finding(f"report of {len(rendered)} characters")
    text = source.decode("utf-8", errors="replace") if isinstance(source, bytes) else source
    if text.strip() and any(d.severity == "error" and d.line < 1 for d in report.diagnostics):
        raise Finding(f"error without a line: {rendered[:300]}")
    try:
        formatted: Optional[str] = format_text(source)
    except ParseError:
        formatted = None
    if formatted is not None:
        if format_text(formatted) != formatted:
            raise Finding("fmt is not idempotent")
        if ir.strip_spans(parse_space(formatted)) != ir.strip_spans(parse_space(source)):
            raise Finding("fmt changed the meaning")
    if not report.ok:
        return False
    describe(graph)
    to_dot(graph)
    stats_dict(graph)
    memory_estimate(graph, 4, 5)
    render_edits(diff_graphs(base_graph(base), graph))
    if formatted is not None:
        regraph, rereport = check_text(formatted, "<formatted>", SIZES)
        if not rereport.ok or diff_graphs(graph, regraph):
            raise Finding("the formatted file means something else")
    if compile_model:
        compile_and_compare(graph)
    return True


def compile_and_compare(graph) -> None:
    """Generated Python compiles; generated and reference models agree on one forward pass."""
    import torch

    from essdsl.compile import ModelConfig, build_model, generate_source

    for search in (True, False):
        config = ModelConfig(vocab=12, search=search, dropout=0.0, dropouth=0.0, dropoutx=0.0, dropouti=0.0, dropoute=0.0)
        compile(generate_source(graph, config), "<generated>", "exec")
        torch.manual_seed(0)
        generated = build_model(graph, config, "generated").eval()
        reference = build_model(graph, config, "reference").eval()
        reference.load_state_dict(generated.state_dict())
        tokens = torch.randint(0, 12, (3, 2))
        with torch.no_grad():
            a, _ = generated(tokens, generated.init_hidden(2))
            b, _ = reference(tokens, reference.init_hidden(2))
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------------ the driver
def run(inputs: int, seed: int, compile_every: int, findings_dir: Optional[Path], progress_every: int = 5000) -> dict:
    rng = random.Random(seed)
    counts = {"inputs": 0, "checked_clean": 0, "compiled": 0, "findings": 0}
    want_compile = False
    start = time.perf_counter()
    counts["interrupted"] = False
    for number in range(inputs):
        if _stop_requested:
            counts["interrupted"] = True
            inputs = number
            break
        base, source = mutant(rng)
        want_compile = want_compile or (compile_every > 0 and number % compile_every == 0)
        try:
            clean = exercise(source, base, compile_model=want_compile and not isinstance(source, bytes))
        except Exception as exc:  # noqa: BLE001 - every escape is a finding, recorded with its input
            counts["findings"] += 1
            print(f"FINDING at input {number}: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
            if findings_dir is not None:
                findings_dir.mkdir(parents=True, exist_ok=True)
                data = source if isinstance(source, bytes) else source.encode("utf-8", errors="surrogatepass")
                (findings_dir / f"finding-{number}.space").write_bytes(data)
                (findings_dir / f"finding-{number}.txt").write_text(traceback.format_exc(), encoding="utf-8")
            continue
        counts["inputs"] += 1
        counts["checked_clean"] += clean
        if clean and want_compile and not isinstance(source, bytes):
            counts["compiled"] += 1
            want_compile = False
        if progress_every and (number + 1) % progress_every == 0:
            print(f"{number + 1} inputs, {counts['findings']} findings, {time.perf_counter() - start:.0f} s", file=sys.stderr)
    counts["inputs"] = inputs
    counts["seconds"] = round(time.perf_counter() - start, 1)
    return counts


_stop_requested = False


def _request_stop(signum, frame) -> None:
    """SIGTERM/SIGINT: finish the current input, then print the summary of what ran."""
    global _stop_requested
    _stop_requested = True


def main(argv=None) -> int:
    import signal

    signal.signal(signal.SIGTERM, _request_stop)
    signal.signal(signal.SIGINT, _request_stop)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="how many mutants [100000]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile-every", type=int, default=2000, help="compile the next clean mutant after every N inputs [2000]; 0: never")
    parser.add_argument("--findings", type=Path, default=None, help="folder for the inputs that caused findings")
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = parser.parse_args(argv)
    summary = run(args.inputs, args.seed, args.compile_every, args.findings)
    summary["seed"] = args.seed
    line = (
        f"{summary['inputs']} inputs (seed {args.seed}): {summary['findings']} findings, {summary['checked_clean']} checked clean, "
        f"{summary['compiled']} compiled, {summary['seconds']} s" + (" (stopped early)" if summary["interrupted"] else "")
    )
    print(line)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 1 if summary["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
