"""Encoded splits as arrays over a store's files, memory-mapped: a batch is one index into the map of a small store,
or positioned reads of its rows from a large one (over :data:`RESIDENT_BUDGET`), so that a training process stays
flat in memory whatever the number of rows. Every process (DDP ranks, DataLoader workers) maps the same files: the
operating system's page cache holds them once, and nothing is copied per process."""

from __future__ import annotations

import mmap
import os
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch

from lit_ifm.data.rows.splits import SplitOrigin
from lit_ifm.errors import DataError

# A memory map's pages count in the resident set once touched, and the kernel maps whole page-cache folios (up to
# megabytes) around each touched row: scattered rows of a large map soon make all of it resident. Arrays larger
# than this are therefore gathered by positioned reads (one per row, or one per run of rows), which copy the rows
# alone; smaller ones are indexed in their map, several times faster, for at most this much more resident page
# cache (benchmarks/RESULTS.md, scale).
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
        :meth:`MappedArray.take`). An id outside the schema's range is refused: the store was damaged where opening it
        checks no checksum (:mod:`~lit_ifm.data.store.integrity` samples a large file), and the embedding would fail
        on it, or read another row's."""
        records = self._records.take(rows)
        ids = records["ids"]
        if len(ids) and (ids.min() < 0 or ids.max() > self.padding_id):
            self._refuse_ids(ids, rows)
        return ids.astype(np.int64), self.values_of(ids, records["values"]), self._labels.take(rows)

    def _refuse_ids(self, ids: np.ndarray, rows: np.ndarray) -> None:
        row, slot = (int(at[0]) for at in np.nonzero((ids < 0) | (ids > self.padding_id)))
        where = f"the store {self._records.path.parent}" if isinstance(self._records, MappedArray) else "the split"
        raise DataError(f"row {int(rows[row])} of the {self.name} split holds feature id {int(ids[row, slot])}, outside "
                        f"0..{self.padding_id}: {where} is damaged; delete it and run again to build it anew")


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

