"""``essdsl tasks``: every registered task, its presets and its options (what
``--task`` and ``--task-option KEY=VALUE`` accept), read from the registry."""

from __future__ import annotations

from typing import Optional

import typer

from essdsl.cli import app


@app.command("tasks")
def tasks_command(name: Optional[str] = typer.Argument(None, help="one task (default: all)")) -> None:
    """List the tasks (--task NAME) and the options each takes (--task-option KEY=VALUE)."""
    from essdsl import tasks

    specs = [tasks.get(name)] if name else list(tasks.TASKS.values())
    for index, spec in enumerate(specs):
        if index:
            typer.echo("")
        fixed = ", ".join(f"{k}={v}" for k, v in spec.preset.items())
        typer.echo(f"{spec.name}: {spec.summary}" + (f" (fixes {fixed})" if fixed else ""))
        for option in spec.options:
            if option.name in spec.preset:
                continue
            kind = getattr(option.type, "__name__", "value")
            typer.echo(f"  {option.name}={kind.upper()}  {option.help} [default: {option.default}]")
