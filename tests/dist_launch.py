"""Start N local processes the way torchrun does (RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT in the environment), for the data-parallel tests.

Plain subprocesses instead of torchrun itself: a test can kill one rank and time
how long the others take to exit, and it saves torchrun's agent start-up; the
end-to-end tests also run the real torchrun once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("dist_worker.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int, **extra) -> dict:
    env = dict(os.environ)
    env.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_ranks(argv: list[str], world: int = 2, cwd=ROOT, **extra) -> list[subprocess.Popen]:
    """``python argv...`` as ``world`` ranks of one run."""
    port = free_port()
    return [
        subprocess.Popen([sys.executable, *argv], cwd=cwd, env=rank_env(r, world, port, **extra),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in range(world)
    ]


def wait_all(procs, timeout: float) -> list[tuple[int, str, str]]:
    """(returncode, stdout, stderr) of each process; kills all and fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    out = []
    try:
        for p in procs:
            stdout, stderr = p.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            out.append((p.returncode, stdout, stderr))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError(f"ranks still running after {timeout} s (a hang)") from None
    return out


def run_worker(scenario: str, outdir, world: int = 2, timeout: float = 120, **extra) -> list[tuple[int, str, str]]:
    """Run tests/dist_worker.py's ``scenario`` on ``world`` ranks; assert they all succeeded."""
    results = wait_all(start_ranks([str(WORKER), scenario, str(outdir)], world, **extra), timeout)
    for rank, (code, stdout, stderr) in enumerate(results):
        assert code == 0, f"rank {rank} exited {code}:\n{stdout}\n{stderr[-4000:]}"
    return results
