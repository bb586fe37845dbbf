"""The glibc allocator setting the model-running commands apply (dhan.allocator)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dhan.allocator import tune_malloc


def _glibc() -> bool:
    import ctypes

    try:
        ctypes.CDLL(None).gnu_get_libc_version  # noqa: B018
    except (OSError, AttributeError):
        return False
    return sys.platform.startswith("linux")


def test_opt_out_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DHAN_MALLOC_TUNING", "0")
    assert tune_malloc() is False


@pytest.mark.skipif(not _glibc(), reason="mallopt settings exist on glibc only")
def test_large_temporaries_stop_page_faulting_after_tuning() -> None:
    # In a fresh process, a loop that allocates and frees 64 MB temporaries (like a step's (B, T, D) activations):
    # without the setting glibc maps and unmaps each one (64 MB > its 32 MB mmap ceiling) and every iteration
    # page-faults all of them in again; with it the heap grows once and then serves them without a fault.
    code = """
import resource, sys, torch
from dhan.allocator import tune_malloc
if sys.argv[1] == "1":
    assert tune_malloc()
x = torch.ones(1024, 100, 160)
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    y = (x * 2).sigmoid_() + x
before = faults()
for _ in range(10):
    y = (x * 2).sigmoid_() + x
print(faults() - before)
"""
    run = [sys.executable, "-c", code]
    tuned = int(subprocess.run([*run, "1"], capture_output=True, text=True, check=True).stdout)
    plain = int(subprocess.run([*run, "0"], capture_output=True, text=True, check=True).stdout)
    pages_per_iteration = 2 * 64 * 2**20 // 4096  # two 64 MB temporaries
    assert plain > 5 * pages_per_iteration
    assert tuned < pages_per_iteration // 10
