"""glibc's malloc thresholds tuned for training: a process-wide setting, so only the program that owns the process
sets it (``python -m lit_ifm`` does; a library user opts in with :func:`tune_allocator`)."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from lit_ifm.errors import ConfigError

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
