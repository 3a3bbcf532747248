"""The C library's memory allocator, tuned for training loops (glibc on Linux).

glibc's ``malloc`` returns large freed blocks to the kernel and faults them in again when
the next training step allocates the same sizes; for networks with large activations
(TFN's fused tensor) the page faults cost about a sixth of the computation in system
time. Fixed thresholds keep those blocks in the process: the same results, fewer page
faults, a somewhat larger resident size. No torch import here: the CLI calls it first.
"""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h) and the values imsa sets, in MiB: what the
# environment variables MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ and MALLOC_TOP_PAD_ set.
SETTINGS = {"mmap_threshold": (-3, 64), "trim_threshold": (-1, 256), "top_pad": (-2, 64)}


def tune_allocator() -> bool:
    """Apply :data:`SETTINGS` with ``mallopt``; True where applied.

    Skipped off Linux, without glibc, when the user set any ``MALLOC_*`` variable (theirs
    wins), or with ``IMSA_ALLOCATOR=system``.
    """
    if sys.platform != "linux" or os.environ.get("IMSA_ALLOCATOR") == "system" or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # musl or another C library
        return False
    return all(mallopt(option, mib << 20) == 1 for option, mib in SETTINGS.values())
