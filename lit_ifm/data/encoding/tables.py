"""Table columns (CSV, TSV, parquet, JSON lines, in-memory) to ids: per-field vocabularies of the training split,
hashed fields, numbers and multi-valued lists, encoded field by field, side by side."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lit_ifm.data.encoding.encoder import vocabulary_fingerprint
from lit_ifm.data.encoding.numbers import log_buckets, parse_numbers, stored_numbers
from lit_ifm.data.encoding.report import EncodingReport
from lit_ifm.data.encoding.words import ValueCounts, WordIndex, hash_buckets, pack_words, unpack_words
from lit_ifm.data.rows.splits import SplitOrigin
from lit_ifm.data.schema import Field, FieldKind
from lit_ifm.errors import DataError

T, R = TypeVar("T"), TypeVar("R")

# fields counted and encoded side by side; more threads than cores only contend
BUILD_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
MISSING = ""  # the token of a missing value when missing values are their own feature


@dataclass(frozen=True)
class ColumnSpec:
    """How one column becomes a field.

    Args:
        name: the column.
        kind: ``categorical``, ``numeric`` or ``multi`` (see :class:`~lit_ifm.data.schema.Field`).
        separator: a multi-valued column's separator.
        min_count: training values seen fewer times map to the out-of-vocabulary id.
        buckets: ``log2`` turns a numeric column into a categorical one: its value x becomes the bucket
            floor(ln(x)^2) for x > 2 and int(x) otherwise (the Criteo winners', as in BARS and FuxiCTR).
        hash_buckets: a categorical column's values map to this many ids by a hash (FNV-1a, 64 bits) rather
            than by a vocabulary; with ``min_count``, rarer values map to the out-of-vocabulary id.
        missing_as_id: a categorical column's missing values are a value of their own rather than absent.
    """

    name: str
    kind: FieldKind
    separator: str = "|"
    min_count: int = 1
    buckets: str | None = None
    hash_buckets: int | None = None
    missing_as_id: bool = False

    @property
    def is_number(self) -> bool:
        """A numeric column kept as a number (not bucketed into a categorical one)."""
        return self.kind == "numeric" and not self.buckets


def _as_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Categorical values compared as text; integral floats (ints with missing values) lose their '.0'."""
    if pa.types.is_floating(column.type):
        valid = pc.drop_null(column)
        if len(valid) == 0 or pc.all(pc.equal(valid, pc.floor(valid))).as_py():
            column = pc.cast(column, pa.int64())
    return pc.cast(column, pa.string())


class TableEncoder:
    """Per-field vocabularies of a table's training split; ids are laid out field after field, each
    field's out-of-vocabulary id last. Numeric fields take one id whose value is the number.

    The :class:`~lit_ifm.data.encoding.encoder.Encoder` protocol: training chunks go to :meth:`count`, then
    :meth:`finish` builds the vocabularies and :meth:`encode` applies them. Without a ``label`` column (a
    positive-only log), every row's label is 1.
    """

    def __init__(self, columns: list[ColumnSpec], label: str | None, max_values: int | None,
                 report: EncodingReport):
        self.columns, self.label, self.max_values, self.report = columns, label, max_values, report
        self.counts = {spec.name: ValueCounts(spec.name, spec.min_count) for spec in columns if _counted(spec)}
        self.longest = {spec.name: 0 for spec in columns if spec.kind == "multi"}

    @property
    def counted_columns(self) -> list[str]:
        """The columns :meth:`count` reads: a numeric field, or a hashed one that keeps every value, counts nothing."""
        return list(self.counts)

    @property
    def encoded_columns(self) -> list[str]:
        """The field spec's columns and the label's."""
        return [spec.name for spec in self.columns] + ([self.label] if self.label else [])

    def check_columns(self, available: list[str], path: Path) -> None:
        """Refuses a file that lacks a column of the field spec or the label (see :func:`check_columns`)."""
        check_columns(available, self.columns, self.label, path)

    def count(self, table: pa.Table, origin: SplitOrigin, first_row: int) -> None:
        """Counts a chunk of training rows, the fields side by side (Arrow and numpy work outside the GIL)."""
        def count_field(spec: ColumnSpec) -> None:
            if spec.kind == "multi":  # a list's length counts its values, not the empty tokens of "a||b|"
                lists = pc.split_pattern(_as_strings(table.column(spec.name)), spec.separator).combine_chunks()
                tokens = pc.list_flatten(lists)
                real = pc.not_equal(tokens, "")
                rows = pc.list_parent_indices(lists).to_numpy()[real.to_numpy(zero_copy_only=False)]
                self.longest[spec.name] = max(self.longest[spec.name], int(np.bincount(rows).max(initial=0)))
                self.counts[spec.name].add(pc.filter(tokens, real))
            elif spec.name in self.counts:
                self.counts[spec.name].add(_tokens(table.column(spec.name), spec, origin, first_row))

        _field_by_field(count_field, self.columns)

    def finish(self) -> None:
        """Builds every field's vocabulary, slots and ids from the counts, which it frees."""
        self.vocabularies: list[pa.Array | None] = []
        self.offsets: list[int] = []
        self.slots: list[int] = []
        offset = 0
        for spec in self.columns:
            self.offsets.append(offset)
            if spec.is_number:
                self.vocabularies.append(None)
                self.slots.append(1)
                offset += 1
                continue
            if spec.kind == "multi":
                longest = self.longest[spec.name] or 1
                self.slots.append(max(1, min(longest, self.max_values or longest)))
                self.report.multi_splits[spec.name] = (spec.separator, longest)
            else:
                self.slots.append(1)
            if spec.hash_buckets:
                kept = self.counts.pop(spec.name).kept()[0] if spec.name in self.counts else None
                self.vocabularies.append(kept)
                offset += spec.hash_buckets + 1
                continue
            kept, rare = self.counts.pop(spec.name).kept()  # every count freed once the kept are known
            self.report.rare_features[spec.name] += rare
            self.vocabularies.append(kept)
            offset += len(kept) + 1
        self.num_features = offset
        self._index()

    def _index(self) -> None:
        self.indexes = [None if words is None else WordIndex(words) for words in self.vocabularies]
        self.value_slots = tuple(slot for slot, (spec, _) in enumerate(self._slot_columns())
                                 if spec.is_number)

    def state_dict(self) -> dict:
        """What turns rows into ids once :meth:`finish` ran, in types a ``weights_only`` checkpoint loads: the field
        spec, every field's slots, first id and vocabulary (:func:`~lit_ifm.data.encoding.words.pack_words`)."""
        fields = [{**asdict(spec), "slots": slots, "offset": offset,
                   "vocabulary": None if words is None else pack_words(words)}
                  for spec, words, slots, offset in zip(self.columns, self.vocabularies, self.slots, self.offsets)]
        return {"kind": "table", "label": self.label, "max_values": self.max_values, "fields": fields,
                "num_features": self.num_features}

    @classmethod
    def from_state_dict(cls, state: dict, report: EncodingReport | None = None) -> TableEncoder:
        """The encoder :meth:`state_dict` describes, ready to :meth:`encode`."""
        names = {field.name for field in dataclasses.fields(ColumnSpec)}
        columns = [ColumnSpec(**{name: value for name, value in field.items() if name in names})
                   for field in state["fields"]]
        encoder = cls(columns, state["label"], state["max_values"], report or EncodingReport())
        encoder.counts = {}
        encoder.slots = [field["slots"] for field in state["fields"]]
        encoder.offsets = [field["offset"] for field in state["fields"]]
        encoder.vocabularies = [None if field["vocabulary"] is None else unpack_words(field["vocabulary"])
                                for field in state["fields"]]
        encoder.num_features = state["num_features"]
        encoder._index()
        return encoder

    def _slot_columns(self):
        return [(spec, slot) for spec, slots in zip(self.columns, self.slots) for slot in range(slots)]

    def _size(self, spec: ColumnSpec, vocabulary: pa.Array | WordIndex | None) -> int:
        return spec.hash_buckets if spec.hash_buckets else len(vocabulary)

    def fields(self) -> list[Field]:
        """The schema's fields, in the order of the field spec, with sizes, slots and fingerprints."""
        fields = []
        for spec, vocabulary, slots, offset in zip(self.columns, self.vocabularies, self.slots, self.offsets):
            if spec.is_number:
                # one id whose value is the number, and no vocabulary
                fields.append(Field(spec.name, "numeric", 0, 1, offset, vocabulary_fingerprint([], np.arange(0), offset)))
                continue
            size = self._size(spec, vocabulary)
            values = [] if vocabulary is None else vocabulary.to_pylist()
            if spec.hash_buckets:  # the hash and the kept values (when min_count keeps some out) define the ids
                values = [f"fnv1a64 % {spec.hash_buckets}", *values]
            kind = "multi" if spec.kind == "multi" else "categorical"
            fingerprint = vocabulary_fingerprint(values, np.arange(offset, offset + size), offset + size)
            fields.append(Field(spec.name, kind, size + 1, slots, offset + size, fingerprint))
        return fields

    @property
    def num_slots(self) -> int:
        """Slots of a row: one per categorical or numeric field, ``slots`` per multi-valued field."""
        return sum(self.slots)

    def stored_value_slots(self) -> tuple[int, ...]:
        """The slots of numeric fields, whose numbers the store keeps."""
        return self.value_slots

    def encode(self, table: pa.Table, origin: SplitOrigin, first_row: int,
               split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids ``(n, S)``, values ``(n, S)`` and labels ``(n,)`` of a chunk of a split whose first row is the split's
        ``first_row``; unseen values and truncated rows are counted in the report."""
        rows = table.num_rows
        # slot-major (S, n) while filling, so that each field writes contiguous memory; rows-major views at the end
        ids = np.empty((self.num_slots, rows), dtype=np.int64)
        values = np.zeros((self.num_slots, rows), dtype=np.float32)
        firsts = np.cumsum([0, *self.slots])

        def encode_field(index: int) -> tuple[int, int]:
            spec, words, offset, slots, slot = (self.columns[index], self.indexes[index], self.offsets[index],
                                                self.slots[index], firsts[index])
            column = table.column(spec.name)
            block = slice(slot, slot + slots)
            unseen = truncated = 0
            if spec.is_number:
                numbers = stored_numbers(parse_numbers(column, origin, spec.name, first_row, "value"), origin,
                                         spec.name, first_row, "value")
                ids[slot] = offset
                values[slot] = np.nan_to_num(numbers, nan=0.0)
            elif spec.kind == "multi":
                list_ids, list_values, unseen, truncated = _encode_lists(
                    _as_strings(column), spec.separator, words, offset, slots)
                ids[block], values[block] = list_ids.T, list_values.T
            else:
                tokens = _tokens(column, spec, origin, first_row)
                present = ~pc.is_null(tokens).to_numpy(zero_copy_only=False)
                size = self._size(spec, words)
                if spec.hash_buckets:
                    found = np.ones(rows, dtype=bool) if words is None else words.positions(tokens)[1]
                    position = hash_buckets(tokens, size)
                else:
                    position, found = words.positions(tokens)
                ids[slot] = np.where(found, position + offset, offset + size)
                values[slot] = present
                unseen = present & ~found
            return int(np.sum(unseen)), int(np.sum(truncated))

        counted = _field_by_field(encode_field, range(len(self.columns)))
        for spec, (unseen, truncated) in zip(self.columns, counted):
            if split != "train":
                self.report.unseen_values[(split, spec.name)] += unseen
            self.report.truncated_rows[(split, spec.name)] += truncated
        ids[values == 0] = self.num_features  # an empty slot (value 0) holds the padding id
        if self.label is not None:
            labels = parse_numbers(table.column(self.label), origin, self.label, first_row, "label")
            missing = np.flatnonzero(np.isnan(labels))
            if len(missing):
                raise DataError(f"{origin.where(first_row + int(missing[0]))}, column "
                                f"{self.label!r}: the label is missing (empty or NaN)")
            labels = stored_numbers(labels, origin, self.label, first_row, "label")
        else:
            labels = np.ones(rows)
        return ids.T, values.T, labels


def _field_by_field(work: Callable[[T], R], fields: Iterable[T]) -> list[R]:
    """``work`` of every field, on :data:`BUILD_THREADS` threads, results (and the first error) in field order."""
    with ThreadPoolExecutor(BUILD_THREADS) as pool:
        return list(pool.map(work, fields))


def _counted(spec: ColumnSpec) -> bool:
    """Whether a field's training values are counted: every vocabulary, and hashed fields with a ``min_count``."""
    if spec.is_number:
        return False
    return not spec.hash_buckets or spec.min_count > 1


def _tokens(column: pa.ChunkedArray, spec: ColumnSpec, origin: SplitOrigin, first_row: int) -> pa.ChunkedArray:
    """A categorical column's values as text (a bucketed numeric column's as its buckets), missing ones as
    :data:`MISSING` when they are a value of their own, else null."""
    if spec.buckets:
        buckets = log_buckets(parse_numbers(column, origin, spec.name, first_row, "value"))
        missing = np.isnan(buckets)
        tokens = pc.cast(pa.array(np.where(missing, 0, buckets).astype(np.int64), mask=missing), pa.string())
    else:
        tokens = _as_strings(column)
    return tokens.fill_null(MISSING) if spec.missing_as_id else tokens


def check_columns(available: list[str], columns: list[ColumnSpec], label: str | None, path: Path) -> None:
    """Refuses a field spec or label that names a column the file lacks, or a label also named as a field."""
    for spec in columns:
        if spec.name not in available:
            raise DataError(f"{path.name}: column {spec.name!r} of the field spec ({spec.kind}) is not in the "
                            f"file; its columns are {available}")
    if label is not None and label not in available:
        raise DataError(f"{path.name}: label column {label!r} is not in the file; its columns are {available}")
    for spec in columns:
        if spec.name == label:  # the model would read the answer it is asked for
            raise DataError(f"the label column {label!r} is also named as a {spec.kind} field; a model must not "
                            "see its label: remove it from the field spec")


def _encode_lists(strings: pa.ChunkedArray, separator: str, words: WordIndex, offset: int, slots: int):
    lists = pc.split_pattern(strings, separator).combine_chunks() if isinstance(strings, pa.ChunkedArray) \
        else pc.split_pattern(strings, separator)
    rows = len(lists)
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    tokens = pc.list_flatten(lists)
    row_of_token = np.repeat(np.arange(rows), lengths)
    keep = pc.not_equal(tokens, "").to_numpy(zero_copy_only=False)
    tokens, row_of_token = pc.filter(tokens, pa.array(keep)), row_of_token[keep]
    kept_lengths = np.bincount(row_of_token, minlength=rows)
    starts = np.concatenate([[0], np.cumsum(kept_lengths)[:-1]])
    position_in_row = np.arange(len(row_of_token)) - starts[row_of_token]
    position, found = words.positions(tokens)
    token_ids = np.where(found, position + offset, offset + len(words))
    fits = position_in_row < slots
    ids = np.zeros((rows, slots), dtype=np.int64)
    values = np.zeros((rows, slots), dtype=np.float32)
    ids[row_of_token[fits], position_in_row[fits]] = token_ids[fits]
    values[row_of_token[fits], position_in_row[fits]] = 1.0
    unseen = np.bincount(row_of_token[fits & ~found], minlength=rows)
    return ids, values, unseen, (kept_lengths > slots).astype(np.int64)
