"""Fault injection for the crash tests: a test hook, inert unless ``DHAN_FAULT_INJECT`` is set.

``DHAN_FAULT_INJECT=POINT:N[,POINT:N...]`` kills the process with SIGKILL (no cleanup, no ``finally``, exactly as
the kernel's OOM killer or a preemption would) the ``N``-th time it reaches ``POINT`` (counting from 1 in this
process). The points:

``step``
    inside a training step, after the backward pass and before the optimiser step;
``eval``
    inside an evaluation, after its first batch was scored;
``checkpoint_write``
    inside a checkpoint write, when half of the bytes are in the temporary file;
``checkpoint_rotate``
    between moving ``last.pt`` to ``last.prev.pt`` and renaming the new file to ``last.pt``.

Only the tests set the variable (``tests/test_crash.py``); it is documented in ``docs/reliability.md``.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter

log = logging.getLogger(__name__)

ENV = "DHAN_FAULT_INJECT"
POINTS = ("step", "eval", "checkpoint_write", "checkpoint_rotate")

_seen: Counter[str] = Counter()


def _plan() -> dict[str, int]:
    spec = os.environ.get(ENV, "").strip()
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition(":")
        if name not in POINTS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{ENV}={spec!r}: expected POINT:N with POINT one of {', '.join(POINTS)} and N >= 1")
        out[name] = int(count)
    return out


def fault_point(name: str) -> None:
    """Count one arrival at ``name``; SIGKILL this process when the plan says so. Free when the hook is unset."""
    if ENV not in os.environ:
        return
    _seen[name] += 1
    if _plan().get(name) == _seen[name]:
        log.warning("%s: killing this process at %s #%d", ENV, name, _seen[name])
        os.kill(os.getpid(), signal.SIGKILL)
