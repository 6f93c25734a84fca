"""glibc's malloc thresholds tuned for training: a process-wide setting, so only the program that owns the process
sets it (``python -m lit_ifm`` does; a library user opts in with :func:`tune_allocator`)."""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
GLIBC_CEILING = 32 << 20  # where glibc stops raising its mmap threshold on 64-bit machines
ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")  # glibc's own settings, read at process start
TUNABLES = ("malloc.mmap_threshold", "malloc.trim_threshold")  # the same, as GLIBC_TUNABLES names them


def _glibc_mallopt():
    """glibc's ``mallopt``, or None under another C library (musl, macOS, Windows), whose allocators keep no such
    threshold, and where the process was started with thresholds of its own, which are left as they are."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if any(name in os.environ for name in ENVIRONMENT) or any(name in tunables for name in TUNABLES):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        return libc.mallopt
    except (OSError, AttributeError, TypeError):  # TypeError: Windows, where CDLL wants a name
        return None


def tune_allocator() -> bool:
    """Has glibc keep freed blocks of up to 32 MiB for reuse, and trim its heaps only past 64 MiB free: the values
    where glibc's own raising of these thresholds ends. glibc starts them at 128 KiB and raises them only as larger
    blocks are freed, so until then a training process hands the memory of its tensors back to the system and
    faults it in again step after step.

    The setting is process-wide and lasts until the process ends: every library in the process allocates under
    it. ``python -m lit_ifm`` calls this as it starts; importing lit_ifm or training one of its models does not.
    A program of one's own may call it once, at its start. Nothing is changed where the process was started with
    ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or a ``malloc.`` threshold in ``GLIBC_TUNABLES`` (those
    are kept), or under another C library than glibc.

    Returns:
        whether the thresholds were set.
    """
    mallopt = _glibc_mallopt()
    if mallopt is None:
        return False
    mallopt(M_MMAP_THRESHOLD, GLIBC_CEILING)
    mallopt(M_TRIM_THRESHOLD, 2 * GLIBC_CEILING)
    return True
