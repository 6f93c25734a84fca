"""Checking that a model's parameters fit in memory before they are allocated; glibc's malloc thresholds while a
data store is built (freed memory handed back) and while a model trains (freed memory kept for reuse)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lit_ifm.errors import ConfigError


def available_memory() -> int:
    """Bytes this process can still allocate: the kernel's ``MemAvailable``, within a cgroup's limit when one is
    set (containers), else the physical memory."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, ValueError):
        pass
    return available


def format_bytes(count: float) -> str:
    """
    >>> format_bytes(7.5 * 2**40), format_bytes(512)
    ('7.5 TiB', '512 B')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError  # unreachable


def check_parameter_memory(model: str, rows: int, width: int, bytes_per_value: int = 4) -> None:
    """Refuses embedding tables of ``rows x width`` values that cannot fit in the memory available, before
    anything is allocated (an allocation that is too large fails late, or makes the machine swap)."""
    needed = rows * width * bytes_per_value
    available = available_memory()
    if needed > available:
        raise ConfigError(f"{model} needs {format_bytes(needed)} for its embedding tables ({rows:,} feature ids x "
                          f"{width} values), more than the {format_bytes(available)} of memory available: lower "
                          "embedding_dim, or raise min_count to drop rare values")


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
RETURNED_FROM = 128 << 10  # glibc's own starting threshold
GLIBC_CEILING = 32 << 20  # where glibc stops raising the threshold on 64-bit machines


def _glibc_mallopt():
    """glibc's ``mallopt``, or None under another C library (musl, macOS, Windows), whose allocators keep no such
    threshold, and where the process was started with thresholds of its own (``MALLOC_*_THRESHOLD_``, or
    ``GLIBC_TUNABLES``), which are left as they are."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ or \
            "malloc.mmap_threshold" in tunables or "malloc.trim_threshold" in tunables:
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        return libc.mallopt
    except (OSError, AttributeError, TypeError):  # TypeError: Windows, where CDLL wants a name
        return None


def keep_freed_memory_for_reuse() -> None:
    """Has glibc keep freed blocks of up to 32 MiB for reuse, and trim its heaps only past 64 MiB free: the
    thresholds where its own raising of them ends. It starts them at 128 KiB and raises them only as larger blocks
    are freed, so a training process gives the memory of its tensors back and faults it in again step after step:
    FM's plain loop on Frappe at batch 4096 ran at 0.40-0.50 M samples/s with them held, 0.25-0.44 M without, and
    NFM's at 0.36-0.41 M against 0.30-0.40 M (nine and six epochs each, alternating, on the 2-core machine of
    benchmarks/RESULTS.md). Elsewhere than glibc this does nothing.
    """
    if (mallopt := _glibc_mallopt()) is not None:
        _for_reuse(mallopt)


def _for_reuse(mallopt) -> None:
    mallopt(M_MMAP_THRESHOLD, GLIBC_CEILING)
    mallopt(M_TRIM_THRESHOLD, 2 * GLIBC_CEILING)


@contextmanager
def freed_blocks_returned() -> Iterator[None]:
    """While inside, blocks of 128 KiB and more that the process frees go straight back to the system; on leaving,
    :func:`keep_freed_memory_for_reuse`.

    glibc serves blocks over a threshold from ``mmap``, which a free returns at once, and smaller ones from its
    heaps, which keep freed memory for reuse; it raises the threshold to the largest block freed so far. A store's
    count pass frees blocks that grow with the number of distinct values, so the encode pass after it kept 0.15 GiB
    more of freed memory at 20 M Criteo-shaped rows than at 1 M (peak RssAnon 1.05-1.08 against 0.89-0.90 GiB; held
    at 128 KiB: 0.97-0.98 against 0.85, benchmarks/RESULTS.md). Held there afterwards, it made FM's training at
    batch 1024 three times slower. Elsewhere than glibc this does nothing. Two builds at once in one process (two
    threads) share the setting: the first to finish ends it for both.
    """
    mallopt = _glibc_mallopt()
    if mallopt is None:
        yield
        return
    mallopt(M_MMAP_THRESHOLD, RETURNED_FROM)
    try:
        yield
    finally:
        _for_reuse(mallopt)
