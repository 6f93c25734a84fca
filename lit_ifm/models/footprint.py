"""What training a model's embedding tables takes in memory, checked before they are allocated: an allocation too
large fails late, or makes the machine swap."""

from __future__ import annotations

import os
from pathlib import Path

from lit_ifm.errors import ConfigError

# What each optimizer keeps per parameter, in full-size copies of it.
OPTIMIZER_STATE = {"adam": ("Adam's 2 moment estimates", 2), "adamw": ("AdamW's 2 moment estimates", 2),
                   "adagrad": ("Adagrad's sum of squared gradients", 1), "sgd": ("", 0)}


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


def training_state(optimizer: str, sparse_gradients: bool) -> tuple[int, str]:
    """How many full-size copies of a parameter training adds to the parameter itself, and what they are: its
    gradient (a few rows with sparse gradients, so not counted then) and the optimizer's state.

    >>> training_state("adam", False), training_state("adagrad", True), training_state("sgd", True)
    ((3, "their gradients, Adam's 2 moment estimates"), (1, "Adagrad's sum of squared gradients"), (0, ''))
    """
    state, state_copies = OPTIMIZER_STATE[optimizer]
    return (not sparse_gradients) + state_copies, ", ".join(
        [*([] if sparse_gradients else ["their gradients"]), *([state] if state_copies else [])])


def check_parameter_memory(model: str, rows: int, width: int, optimizer: str | None = None,
                           sparse_gradients: bool = False, bytes_per_value: int = 4) -> None:
    """Refuses embedding tables of ``rows x width`` values that cannot fit in the memory available. Without
    ``optimizer``: the tables themselves, before they are allocated. With it: what training adds to the tables
    (:func:`training_state`), before the optimizer is made; so a model that cannot train can still predict."""
    available = available_memory()
    if optimizer is None:
        needed = rows * width * bytes_per_value
        if needed > available:
            raise ConfigError(f"{model} needs {format_bytes(needed)} for its embedding tables ({rows:,} feature ids "
                              f"x {width} values), more than the {format_bytes(available)} of memory available: "
                              "lower embedding_dim, or raise min_count to drop rare values")
        return
    copies, what = training_state(optimizer, sparse_gradients)
    needed = rows * width * bytes_per_value * copies
    if needed > available:
        hint = "" if sparse_gradients else ", or train with sparse_embeddings (optimizer adagrad or sgd)"
        raise ConfigError(f"{model} needs {format_bytes(needed)} more to train its embedding tables ({rows:,} feature "
                          f"ids x {width} values: {what}), more than the {format_bytes(available)} of memory "
                          f"available: lower embedding_dim, raise min_count to drop rare values{hint}")
