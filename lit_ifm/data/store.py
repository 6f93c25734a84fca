"""How encoded splits are stored: flat files on disk, memory-mapped, built once and shared.

A store is one folder per data set and encoding setting::

    meta.json                           schema, report, split sizes and the slot layout (written last)
    <split>.records  N records of
                       ids     (S,) int32   global feature id per slot, the schema's padding id where empty
                       values  (V,) float32 x of the V slots that carry a number (numeric fields, libFM values
                                            other than 1); every other slot's value is 1 where it holds a
                                            feature, else 0
    <split>.labels   (N,) float32           the task's labels
    <split>.rows     (N,) int64             file row of each split row, for a one-file source split at random

A row's ids and values sit side by side. A batch is one index into the map of a small store; from a large one
(over :data:`RESIDENT_BUDGET`) it is one positioned read per row, or one per run of nearby rows (a block-shuffled
batch's blocks), which leaves nothing of the file resident: a training process stays flat in memory whatever the
number of rows.

A build writes into a temporary folder and renames it into place when complete, under a file lock, so a killed
build never leaves a folder that a later run trusts, and two processes building the same store build it once.
Every process (DDP ranks, DataLoader workers) maps the same files: the operating system's page cache holds them
once, and nothing is copied per process.
"""

from __future__ import annotations

import fcntl
import json
import mmap
import os
import shutil
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from lit_ifm.data.schema import Field, FieldSchema
from lit_ifm.data.sources import SplitOrigin

STORE_VERSION = 1  # bump when the layout or the encoding changes, so older stores are not reused
META = "meta.json"
# A memory map's pages count in the resident set once touched, and the kernel maps whole page-cache folios (up to
# megabytes) around each touched row: scattered rows of a large map soon make all of it resident. Arrays larger
# than this are therefore gathered by positioned reads (one per row, or one per run of rows), which copy the rows
# alone, so that a training process stays flat in memory whatever the number of rows; smaller ones are indexed in
# their map, about 10x faster (a positioned read costs about 1.5 microseconds of system call a row): 1 M
# Criteo-shaped rows (146 MB of training records) gather at 6.3 M rows/s from the map against 0.65 M by reads at
# 5 M rows, for at most this much more resident page cache.
RESIDENT_BUDGET = 256 * 2**20
# Rows read by positioned reads that lie at most this many bytes apart are read in one read with what lies between:
# a system call costs about as much as copying a few kilobytes more.
READ_GAP = 4096


