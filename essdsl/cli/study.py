"""``essdsl sample`` and ``essdsl study run|report``: uniform genotypes of a space, and studies.

Logic lives in :mod:`essdsl.nas.sample` and :mod:`essdsl.study`; this module only
parses arguments and turns their errors into ``essdsl: error: …`` and exit 1.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import typer

from essdsl.cli import app
from essdsl.cli.common import fail, print_report

study_app = typer.Typer(
    help="Compare spaces and strategies (DARTS, random sampling, fixed genotypes) over seeds under one budget.",
    no_args_is_help=True,
)
app.add_typer(study_app, name="study")


# ----------------------------------------------------------------- sample
@app.command()
def sample(
    space: Path = typer.Argument(..., metavar="SPACE", help="the .space file to sample"),
    n: Optional[int] = typer.Option(None, "-n", help="how many genotypes to draw (uniformly, independently)"),
    seed: int = typer.Option(0, "--seed", help="random seed of the draw"),
    all_: bool = typer.Option(False, "--all", help="write every architecture of a small space instead of a sample"),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="folder for the genotype files (default samples/<space-name>)"),
) -> None:
    """Draw genotypes uniformly from the exact set of architectures that 'essdsl stats' counts.

    Each file is a genotype like the one a search derives, with provenance
    (space path and sha256, seed, index, rank among the space's architectures).

    Examples:

      essdsl sample spaces/darts_rnn.space -n 8 --seed 1 -o samples/darts

      essdsl sample tiny.space --all -o every
    """
    from essdsl.lang.check import check_file
    from essdsl.nas.sample import SampleError, draw, enumerate_all, sample_file_name
    from essdsl.files import atomic_write_text

    if all_ == (n is not None):
        fail("give either -n N (a uniform sample) or --all (every architecture)")
    if n is not None and n < 1:
        fail(f"-n must be a positive integer, got {n}")
    graph, report = check_file(space)
    print_report(report)
    if not report.ok or graph is None:
        raise typer.Exit(1)
    data = space.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    folder = out or Path("samples") / graph.name
    try:
        samples = list(enumerate_all(graph, str(space), sha) if all_ else draw(graph, str(space), sha, n, seed))
    except SampleError as exc:
        fail(f"{space}: {exc}")
    width = len(str(len(samples) - 1))
    for s in samples:
        name = f"{graph.name}-arch{s.rank:0{width}d}.space" if all_ else sample_file_name(graph.name, s, seed)
        atomic_write_text(folder / name, s.text)
        typer.echo(str(folder / name))


# ----------------------------------------------------------------- study
def _load(study_file: Path, out: Optional[Path]):
    from essdsl.study import StudyError, load_study

    try:
        return load_study(study_file, out)
    except StudyError as exc:
        fail(str(exc))


@study_app.command("run")
def study_run(
    study_file: Path = typer.Argument(..., metavar="STUDY.toml", help="the study file"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="processes to run at once"),
    out: Optional[Path] = typer.Option(None, "--out", help="study folder (default runs/study-<name>)"),
) -> None:
    """Run every (space, strategy, seed) of a study; run again to resume (finished runs are skipped)."""
    if jobs < 1:
        fail(f"--jobs must be a positive integer, got {jobs}")
    from essdsl.study import StudyError, run_study

    study = _load(study_file, out)
    try:
        runner = run_study(study, jobs)
    except KeyboardInterrupt:
        fail(f"interrupted; run 'essdsl study run {study_file}' again to resume", code=130)
    except StudyError as exc:
        fail(str(exc))
    if runner.stop.is_set():
        fail(f"interrupted; run 'essdsl study run {study_file}' again to resume", code=130)
    if runner.failures:
        fail(f"{len(runner.failures)} run(s) failed (details in each run folder's study-output.txt):\n  " + "\n  ".join(runner.failures))
    typer.echo(f"study {study.name}: {runner.counts['done']} steps run, {runner.counts['skipped']} already done; folder {study.out}", err=True)
    typer.echo(f"report with: essdsl study report {study_file}" + (f" --out {out}" if out else ""), err=True)


@study_app.command("report")
def study_report(
    study_file: Path = typer.Argument(..., metavar="STUDY.toml", help="the study file"),
    out: Optional[Path] = typer.Option(None, "--out", help="study folder (default runs/study-<name>)"),
) -> None:
    """Print the study's table and write table.md, table.csv, runs.csv and metric.png into the study folder."""
    from essdsl.study import StudyError, report_study

    study = _load(study_file, out)
    try:
        report = report_study(study)
    except StudyError as exc:
        fail(str(exc))
    typer.echo(report.markdown, nl=False)
    for path in report.files:
        typer.echo(f"wrote {path}", err=True)
