"""A store: one folder of flat files per data set and encoding setting, built once and shared::

    meta.json                           schema, report, split sizes and the slot layout, and the size and checksum
                                        of every other file (written last; see :mod:`.integrity`)
    <split>.records  N records of
                       ids     (S,) int32   global feature id per slot, the schema's padding id where empty
                       values  (V,) float32 x of the V slots that carry a number (numeric fields, libFM values
                                            other than 1); every other slot's value is 1 where it holds a
                                            feature, else 0
    <split>.labels   (N,) float32           the task's labels
    <split>.rows     (N,) int64             file row of each split row, for a one-file source split at random
    encoding.pt                         the encoder's vocabularies and rules, and the labels' mapping (torch,
                                        tensors and plain types only: read with weights_only)

A build writes into a temporary folder and renames it into place when complete, under a file lock, so a killed
build never leaves a folder that a later run trusts, and two processes building the same store build it once. A
store whose files are no longer those its build wrote (a truncated, missing or changed file) is built again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from lit_ifm.data.rows.splits import SplitOrigin
from lit_ifm.data.schema import Field, FieldSchema
from lit_ifm.data.store.integrity import damage, seal
from lit_ifm.data.store.mapped import EncodedSplit, MappedArray, record_type

STORE_VERSION = 3  # bump when the layout or the encoding changes, so older stores are not reused
META = "meta.json"
ENCODING = "encoding.pt"  # how raw rows become the store's ids (lit_ifm.data.encoding.encoding_state)


class SplitWriter:
    """Appends encoded chunks of one split to its records and labels files, in row order, written as they come
    (not through a map, whose pages would stay resident)."""

    def __init__(self, folder: Path, name: str, num_slots: int, value_slots: tuple[int, ...]):
        self.name, self.value_slots = name, value_slots
        self.type = record_type(num_slots, len(value_slots))
        self._records = (folder / f"{name}.records").open("wb")
        self._labels = LabelFile(folder, name).path.open("wb")

    def append(self, ids: np.ndarray, values: np.ndarray, labels: np.ndarray) -> None:
        """Writes a chunk: ids ``(n, S)``, values ``(n, S)`` (only :attr:`value_slots` are kept), labels ``(n,)``."""
        records = np.empty(len(ids), dtype=self.type)
        records["ids"] = ids
        records["values"] = values[:, list(self.value_slots)]
        self._records.write(records.data)
        self._labels.write(np.ascontiguousarray(labels, dtype=np.float32).data)

    def close(self) -> None:
        """Closes the files."""
        self._records.close()
        self._labels.close()

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, *error) -> None:
        self.close()  # also when encoding failed: no file is left open


def write_meta(folder: Path, schema: FieldSchema, value_slots: tuple[int, ...], splits: dict[str, SplitOrigin],
               rows: dict[str, int], report: list[str], summary: str, labelled: bool = True) -> None:
    """The store's description, written once every array is in place (``labelled``: whether the rows had labels),
    with the size and checksum of each of them."""
    meta = {
        "version": STORE_VERSION,
        "fields": [asdict(field) for field in schema.fields],
        "num_features": schema.num_features,
        "label_range": list(schema.label_range),
        "value_slots": list(value_slots),
        "num_slots": schema.num_slots,
        "splits": {name: {"rows": rows[name], "path": str(origin.path),
                          "file_rows": None if origin.file_rows is None else len(origin.file_rows)}
                   for name, origin in splits.items()},
        "report": report,
        "summary": summary,
        "labelled": labelled,
    }
    (folder / META).write_text(seal(meta, folder, META))


def keep_file_rows(folder: Path, origins: dict[str, SplitOrigin]) -> dict[str, SplitOrigin]:
    """Writes the file rows of splits drawn at random from one file, and gives origins that map them from there
    rather than hold them in memory (8 bytes a row)."""
    kept = {}
    for name, origin in origins.items():
        if origin.file_rows is not None:
            np.ascontiguousarray(origin.file_rows, dtype=np.int64).tofile(folder / f"{name}.rows")
            origin = SplitOrigin(origin.path, MappedArray(folder / f"{name}.rows", np.int64,
                                                          (len(origin.file_rows),)).array)
        kept[name] = origin
    return kept


class LabelFile:
    """A split's float32 labels on disk, read and rewritten chunk by chunk (the task maps them once all are read)."""

    def __init__(self, folder: Path, name: str, chunk_rows: int = 1 << 20):
        self.path, self.chunk_rows = folder / f"{name}.labels", chunk_rows

    def __len__(self) -> int:
        return self.path.stat().st_size // 4

    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, labels)`` chunk by chunk."""
        for start in range(0, len(self), self.chunk_rows):
            yield start, np.fromfile(self.path, dtype=np.float32, count=self.chunk_rows, offset=4 * start)

    def map(self, function: Callable[[np.ndarray], np.ndarray]) -> None:
        """Replaces every label ``y`` by ``function(y)``, chunk by chunk."""
        mapped = self.path.with_suffix(".mapped")
        with mapped.open("wb") as out:
            for _, labels in self.chunks():
                out.write(np.ascontiguousarray(function(labels), dtype=np.float32).data)
        os.replace(mapped, self.path)

    def range_and_mean(self) -> tuple[float, float, float]:
        """The smallest label, the largest and their mean."""
        low, high, total = np.inf, -np.inf, 0.0
        for _, labels in self.chunks():
            low, high = min(low, float(labels.min())), max(high, float(labels.max()))
            total += float(labels.sum(dtype=np.float64))
        return low, high, total / len(self)

    def read(self) -> np.ndarray:
        """Every label, in memory (for small-data steps such as negative sampling)."""
        return np.fromfile(self.path, dtype=np.float32)

    def write(self, labels: np.ndarray) -> None:
        """Replaces every label."""
        np.ascontiguousarray(labels, dtype=np.float32).tofile(self.path)


def write_encoding(folder: Path, state: dict) -> None:
    """Saves how raw rows become the store's ids (plain types and tensors, read back with ``weights_only``)."""
    torch.save(state, folder / ENCODING)


