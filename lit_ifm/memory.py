"""Checking that a model's parameters fit in memory before they are allocated."""

from __future__ import annotations

import os
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
