"""``torchrun --nproc_per_node=N -m essdsl search|train …``: the command line's side of
data-parallel runs (the numerics are in :mod:`essdsl.nas.distributed`).

:func:`data_parallel` wraps a command: under torchrun it joins the process group
before the command runs, keeps only rank 0's output (the other ranks print nothing
but their own errors, prefixed with their rank) and leaves the group after it.
Without torchrun's environment the command runs unchanged.  The other helpers are
the few places where a command must know it runs on several processes: choosing
the run folder once, writing only on rank 0, refusing to resume on another number
of processes, and stopping on SIGTERM as on Ctrl-C.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Callable

import typer

from essdsl.cli.common import fail


def data_parallel(command: Callable) -> Callable:
    """Run ``command`` as one rank of a torchrun launch when there is one (see the module doc)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        from essdsl.nas import distributed

        if not distributed.launched_by_torchrun() or distributed.current().enabled:
            return command(*args, **kwargs)  # one process, or called from a running command (the final training)
        device = kwargs.get("device", "auto")
        try:
            parallel = distributed.setup(None if device in (None, "auto") else device)
        except distributed.DistributedError as exc:
            fail(str(exc))
        except RuntimeError as exc:  # the rendezvous itself failed (port taken, peers never came)
            fail(f"cannot join the torchrun process group: {str(exc).splitlines()[0]}")
        real_stderr, quiet = sys.stderr, None
        if not parallel.is_main:  # rank 0 speaks for the run
            quiet = open(os.devnull, "w")
            sys.stdout = sys.stderr = quiet
        finished = False
        try:
            result = command(*args, **kwargs)
            finished = True
            return result
        except distributed.PeerLost as exc:
            print(f"essdsl: error: rank {parallel.rank}: {exc}", file=real_stderr)
            raise typer.Exit(1) from None
        except typer.Exit as exc:
            finished = exc.exit_code == 130  # a stop: every rank stopped after the same step
            if not parallel.is_main and exc.exit_code not in (0, 130):
                print(f"essdsl: rank {parallel.rank} stopped with exit status {exc.exit_code} (rank 0 says why)", file=real_stderr)
            raise
        finally:
            if finished:  # no rank leaves (torchrun would stop the others) before rank 0 has written everything
                try:
                    distributed.barrier(parallel, "the end of the run")
                except distributed.PeerLost:
                    pass
            if quiet is not None:
                sys.stdout, sys.stderr = sys.__stdout__, real_stderr
                quiet.close()
            distributed.teardown(parallel)

    return run


def is_main() -> bool:
    """Whether this process writes files and prints (always, outside torchrun)."""
    from essdsl.nas import distributed

    return distributed.current().is_main


def choose_run_dir(run_dir: Path) -> Path:
    """Rank 0's run folder on every rank (a default name holds a timestamp, which the
    ranks could read a second apart)."""
    from essdsl.nas import distributed

    return Path(distributed.broadcast_object(distributed.current(), str(run_dir)))


def launch_record() -> dict:
    """What the run manifest records about the launch: ``{"world_size": N, "backend": …}``."""
    from essdsl.nas import distributed

    return distributed.current().launch()


def check_same_launch(run: dict) -> None:
    """Refuse to resume a run on another number of processes than it was started on:
    each process carries its own share of the hidden state between steps."""
    from essdsl.nas import distributed

    started = int((run.get("launch") or {}).get("world_size", 1))
    now = distributed.current().world_size
    if started != now:
        how = "without torchrun (one process)" if started == 1 else f"with torchrun --nproc_per_node={started} (or {started} processes over all nodes)"
        fail(
            f"refusing to resume: this run was started on {started} process{'es' if started != 1 else ''} and this launch has {now}; "
            f"each process carries its share of the batch's state between steps, so resume it {how}"
        )


def compile_refusal() -> str:
    """Why a data-parallel run does not use torch.compile ("" in one process)."""
    from essdsl.nas import distributed

    if not distributed.current().enabled:
        return ""
    return ("running eagerly: data-parallel runs do not use torch.compile (the all-reduce of the synced BatchNorm sits "
            "inside the compiled time step; not supported here)")  # fmt: skip


def stopper(trainer, message: Callable[[], None]):
    """The context that turns a stop request into a checkpoint: Ctrl-C in one process
    (a second Ctrl-C interrupts at once); SIGINT or SIGTERM on any rank of a
    data-parallel run (torchrun forwards both to every rank and kills them 30 s later,
    so a second signal is not an 'at once' there)."""
    from essdsl.nas import distributed
    from essdsl.nas.trainer import StopOnSigint

    if not distributed.current().enabled:
        return StopOnSigint(trainer, message)

    def on_request():
        message()
        trainer.request_stop()

    return distributed.StopSignals(on_request, interrupt_on_repeat=False)


def after_main_wrote() -> None:
    """Wait until rank 0 has written what the others read next (the genotype the final
    training trains)."""
    from essdsl.nas import distributed

    distributed.barrier(distributed.current(), "rank 0's files")


__all__ = ["after_main_wrote", "check_same_launch", "choose_run_dir", "compile_refusal", "data_parallel", "is_main", "launch_record", "stopper"]
