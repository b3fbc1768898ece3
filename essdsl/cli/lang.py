"""Language commands: check, fmt, show, stats and diff.  None of them imports torch.

Every command reports a bad file as ``path:line:col: error: message`` with the
source line and a caret, and exits non-zero; none prints a traceback for
anything a user can fix.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer

from essdsl.errors import ParseError, Report
from essdsl.cli import app
from essdsl.cli.common import fail, parse_sizes, print_report, summary_line

NINP_HELP = "input (embedding) size [default: 300]"
NHID_HELP = "hidden size [default: 300]"


@app.command()
def check(
    files: List[Path] = typer.Argument(..., help=".space files to check"),
    ninp: Optional[int] = typer.Option(None, help="input (embedding) size used for size checks [default: 300]"),
    nhid: Optional[int] = typer.Option(None, help="hidden size used for size checks [default: 300]"),
    werror: bool = typer.Option(False, "--werror", help="treat warnings as errors"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print diagnostics only, no 'ok' lines"),
) -> None:
    """Check .space files: syntax, names, cycles, windows, sizes, choices.

    Prints every problem as path:line:col: error: message with the source line,
    and exits 1 if any file has an error (or a warning, with --werror).

    Examples:

      essdsl check spaces/*.space genotypes/*.space

      essdsl check --nhid 850 --werror myspace.space
    """
    from essdsl.lang.check import check_file  # imported here: pydantic/networkx cost ~0.3 s, --help needs neither

    sizes = parse_sizes(ninp, nhid, None)
    failed = False
    for path in files:
        start = time.perf_counter()
        _, report = check_file(path, sizes)
        elapsed = time.perf_counter() - start
        print_report(report)
        bad = not report.ok or (werror and report.diagnostics)
        failed = failed or bad
        if not quiet:
            status = "FAILED" if bad else "ok"
            extra = f" ({summary_line(report)})" if report.diagnostics else ""
            typer.echo(f"{path}: {status}{extra} [{elapsed * 1000:.1f} ms]", err=bad)
    raise typer.Exit(1 if failed else 0)


# ----------------------------------------------------------------- helpers
def _load(path: Path, sizes: dict, exit_code: int = 1):
    """Parse and check ``path``; print its diagnostics; exit ``exit_code`` on any error."""
    from essdsl.lang.check import check_file

    graph, report = check_file(path, sizes)
    print_report(report)
    if not report.ok or graph is None:
        raise typer.Exit(exit_code)
    return graph


def _read_bytes(path: Path) -> Optional[bytes]:
    """The file's bytes, or None after printing ``path: error: …``."""
    from essdsl.lang.parse import read_space_bytes

    try:
        return read_space_bytes(path)
    except ParseError as exc:
        print_report(Report(str(path), None, exc.diagnostics))
        return None


def write_atomically(path: Path, text: str, inputs=()) -> None:
    """Replace ``path`` with ``text`` through a temporary file in the same folder,
    so a reader never sees half a file and a crash leaves the original intact;
    refuses to write over one of ``inputs`` (see :mod:`essdsl.files`)."""
    from essdsl.files import atomic_write_text

    atomic_write_text(path, text, inputs)


# ----------------------------------------------------------------- fmt
@app.command()
def fmt(
    files: List[Path] = typer.Argument(..., help=".space files to format"),
    check_only: bool = typer.Option(False, "--check", help="write nothing; list files that are not formatted and exit 1 if any"),
    write: bool = typer.Option(False, "--write", "-w", help="rewrite the files in place (atomically)"),
) -> None:
    """Print .space files in canonical layout, check that they are, or rewrite them.

    Formatting keeps comments and never changes meaning. A file that does not
    parse is reported (path:line:col: error: ...) and never written; fmt then
    exits 1. Exit status: 0 when everything is fine, 1 when a file has errors
    or (with --check) would change.

    Examples:

      essdsl fmt spaces/darts_rnn.space            # formatted text on stdout

      essdsl fmt --check spaces/*.space            # CI: exit 1 if any file would change

      essdsl fmt --write spaces/*.space            # rewrite in place
    """
    if check_only and write:
        fail("--check and --write exclude each other: --check writes nothing")
    from essdsl.lang.fmt import format_text

    failed = False
    would_change: list[Path] = []
    for path in files:
        data = _read_bytes(path)
        if data is None:
            failed = True
            continue
        try:
            formatted = format_text(data, str(path))
        except ParseError as exc:
            print(exc.render(), file=sys.stderr)
            failed = True
            continue
        original = data.decode("utf-8", errors="replace")
        if original.startswith("\ufeff"):  # a byte-order mark is the editor's, not layout: keep it
            formatted = "\ufeff" + formatted
        changed = formatted != original
        if check_only:
            if changed:
                would_change.append(path)
                typer.echo(f"{path}: would be reformatted")
        elif write:
            if changed:
                try:
                    write_atomically(path, formatted)
                except OSError as exc:
                    print(f"{path}: error: cannot write: {exc.strerror or exc}", file=sys.stderr)
                    failed = True
                    continue
                typer.echo(f"{path}: reformatted", err=True)
        else:
            typer.echo(formatted, nl=False)
    if check_only and not failed:
        n = len(would_change)
        if n:
            typer.echo(f"{n} file{'s' if n != 1 else ''} would be reformatted", err=True)
    raise typer.Exit(1 if failed or would_change else 0)


# ----------------------------------------------------------------- show
@app.command()
def show(
    file: Path = typer.Argument(..., help="the .space file to show"),
    output_format: str = typer.Option("text", "--format", "-f", help="text | dot (Graphviz)"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="write to this file instead of stdout"),
    ninp: Optional[int] = typer.Option(None, help=NINP_HELP),
    nhid: Optional[int] = typer.Option(None, help=NHID_HELP),
) -> None:
    """Show the resolved cell: streams, nodes in the order a step computes them, candidate edges, output.

    --format dot prints a Graphviz graph: inputs as boxes, past states as
    dashed boxes, fixed nodes as ellipses, mixed nodes as double circles with
    dashed candidate edges labelled by their ops.

    Examples:

      essdsl show spaces/ess_joint.space

      essdsl show spaces/darts_rnn.space --format dot -o darts.dot && dot -Tsvg darts.dot > darts.svg
    """
    if output_format not in ("text", "dot"):
        fail(f"--format must be 'text' or 'dot', not {output_format!r}", 2)
    graph = _load(file, parse_sizes(ninp, nhid, None))
    from essdsl.lang.show import describe, to_dot

    text = to_dot(graph) if output_format == "dot" else describe(graph)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        write_atomically(output, text, inputs=[file])
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(f"wrote {output}", err=True)


# ----------------------------------------------------------------- stats
@app.command()
def stats(
    file: Path = typer.Argument(..., help="the .space file to measure"),
    ninp: Optional[int] = typer.Option(None, help=NINP_HELP),
    nhid: Optional[int] = typer.Option(None, help=NHID_HELP),
    vocab: Optional[int] = typer.Option(None, help="vocabulary size [default: 10000]"),
    as_json: bool = typer.Option(False, "--json", help="print the numbers as JSON (keys: see README, 'stats --json')"),
    memory: bool = typer.Option(False, "--memory", help="also estimate the peak memory of one search step (needs --batch-size, --bptt)"),
    batch_size: int = typer.Option(64, "--batch-size", help="batch size for --memory"),
    bptt: int = typer.Option(35, "--bptt", help="BPTT length for --memory"),
    order: str = typer.Option("first", "--order", help="first or second order search, for --memory"),
) -> None:
    """Count architectures, architecture weights, parameters and FLOPs per token.

    Parameters are given for the supernet and for a derived (discrete) model;
    when the choice changes the derived count, its minimum and maximum.

    Examples:

      essdsl stats spaces/darts_rnn.space

      essdsl stats genotypes/darts_v2.space --ninp 850 --nhid 850

      essdsl stats spaces/ess_joint.space --json | python -m json.tool

      essdsl stats spaces/darts_rnn.space --memory --batch-size 256 --bptt 35
    """
    if order not in ("first", "second"):
        fail(f"--order must be 'first' or 'second', not '{order}'")
    if batch_size < 1 or bptt < 1:
        fail("--batch-size and --bptt must be positive integers")
    graph = _load(file, parse_sizes(ninp, nhid, vocab))
    from essdsl.lang.stats import StatsError, memory_estimate, stats_dict

    try:
        data = stats_dict(graph)
        if memory:
            data["memory"] = memory_estimate(graph, batch_size, bptt, order)
    except StatsError as exc:
        fail(f"{file}: {exc}")
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    _print_stats(data)
    if memory:
        _print_memory(data["memory"])


def _print_memory(estimate: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="search step memory (estimate)")
    table.caption = f"{estimate['order']} order, batch {estimate['batch_size']}, bptt {estimate['bptt']}, fp32"
    table.add_column("part")
    table.add_column("MiB", justify="right")
    for key in ("activations", "parameters", "gradients", "optimizer", "unrolled", "total"):
        table.add_row(key, f"{estimate[key + '_bytes'] / 2**20:,.1f}")
    Console().print(table)


def _range_text(low: int, high: int) -> str:
    return f"{low:,}" if low == high else f"{low:,} – {high:,}"


def _print_stats(data: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    # Not a terminal (a pipe, a file): wide enough that no cell is cut.
    console = Console() if sys.stdout.isatty() else Console(width=120)
    sizes = data["sizes"]
    params = data["params"]
    flops = data["flops_per_token"]
    title = f"{data['kind']} {data['name']} (ninp {sizes['ninp']}, nhid {sizes['nhid']}, vocab {sizes['vocab']})"
    summary = Table(title=escape(title), show_header=False)
    summary.add_column("what")
    summary.add_column("value", justify="right")
    log10 = data["architectures_log10"]
    count = f"{data['architectures']:,}" if data["architectures"] is not None else "too many to print"
    summary.add_row("architectures", count + (f"  (10^{log10:.2f})" if log10 else ""))
    summary.add_row("mixed nodes", str(data["mixed_nodes"]))
    summary.add_row("architecture weights (valid)", f"{data['arch_weights']:,} ({data['arch_weights_valid']:,})")
    summary.add_row("parameters, supernet", f"{params['supernet']:,}")
    summary.add_row("parameters, derived model", _range_text(params["derived_min"], params["derived_max"]))
    summary.add_row("  embedding", f"{params['embedding']:,}")
    summary.add_row("  decoder" + (" (tied: bias only)" if params["decoder_tied"] else ""), f"{params['decoder']:,}")
    summary.add_row("  cell, supernet", f"{params['cell_supernet']:,}")
    summary.add_row("  cell, derived", _range_text(params["cell_derived_min"], params["cell_derived_max"]))
    summary.add_row("FLOPs/token, supernet", f"{flops['supernet']:,}")
    summary.add_row("FLOPs/token, derived", _range_text(flops["derived_min"], flops["derived_max"]))
    console.print(summary)

    nodes = Table(title="nodes (params: supernet / derived)")
    for column in ("node", "kind", "size", "keep/edges", "choices", "arch", "params"):
        nodes.add_column(column, justify="left" if column in ("node", "kind") else "right", no_wrap=True)
    for n in data["nodes"]:
        mixed = n["kind"] == "mixed"
        kind = f"{n['transform']} mix" if mixed else n["kind"]
        if mixed and len(n["combine"]) > 1:
            kind += f" {{{', '.join(n['combine'])}}}"
        derived = _range_text(n["params_derived_min"], n["params_derived_max"])
        node_params = f"{n['params_supernet']:,}" if derived == f"{n['params_supernet']:,}" else f"{n['params_supernet']:,} / {derived}"
        nodes.add_row(
            escape(n["name"]),
            escape(kind),
            str(n["dim"]),
            f"{n['keep']}/{len(n['edges'])}" if mixed else "",
            f"{n['choices']:,}",
            f"{n['arch_weights_valid']}" if mixed else "",
            node_params,
        )
    console.print(nodes)
    if data.get("growth"):
        _print_growth(console, data["growth"])


def _print_growth(console, growth: dict) -> None:
    """The sizes of a growing space at its start and at its maximum (essdsl/lang/growth.py)."""
    from rich.table import Table

    when = f"every {growth['period']} {growth['unit']}" if growth["trigger"] == "every" else f"plateau {growth['period']} {growth['unit']}"
    table = Table(title=f"grow {growth['family']}: {when}, mode {growth['mode']}")
    for column in ("", "start", "max"):
        table.add_column(column, justify="left" if not column else "right")
    start, most = growth["start"], growth["max"]

    def count(entry):
        return f"{entry['architectures']:,}" if entry["architectures"] is not None else f"10^{entry['architectures_log10']:.2f}"

    table.add_row("nodes", str(start["nodes"]), str(most["nodes"]))
    table.add_row("architectures", count(start), count(most))
    table.add_row("architecture weights", f"{start['arch_weights']:,}", f"{most['arch_weights']:,}")
    table.add_row("parameters, supernet", f"{start['params_supernet']:,}", f"{most['params_supernet']:,}")
    table.add_row(
        "parameters, derived",
        _range_text(start["params_derived_min"], start["params_derived_max"]),
        _range_text(most["params_derived_min"], most["params_derived_max"]),
    )
    table.add_row("FLOPs/token, supernet", f"{start['flops_supernet']:,}", f"{most['flops_supernet']:,}")
    console.print(table)


# ----------------------------------------------------------------- diff
@app.command()
def diff(
    old: Path = typer.Argument(..., help="the first .space file"),
    new: Path = typer.Argument(..., help="the second .space file"),
    ninp: Optional[int] = typer.Option(None, help=NINP_HELP),
    nhid: Optional[int] = typer.Option(None, help=NHID_HELP),
) -> None:
    """Show how two cells differ in meaning (not in layout, order, ranges, defaults or op-set names).

    One line per change: '+' added, '-' removed, '~' changed (old -> new).
    Exit status: 0 when the cells mean the same, 1 when they differ, 2 when a
    file cannot be read or has errors.

    Examples:

      essdsl diff spaces/darts_rnn.space spaces/idarts_rnn.space

      essdsl diff spaces/darts_rnn.space mine.space && echo "same space"
    """
    sizes = parse_sizes(ninp, nhid, None)
    graph_old = _load(old, sizes, exit_code=2)
    graph_new = _load(new, sizes, exit_code=2)
    from essdsl.lang.diff import diff_graphs, render_edits

    edits = diff_graphs(graph_old, graph_new)
    if not edits:
        typer.echo(f"{old} and {new} describe the same cell", err=True)
        raise typer.Exit(0)
    text = render_edits(edits)
    typer.echo(text if text.endswith("\n") else text + "\n", nl=False)
    raise typer.Exit(1)
