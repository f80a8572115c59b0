"""Process-level CPU settings for a learner without a GPU (call once at start, never on import).

Measured on the 2-core development machine (bench/learner.py): glibc returns every allocation above
32 MB to the OS on free, so each backward pass page-faults fresh memory for the recipe critic's
40 MB weight gradients (bmm 74 ms instead of 58 ms); keeping freed memory in the heap removes that.
The policy node keeps it too: each weights message is tens of MB of buffers and copies, and page
faults were most of a 23.6 MB swap (bench/control.py: p95 60 ms -> 36 ms).
Intra-op threads that other processes keep descheduled turn every parallel op into a wait
(x10 slower updates on a loaded machine): use one thread per core the learner really owns.
"""
from __future__ import annotations

import ctypes
import ctypes.util

import torch

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def keep_freed_memory() -> bool:
    """glibc: serve large tensors from the heap and never trim it (no page faults per update)."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc
        return False


def configure_cpu(threads: int | None = None, *, allocator: bool = True) -> dict:
    """Set torch intra-op threads (None: leave) and the allocator policy; returns what was set."""
    if threads:
        torch.set_num_threads(int(threads))
    return {"threads": torch.get_num_threads(), "keep_freed_memory": keep_freed_memory() if allocator else False}
