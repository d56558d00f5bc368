"""Spread independent work over torchrun ranks or local worker processes, and gather it in a fixed order.

Two uses in the lab:

* **Outcome tables** (``experiments/build_table.py``): each rank builds its own batches, the ranks meet at one
  :func:`barrier`, rank 0 merges. :class:`DistEnv` says who this process is, :func:`rank_device` which device it
  drives, :func:`process_group` opens the collective backend (gloo on CPU, NCCL on GPU).
* **Independent jobs** (e.g. the (scheduler, seed) pairs of a scheduler comparison): :func:`run_jobs` runs ``fn`` on
  every job and returns the results in job order, whether it runs in one process, in a pool of local worker processes,
  or spread over ``torchrun`` ranks. With a ``fn`` that depends only on its job (seeds inside the job), the returned
  list is identical in all three cases.

Launch under torchrun::

    torchrun --nproc_per_node=K script.py ...                                   # one machine, K processes / GPUs
    torchrun --nnodes=N --node_rank=I --nproc_per_node=K \\
             --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT script.py ...        # on each of N machines

Nothing here needs torch.distributed when the script runs as a plain single process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import multiprocessing
import os
import signal
from typing import Any, Callable, Iterator, Mapping, Sequence, TypeVar

import torch
import torch.distributed as dist

from adainf_env.errors import ConfigError

__all__ = ["DistEnv", "rank_device", "process_group", "barrier", "run_jobs", "split_jobs"]

J = TypeVar("J")
R = TypeVar("R")

# Generous: a rank that finishes its share early waits at the barrier for the slowest one (a CPU table build of
# one split can take the better part of an hour).
DEFAULT_TIMEOUT_S = 4 * 3600


@dataclasses.dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun launch (rank 0 of 1 when not launched by torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun (RANK / WORLD_SIZE / LOCAL_RANK set)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "DistEnv":
        """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as torchrun sets them; all absent → a single process."""
        env = os.environ if environ is None else environ
        keys = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        present = [k for k in keys if k in env]
        if not present:
            return cls()
        if len(present) != len(keys):
            raise ConfigError(f"torch.distributed environment incomplete: {present} set, {keys} expected "
                              "(launch with torchrun)")
        try:
            rank, world, local = (int(env[k]) for k in keys)
        except ValueError:
            raise ConfigError(f"RANK / WORLD_SIZE / LOCAL_RANK must be integers, got "
                              f"{[env[k] for k in keys]}") from None
        if world < 1 or not 0 <= rank < world or local < 0:
            raise ConfigError(f"invalid torchrun layout: RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
        return cls(rank=rank, world_size=world, local_rank=local, launched=True)


def rank_device(device: str, env: DistEnv) -> torch.device:
    """The device this rank computes on: ``cpu``, or under torchrun ``cuda`` → ``cuda:LOCAL_RANK`` (one GPU per rank)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine")
    if not env.launched:
        return dev
    if dev.index is not None and env.world_size > 1:
        raise ConfigError(f"--device {device}: under torchrun pass --device cuda; rank r uses cuda:LOCAL_RANK")
    if env.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"LOCAL_RANK={env.local_rank} but this machine has {torch.cuda.device_count()} GPU(s); "
                          "use --nproc_per_node ≤ the number of GPUs")
    torch.cuda.set_device(env.local_rank)
    return torch.device("cuda", env.local_rank)


@contextlib.contextmanager
def process_group(env: DistEnv, device: torch.device, *,
                  timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[str | None]:
    """Open the default process group for a torchrun launch (NCCL for CUDA devices, gloo otherwise); yields the
    backend name, or None for a plain single process (nothing to open). Closed on exit."""
    if not env.launched or dist.is_initialized():
        yield dist.get_backend() if dist.is_initialized() else None
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    kw: dict[str, Any] = {"device_id": device} if backend == "nccl" else {}
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s), **kw)
    try:
        yield backend
    finally:
        dist.destroy_process_group()


def barrier(device: torch.device | None = None) -> None:
    """Wait for every rank (no-op without a process group)."""
    if not dist.is_initialized():
        return
    if dist.get_backend() == "nccl" and device is not None and device.type == "cuda":
        dist.barrier(device_ids=[device.index if device.index is not None else torch.cuda.current_device()])
    else:
        dist.barrier()


# ------------------------------------------------------------------------------------------------ independent jobs
def split_jobs(num_jobs: int, rank: int, world_size: int) -> list[int]:
    """Indices of the jobs rank ``rank`` runs: strided (job i → rank i mod world_size), so ranks differ by ≤ 1 job."""
    return list(range(rank, num_jobs, world_size))


def _limit_threads(threads: int) -> None:
    """Pool initializer: share the cores between workers instead of every worker using all of them. Workers ignore
    Ctrl-C: the parent gets it, ends the pool and says what was saved (no traceback from every worker)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _run_local(jobs: Sequence[J], fn: Callable[[J], R], workers: int | None) -> list[R]:
    if workers is None or workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in jobs]
    workers = min(workers, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // workers)
    # spawn, not fork: a forked child inherits torch's thread pools and locks in an undefined state.
    with multiprocessing.get_context("spawn").Pool(workers, initializer=_limit_threads, initargs=(threads,)) as pool:
        return pool.map(fn, jobs, chunksize=1)


def run_jobs(jobs: Sequence[J], fn: Callable[[J], R], *, workers: int | None = None) -> list[R]:
    """``[fn(job) for job in jobs]``, spread over torchrun ranks and/or local worker processes.

    * Under torchrun (``WORLD_SIZE`` > 1): rank r runs jobs r, r + W, r + 2W, … (W = world size); the results are
      gathered over a gloo group and every rank returns the full list in job order (write files on rank 0 only,
      :attr:`DistEnv.is_main`).
    * ``workers`` > 1: this process's jobs run in a pool of that many ``spawn`` worker processes (``fn`` and the
      jobs must be picklable: a module-level function and plain data), each limited to its share of the cores.
    * Otherwise: one after another in this process.

    The result list equals a one-process run whenever ``fn`` depends only on its job (put the seed in the job).
    Results travel between ranks as pickles of this run's own objects; nothing is unpickled from files.
    """
    jobs = list(jobs)
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ConfigError(f"workers must be a positive integer or None, got {workers!r}")
    env = DistEnv.from_environ()
    if env.world_size == 1:
        return _run_local(jobs, fn, workers)
    mine = split_jobs(len(jobs), env.rank, env.world_size)
    local = _run_local([jobs[i] for i in mine], fn, workers)
    with process_group(env, torch.device("cpu")):
        # A gloo group for the gather even when the default group is NCCL (objects are gathered on the CPU).
        group = dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None
        gathered: list[Any] = [None] * env.world_size
        dist.all_gather_object(gathered, local, group=group)
    out: list[Any] = [None] * len(jobs)
    for rank, results in enumerate(gathered):
        for i, r in zip(split_jobs(len(jobs), rank, env.world_size), results):
            out[i] = r
    return out
