"""``torchrun --nproc_per_node=N -m essdsl search|train …``: the command line's side of
data-parallel runs (the numerics are in :mod:`essdsl.nas.distributed`; rank 0 alone
writes the run folder, :mod:`essdsl.nas.runs`).

:func:`data_parallel` wraps a command: under torchrun it joins the process group
before the command runs, keeps only rank 0's output (the other ranks print nothing
but their own errors, prefixed with their rank) and leaves the group after it.
Without torchrun's environment the command runs unchanged.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

import typer

from essdsl.cli.common import fail


def data_parallel(command: Callable) -> Callable:
    """Run ``command`` as one rank of a torchrun launch when there is one (see the module doc)."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        from essdsl.nas import distributed

        if not distributed.launched_by_torchrun() or distributed.current().enabled:
            return command(*args, **kwargs)  # one process, or called from a running command
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


__all__ = ["data_parallel"]