class MappedArray:
    """A read-only array over a file, memory-mapped (an empty file gives an empty array), whose rows
    :meth:`take` copies out without keeping the file resident."""

    def __init__(self, path: Path, dtype: np.dtype | type | str, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        self._map: mmap.mmap | None = None
        if int(np.prod(shape)) == 0:
            self.array = np.empty(shape, dtype=self.dtype)
            return
        self._descriptor = os.open(path, os.O_RDONLY)  # for positioned reads; closed with this object
        weakref.finalize(self, os.close, self._descriptor)
        self._map = mmap.mmap(self._descriptor, 0, access=mmap.ACCESS_READ)
        self.array = np.frombuffer(self._map, dtype=self.dtype).reshape(shape)
        self._row_bytes = self.array[:1].nbytes
        with warnings.catch_warnings():  # torch warns that the map is read-only: its rows are only ever read
            warnings.simplefilter("ignore", UserWarning)
            self._byte_rows = torch.from_numpy(np.frombuffer(self._map, dtype=np.uint8).reshape(shape[0], -1))

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows ``rows`` (a copy): indexed in the map when it is small, else read from the file."""
        if self._map is None:
            return self.array[rows]
        if len(self._map) <= RESIDENT_BUDGET:  # torch copies rows 3-10x faster than numpy indexes records
            taken = self._byte_rows.index_select(0, torch.from_numpy(np.asarray(rows, dtype=np.int64)))
            return taken.numpy().view(self.dtype).reshape(len(rows), *self.shape[1:])
        # Not an index into the map, even unmapped again at once: a batch of 4096 scattered rows maps about 95 KB of
        # page cache per row first (390 MiB of a 3 GiB map), and the peak resident set grows with the map.
        return self._read(np.asarray(rows, dtype=np.int64))

    def _read(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` by positioned reads: one per span of rows that lie at most :data:`READ_GAP` bytes apart (an
        evaluation batch is one span, a block-shuffled batch one per block), then put in the order asked."""
        descriptor, size = self._descriptor, self._row_bytes
        if not len(rows):
            return np.empty((0, *self.shape[1:]), dtype=self.dtype)
        order = np.argsort(rows, kind="stable")
        ordered = rows[order]
        cuts = np.flatnonzero(np.diff(ordered) > 1 + READ_GAP // size) + 1
        firsts, lasts = ordered[np.r_[0, cuts]], ordered[np.r_[cuts - 1, len(ordered) - 1]]
        data = b"".join([os.pread(descriptor, size * (last + 1 - first), first * size)
                         for first, last in zip(firsts.tolist(), lasts.tolist())])
        span = np.repeat(np.arange(len(firsts)), np.diff(np.r_[0, cuts, len(ordered)]))
        span_start = np.cumsum(np.r_[0, lasts[:-1] + 1 - firsts[:-1]])
        at = np.empty_like(rows)  # where each row asked for lies in what was read
        at[order] = span_start[span] + ordered - firsts[span]
        spans = torch.frombuffer(bytearray(data), dtype=torch.uint8).view(-1, size)
        taken = spans.index_select(0, torch.from_numpy(at)).numpy()  # writable
        return taken.view(self.dtype).reshape(len(rows), *self.shape[1:])

    def __getstate__(self) -> dict:
        # Another process (a spawned worker or rank) maps the file again rather than receiving a copy; a store
        # that was never kept (a source of one's own, built in a folder removed once mapped) travels as a copy.
        state = {"path": self.path, "dtype": self.dtype, "shape": self.shape}
        return state if self.path.is_file() else {**state, "array": np.array(self.array)}

    def __setstate__(self, state: dict) -> None:
        if "array" in state:
            self.path, self.dtype, self.shape, self._map = state["path"], state["dtype"], state["shape"], None
            self.array = state["array"]
        else:
            self.__init__(state["path"], state["dtype"], state["shape"])


class EncodedSplit:
    """One encoded split: feature ids ``(N, S)``, the values of the slots that carry numbers ``(N, V)``, labels
    ``(N,)`` and where its rows come from (for messages). ``feature_ids`` is either an array (and ``slot_values``
    the values) or a store's mapped records, which hold both.

    >>> ids = np.array([[0, 3], [1, 4]], dtype=np.int32)
    >>> split = EncodedSplit("train", ids, np.array([[2.5], [0.0]], np.float32), (1,), np.ones(2, np.float32), 4)
    >>> split.feature_values.tolist()  # slot 1 carries its number; row 1's empty slot 1 is padding (id 4)
    [[1.0, 2.5], [1.0, 0.0]]
    """

    def __init__(self, name: str, feature_ids: np.ndarray | MappedArray, slot_values: np.ndarray | None,
                 value_slots: tuple[int, ...], labels: np.ndarray | MappedArray, padding_id: int,
                 origin: SplitOrigin | None = None):
        self.name, self.value_slots, self.padding_id = name, tuple(value_slots), int(padding_id)
        slots = self.value_slots
        # numeric fields sit side by side: a slice assigns their values a third faster than a list of columns
        side_by_side = bool(slots) and slots == tuple(range(slots[0], slots[-1] + 1))
        self._value_columns = slice(slots[0], slots[-1] + 1) if side_by_side else list(slots)
        self.origin = origin or SplitOrigin(Path(name))
        if isinstance(feature_ids, MappedArray):  # a store's records: ids and values side by side
            self._records = feature_ids
        else:
            records = np.empty(len(feature_ids), dtype=record_type(feature_ids.shape[1], len(self.value_slots)))
            records["ids"], records["values"] = feature_ids, slot_values
            self._records = _InMemory(records)
        self._labels = labels if isinstance(labels, MappedArray) else _InMemory(labels)

    def __len__(self) -> int:
        return self._labels.shape[0]

    @property
    def feature_ids(self) -> np.ndarray:
        """``(N, S)`` int32 ids (memory-mapped when stored)."""
        return self._records.array["ids"]

    @property
    def labels(self) -> np.ndarray:
        """``(N,)`` float32 labels."""
        return self._labels.array

    @property
    def slot_values(self) -> np.ndarray:
        """``(N, V)`` float32 values of :attr:`value_slots`."""
        return self._records.array["values"]

    @property
    def feature_values(self) -> np.ndarray:
        """``(N, S)`` float32 values of every slot, built in memory: for small data and inspection."""
        return self.values_of(self.feature_ids, self.slot_values)

    def values_of(self, ids: np.ndarray, slot_values: np.ndarray) -> np.ndarray:
        """The ``(B, S)`` values of rows whose ids and stored values are given: 1 where a slot holds a
        feature, 0 where it is empty, the stored number in :attr:`value_slots`."""
        values = (ids != self.padding_id).astype(np.float32)
        if self.value_slots:
            values[:, self._value_columns] = slot_values
        return values

    def unit_values(self, values: np.ndarray) -> bool:
        """Whether every one of ``values`` (rows of this split's values) is 1 (:attr:`FieldBatch.unit_values`):
        every slot holds a feature and none stores a number."""
        return not self.value_slots and bool(values.all())

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids ``(B, S)`` int64, values ``(B, S)`` float32 and labels ``(B,)`` of ``rows`` (see
        :meth:`MappedArray.take`)."""
        records = self._records.take(rows)
        ids = records["ids"]
        return ids.astype(np.int64), self.values_of(ids, records["values"]), self._labels.take(rows)


class _InMemory:
    """An array held in memory, with :class:`MappedArray`'s interface."""

    def __init__(self, array: np.ndarray):
        self.array = array

    @property
    def shape(self) -> tuple[int, ...]:
        return self.array.shape

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.array[rows]


def record_type(num_slots: int, num_values: int) -> np.dtype:
    """A stored row: its ``ids`` (S int32) and the ``values`` of its V value slots (float32), side by side.

    >>> record_type(39, 13).itemsize
    208
    """
    return np.dtype([("ids", "<i4", (num_slots,)), ("values", "<f4", (num_values,))])


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
               rows: dict[str, int], report: list[str], summary: str) -> None:
    """The store's description, written once every array is in place."""
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
    }
    (folder / META).write_text(json.dumps(meta, indent=1))


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


class Store:
    """An opened store: its schema, report, summary and memory-mapped splits."""

    def __init__(self, folder: Path):
        meta = json.loads((folder / META).read_text())
        self.folder = folder
        self.schema = FieldSchema([Field(**field) for field in meta["fields"]], meta["num_features"],
                                  tuple(meta["label_range"]))
        self.report: list[str] = meta["report"]
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


def build_once(root: Path, key: str, build: Callable[[Path], None]) -> Path:
    """The folder ``root/key``, built by ``build(temporary_folder)`` unless it exists.

    The build writes into a temporary folder that is renamed into place only when ``build`` returns, so a killed
    build leaves nothing that looks complete. A lock file makes a second process that asks for the same store
    wait for the first one's build and then use it; a lock dies with its process, so a killed build never blocks.
    """
    final = root / key
    if (final / META).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with (root / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / META).is_file():  # built by another process while this one waited
            return final
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
