"""Whether a store's files are still those its build wrote: the description (``meta.json``) records every other
file's size and checksum, and a checksum of itself, and a store is checked against them each time it is opened.

A file of up to :data:`FULL_CHECK_BYTES` is checksummed whole (CRC-32), so any changed byte of its labels, ids or
values is found; a larger one (the records of millions of rows) by its size and a digest of sampled blocks
(:func:`~lit_ifm.data.rows.files.sampled_digest`), so that opening a store reads a few MiB per file, not the store.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path

from lit_ifm.data.rows.files import sampled_digest

FULL_CHECK_BYTES = 256 << 20  # a full CRC of this much takes about 0.2 s


def checksum(path: Path) -> str:
    """``crc32:<hex>`` of a file of up to :data:`FULL_CHECK_BYTES`, else ``sampled:<hex>`` of sampled blocks."""
    if path.stat().st_size > FULL_CHECK_BYTES:
        return f"sampled:{sampled_digest(path)}"
    crc = 0
    with path.open("rb") as file:
        while block := file.read(16 << 20):
            crc = zlib.crc32(block, crc)
    return f"crc32:{crc:08x}"


def seal(description: dict, folder: Path, name: str) -> str:
    """``description`` as the JSON text of the store's description file ``name``, with the size and checksum of
    every other file of ``folder`` and a checksum of the whole."""
    files = {path.name: {"bytes": path.stat().st_size, "checksum": checksum(path)}
             for path in sorted(folder.iterdir()) if path.name != name}
    sealed = {**description, "files": files}
    return json.dumps({**sealed, "checksum": _own_checksum(sealed)}, indent=1)


def _own_checksum(description: dict) -> str:
    return f"crc32:{zlib.crc32(json.dumps(description, sort_keys=True).encode()):08x}"


def damage(folder: Path, name: str) -> str | None:
    """What is wrong with the store in ``folder`` whose description file is ``name``, in words; ``None`` when every
    file is as its build wrote it."""
    try:
        description = json.loads((folder / name).read_text())
    except FileNotFoundError:
        return f"{name} is missing"
    except (ValueError, UnicodeDecodeError):
        return f"{name} is not valid JSON"
    if not isinstance(description, dict) or "checksum" not in description or "files" not in description:
        return f"{name} lacks the checksums of the store's files"
    recorded = description.pop("checksum")
    if recorded != _own_checksum(description):
        return f"{name} does not match its checksum"
    for file, expected in description["files"].items():
        path = folder / file
        if not path.is_file():
            return f"{file} is missing"
        size = path.stat().st_size
        if size != expected["bytes"]:
            return f"{file} has {size:,} bytes, its build wrote {expected['bytes']:,}"
        if checksum(path) != expected["checksum"]:
            return f"{file} does not match the checksum its build recorded"
    return None