class Store:
    """An opened store: its schema (with the encoding its rows were made with), report, summary and memory-mapped
    splits."""

    def __init__(self, folder: Path):
        meta = json.loads((folder / META).read_text())
        self.folder = folder
        self.schema = FieldSchema([Field(**field) for field in meta["fields"]], meta["num_features"],
                                  tuple(meta["label_range"]))
        self.schema.encoding = torch.load(folder / ENCODING, weights_only=True)
        self.report: list[str] = meta["report"]
        self.labelled: bool = meta.get("labelled", True)
        self.summary: str = meta["summary"]
        value_slots = tuple(meta["value_slots"])
        records = record_type(meta["num_slots"], len(value_slots))
        self.splits: dict[str, EncodedSplit] = {}
        for name, split in meta["splits"].items():
            rows = split["rows"]
            file_rows = None if split["file_rows"] is None else \
                MappedArray(folder / f"{name}.rows", np.int64, (split["file_rows"],)).array  # sampled rows follow
            self.splits[name] = EncodedSplit(
                name,
                MappedArray(folder / f"{name}.records", records, (rows,)),
                None,
                value_slots,
                MappedArray(folder / f"{name}.labels", np.float32, (rows,)),
                self.schema.padding_id,
                SplitOrigin(Path(split["path"]), file_rows),
            )


def build_once(root: Path, key: str, build: Callable[[Path], None], say: Callable[[str], None] | None = None) -> Path:
    """The folder ``root/key``, built by ``build(temporary_folder)`` unless it exists and its files are those its
    build wrote (:func:`~lit_ifm.data.store.integrity.damage`); a damaged one is built again, and ``say`` is told.

    The build writes into a temporary folder that is renamed into place only when ``build`` returns, so a killed
    build leaves nothing that looks complete. A lock file makes a second process that asks for the same store
    wait for the first one's build and then use it; a lock dies with its process, so a killed build never blocks.
    """
    final = root / key
    if final.is_dir() and damage(final, META) is None:
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f"{key}.lock"):
        if final.is_dir():  # built by another process while this one waited, or damaged
            problem = damage(final, META)
            if problem is None:
                return final
            (say or _to_stderr)(f"lit_ifm: the store {final} is damaged ({problem}): building it again")
        for leftover in [*root.glob(f"{key}.tmp-*"), final]:  # a killed build's (no one else builds it now)
            shutil.rmtree(leftover, ignore_errors=True)
        temporary = root / f"{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        temporary.mkdir()
        try:
            build(temporary)
            os.replace(temporary, final)
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
    return final


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on the file ``path``, which it removes before letting go, so that locks do not pile
    up. A process that waited on a lock file removed meanwhile locks the new one instead."""
    while True:
        lock = path.open("a")
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if os.fstat(lock.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        lock.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)
        lock.close()


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def read_split(folder: Path, name: str, num_slots: int, num_values: int) -> tuple[np.ndarray, np.ndarray]:
    """A written split's ids ``(N, S)`` and stored values ``(N, V)``, in memory (for small-data steps such as
    negative sampling)."""
    records = np.fromfile(folder / f"{name}.records", dtype=record_type(num_slots, num_values))
    return records["ids"], records["values"]


def rewrite_split(folder: Path, name: str, ids: np.ndarray, values: np.ndarray) -> None:
    """Replaces a written split's ids and stored values."""
    records = np.empty(len(ids), dtype=record_type(ids.shape[1], values.shape[1]))
    records["ids"], records["values"] = ids, values
    records.tofile(folder / f"{name}.records")


def keep_value_slots(folder: Path, name: str, num_slots: int, width: int, kept: list[int], chunk_rows: int) -> None:
    """Keeps only the value columns ``kept`` of a split written with ``width`` of them, chunk by chunk."""
    source, target = folder / f"{name}.records", folder / f"{name}.records.kept"
    old, new = record_type(num_slots, width), record_type(num_slots, len(kept))
    rows = source.stat().st_size // old.itemsize
    with target.open("wb") as out:
        for start in range(0, rows, chunk_rows):
            block = np.fromfile(source, dtype=old, count=min(chunk_rows, rows - start), offset=start * old.itemsize)
            records = np.empty(len(block), dtype=new)
            records["ids"], records["values"] = block["ids"], block["values"][:, kept]
            out.write(records.data)
    os.replace(target, source)
