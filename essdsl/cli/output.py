"""Console output of the run commands that reads the same on a terminal and in a log.

On a terminal, tables are rich tables and progress is a live bar.  When the
stream is a pipe or a file, rich would wrap every line at 80 columns (cutting
numbers and genotype entries in two) and write progress frames ending in
``\\r``; there the same content is printed as plain, unwrapped lines instead.
"""

from __future__ import annotations

from typing import Optional, Sequence


def console(stderr: bool = False):
    """A rich console that never wraps printed text (``soft_wrap``); colour and
    live output only on a terminal (rich's own detection)."""
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True)


def print_table(out, title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], right: Optional[set] = None) -> None:
    """``rows`` under ``columns`` on the console ``out``: a rich table on a terminal,
    otherwise the title and space-aligned columns, one line per row, never wrapped."""
    right = right or set()
    if out.is_terminal:
        from rich.table import Table

        table = Table(title=title)
        for column in columns:
            table.add_column(column, justify="right" if column in right else "left")
        for row in rows:
            table.add_row(*row)
        out.print(table)
        return
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def line(cells):
        return "  ".join(cell.rjust(w) if col in right else cell.ljust(w) for cell, w, col in zip(cells, widths, columns)).rstrip()

    text = "\n".join([f"{title}:", line(columns), *(line(r) for r in rows)])
    out.print(text, markup=False, highlight=False, soft_wrap=True)


__all__ = ["console", "print_table"]
