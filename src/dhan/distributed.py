"""Multi-process training plumbing: the process group from torchrun's environment and a few collectives.

``torchrun --nproc-per-node N -m dhan train ...`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`distributed` reads them and joins the process
group (``gloo`` for CPU tensors, plus ``nccl`` for CUDA tensors when training on GPUs). Without ``WORLD_SIZE > 1``
everything here is a no-op and training runs in one process as before.

Every decision that changes control flow (stop, early stop, a non-finite loss, an error during setup) is taken on
one rank and broadcast, or reduced so that all ranks see the same value; no rank ever waits in a collective that
another rank skipped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from dhan.errors import UserError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the process group (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    cuda: bool = False  # the group can also reduce CUDA tensors (nccl)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any] | None:
        """Every rank's ``obj`` in rank order, on rank 0 (None elsewhere)."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out

    def all_sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of ``values`` over the ranks (float64), the same list on every rank."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return [float(v) for v in t.tolist()]

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 only and give its result to every rank; a UserError there is raised on all ranks."""
        if not self.enabled:
            return fn()
        result: tuple[str, Any] = ("ok", None)
        if self.is_main:
            try:
                result = ("ok", fn())
            except UserError as exc:
                result = ("error", (type(exc), str(exc)))
        result = self.broadcast(result)
        if result[0] == "error":
            cls, message = result[1]
            raise (cls if issubclass(cls, UserError) else UserError)(message)
        return result[1]


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        raise UserError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None


@contextmanager
def distributed(device: str = "auto") -> Iterator[DistContext]:
    """Join the torchrun process group for the duration of the block (a no-op when ``WORLD_SIZE`` is 1 or unset).

    ``device`` is ``train.device``: with CUDA available and a device other than ``cpu`` the group gets an ``nccl``
    backend for CUDA tensors besides ``gloo``. A group initialised by the caller is used as it is and left open.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        yield DistContext()
        return
    cuda = torch.cuda.is_available() and device != "cpu"
    owned = not dist.is_initialized()
    local_rank = _env_int("LOCAL_RANK", 0)
    if owned:
        for name in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
            if name not in os.environ:
                raise UserError(f"WORLD_SIZE={world} but {name} is not set; launch with torchrun --nproc-per-node N")
        if cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(
            backend="cpu:gloo,cuda:nccl" if cuda else "gloo",
            timeout=timedelta(seconds=_env_int("DHAN_DIST_TIMEOUT", 1800)),
        )
    ctx = DistContext(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=local_rank,
        local_world_size=_env_int("LOCAL_WORLD_SIZE", dist.get_world_size()),
        cuda=cuda,
    )
    if owned and ctx.is_main:
        log.info("distributed training: %d processes (%s)", ctx.world_size, dist.get_backend())
    try:
        yield ctx
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()
