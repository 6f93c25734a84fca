"""Turning raw rows into feature ids, values and labels, with vocabularies built on the training split.

Rows arrive in chunks (Arrow tables of :data:`CHUNK_ROWS` rows). A first pass counts the training values of every
field, a second encodes every split chunk by chunk; both are vectorised Arrow/numpy work, never a Python loop per
row (libFM lines included: Python reads a chunk line by line only to name the first bad line of a chunk that
Arrow could not parse).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lit_ifm.data.schema import Field, FieldKind
from lit_ifm.data.sources import DataError, SplitOrigin, line_of, not_utf8

T, R = TypeVar("T"), TypeVar("R")

CHUNK_ROWS = 1 << 18  # rows encoded at once: large enough for vectorised work, small enough to stay flat in memory
# fields counted and encoded side by side; more threads than cores only contend (5 M Criteo-shaped rows on 2 cores:
# 21.5 s with one thread, 15.7-16.6 s with two, 16.0-18.7 s with four; /work/notes/scripts/s8/threads.py)
BUILD_THREADS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
MISSING = ""  # the token of a missing value when missing values are their own feature
_ENCODING_VERSION = 3  # bump when parsing or encoding changes, so cached results are not reused


@dataclass
class EncodingReport:
    """What encoding changed, so nothing is dropped silently."""

    rare_features: Counter = field(default_factory=Counter)  # field -> training values below min_count
    unseen_values: Counter = field(default_factory=Counter)  # (split, field) -> values mapped to the OOV id
    truncated_rows: Counter = field(default_factory=Counter)  # (split, field) -> rows with more values than slots
    multi_splits: dict = field(default_factory=dict)  # multi-valued field -> (separator, longest training row)

    def table(self, fields: list[Field] | tuple[Field, ...]) -> list[str]:
        """The schema as a table, one line per field: its kind (a multi-valued field's separator and longest
        training row), slots, known values, and what encoding changed: distinct training values below ``min_count``,
        validation and test values unseen in training (both mapped to the out-of-vocabulary id), rows with more
        values than slots (truncated).

        >>> report = EncodingReport(multi_splits={"tags": ("|", 4)})
        >>> report.unseen_values[("test", "user")] = 2
        >>> report.truncated_rows[("train", "tags")] = 1
        >>> print("\\n".join(report.table([Field("user", "categorical", 5, 1, 4), Field("tags", "multi", 7, 3, 11)])))
        field  kind                            slots  values  below min_count  OOV validation  OOV test  truncated rows
        user   categorical                         1       4                0               0         2               -
        tags   multi, split on '|', longest 4      3       6                0               0         0         train 1
        (below min_count: training values; OOV: others unseen in training; all read as the field's out-of-vocabulary id)
        """
        header = ["field", "kind", "slots", "values", "below min_count", "OOV validation", "OOV test",
                  "truncated rows"]
        lines = [header]
        for item in fields:
            kind = item.kind
            if item.name in self.multi_splits:
                separator, longest = self.multi_splits[item.name]
                kind = f"multi, split on {separator!r}, longest {longest}"
            truncated = ", ".join(f"{split} {self.truncated_rows[(split, item.name)]}" for split in
                                  ("train", "validation", "test") if self.truncated_rows[(split, item.name)])
            counted = [str(self.rare_features[item.name]), str(self.unseen_values[("validation", item.name)]),
                       str(self.unseen_values[("test", item.name)])]
            lines.append([item.name, kind, str(item.slots),
                          "-" if item.kind == "numeric" else str(item.vocabulary_size - 1),
                          *(["-"] * 3 if item.kind == "numeric" else counted), truncated or "-"])
        widths = [max(len(line[column]) for line in lines) for column in range(len(header))]
        table = ["  ".join(value.ljust(width) if column < 2 else value.rjust(width)
                           for column, (value, width) in enumerate(zip(line, widths))).rstrip() for line in lines]
        return [*table, "(below min_count: training values; OOV: others unseen in training; all read as the field's "
                        "out-of-vocabulary id)"]

    def lines(self) -> list[str]:
        """What encoding changed, one line per kind of change and split, with counts by field."""
        lines = []
        if sum(self.rare_features.values()):
            lines.append(f"training values below min_count, mapped to out-of-vocabulary ids: {_by_field(self.rare_features)}")
        for split in ("validation", "test"):
            unseen = Counter({name: n for (where, name), n in self.unseen_values.items() if where == split})
            if sum(unseen.values()):
                lines.append(f"{split} values unseen in training, mapped to out-of-vocabulary ids: {_by_field(unseen)}")
        for split in ("train", "validation", "test"):
            cut = Counter({name: n for (where, name), n in self.truncated_rows.items() if where == split})
            if sum(cut.values()):
                lines.append(f"{split} rows with more values than slots, truncated: {_by_field(cut)}")
        return lines


def _by_field(counts: Counter) -> str:
    return f"{sum(counts.values())} ({', '.join(f'{name} {n}' for name, n in counts.items() if n)})"


def fingerprint(*parts) -> str:
    """The cache key of a parsing step, from its input's fingerprint and everything the step depends on.

    Given to ``Dataset.map`` so ``datasets`` need not hash the step's code with dill (which fails on
    some pyarrow/Python pairs and costs time).

    >>> fingerprint("abc", [1, 2]) == fingerprint("abc", [1, 2]) != fingerprint("abc", [2, 1])
    True
    """
    return hashlib.sha256(repr((_ENCODING_VERSION, parts)).encode()).hexdigest()[:32]


def vocabulary_fingerprint(values: np.ndarray | list[str], ids: np.ndarray, oov_id: int) -> str:
    """A digest of a field's value -> id mapping and its out-of-vocabulary id. Checkpoints keep it in their
    schema, so a model is never fed ids that now stand for other values.

    >>> ids = np.array([0, 1])
    >>> same = vocabulary_fingerprint(["a", "b"], ids, 2)
    >>> same == vocabulary_fingerprint(["a", "b"], ids, 2), same == vocabulary_fingerprint(["b", "a"], ids, 2)
    (True, False)
    """
    digest = hashlib.sha256()
    if isinstance(values, np.ndarray):
        digest.update(values.astype(np.int64).tobytes())
    else:
        digest.update("\0".join(values).encode())
    digest.update(np.asarray(ids, dtype=np.int64).tobytes())
    digest.update(str(oov_id).encode())
    return digest.hexdigest()[:16]


# --- libFM --------------------------------------------------------------------------------------------


class _Unparsed(Exception):
    """A chunk of libFM lines that Arrow's vectorised parsing does not take as it is."""


def parse_libfm(lines: pa.ChunkedArray | pa.Array, origin: SplitOrigin, first_row: int,
                field_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw global ids ``(n, F)`` int64, values ``(n, F)`` float32 and labels ``(n,)`` float64 of a chunk of
    ``label id:value id:value ...`` lines, one feature per positional field, parsed by Arrow. A chunk it cannot
    parse is read line by line as Python would, which names the first bad line (``first_row`` is the chunk's
    first row in its split)."""
    width = len(field_names)
    try:
        tokens = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(lines))
        if pc.any(pc.not_equal(pc.list_value_length(tokens), width + 1)).as_py():
            raise _Unparsed
        flat = pc.list_flatten(tokens)
        rows = len(flat) // (width + 1)
        is_label = np.zeros(len(flat), dtype=bool)
        is_label[:: width + 1] = True
        labels = pc.cast(pc.filter(flat, pa.array(is_label)), pa.float64()).to_numpy(zero_copy_only=False)
        parts = pc.split_pattern(pc.filter(flat, pa.array(~is_label)), ":", max_splits=1)
        if pc.any(pc.not_equal(pc.list_value_length(parts), 2)).as_py():
            raise _Unparsed
        ids = pc.cast(pc.list_element(parts, 0), pa.int64()).to_numpy(zero_copy_only=False).reshape(rows, width)
        values = pc.cast(pc.list_element(parts, 1), pa.float64()).to_numpy(zero_copy_only=False)
        values = values.astype(np.float32).reshape(rows, width)
        if (ids < 0).any() or not (np.isfinite(values).all() and np.isfinite(labels).all()):
            raise _Unparsed
        return ids, values, labels
    except (_Unparsed, pa.ArrowInvalid):
        return _parse_libfm_lines(lines.to_pylist(), origin, first_row, field_names)


def _parse_libfm_lines(lines: list[str], origin: SplitOrigin, first_row: int,
                       field_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width = len(field_names)
    labels = np.empty(len(lines), dtype=np.float64)
    ids = np.empty((len(lines), width), dtype=np.int64)
    values = np.empty((len(lines), width), dtype=np.float32)
    for row, line in enumerate(lines):  # only for a chunk Arrow could not parse: find and name its bad line
        tokens = line.split()
        where = origin.where(first_row + row)
        if len(tokens) != width + 1:
            raise DataError(f"{where}: {max(len(tokens) - 1, 0)} features, expected {width} "
                            f"(one per field: {', '.join(field_names)}) after the label")
        try:
            labels[row] = float(tokens[0])
        except ValueError:
            raise DataError(f"{where}: label {tokens[0]!r} is not a number") from None
        if not math.isfinite(labels[row]):
            raise DataError(f"{where}: label {tokens[0]!r} is not a finite number")
        for position, token in enumerate(tokens[1:]):
            feature, colon, value = token.partition(":")
            try:
                if not colon:
                    raise ValueError
                ids[row, position] = int(feature)
                values[row, position] = float(value)
            except ValueError:
                raise DataError(f"{where}: malformed libFM token {token!r} in field "
                                f"{field_names[position]!r}; expected <feature id>:<value>") from None
            if ids[row, position] < 0:
                raise DataError(f"{where}: negative feature id in {token!r}")
            if not math.isfinite(values[row, position]):
                raise DataError(f"{where}: feature value in {token!r} is not a finite number")
    return ids, values, labels


def count_libfm_fields(path: Path) -> int:
    """The number of fields of a positional libFM file: the features on its first line."""
    with path.open("rb") as lines:
        first_line = lines.readline()
    try:
        first = first_line.decode("utf-8").split()
    except UnicodeDecodeError:
        raise DataError(not_utf8(path)) from None
    if len(first) < 2:
        raise DataError(f"{line_of(path, 0)}: expected '<label> <id>:<value> ...', got {' '.join(first)!r}")
    return len(first) - 1


class _IdCounts:
    """How often each id occurs, summed over chunks."""

    def __init__(self):
        self.ids = np.empty(0, dtype=np.int64)
        self.counts = np.empty(0, dtype=np.int64)

    def add(self, ids: np.ndarray, counts: np.ndarray | None = None) -> None:
        merged, inverse = np.unique(np.concatenate([self.ids, ids]), return_inverse=True)
        weights = np.concatenate([self.counts, np.ones(len(ids), np.int64) if counts is None else counts])
        self.ids, self.counts = merged, np.bincount(inverse, weights=weights, minlength=len(merged)).astype(np.int64)


class LibFMVocabulary:
    """Maps the file's feature ids densely: the training ids seen at least ``min_count`` times (their field's) take
    ids ``0 .. n-1`` in id order (one embedding row each, whatever their values), and any other id maps to its
    field's out-of-vocabulary id ``n + field``. Each id belongs to the field of its position.

    Training chunks go to :meth:`count`, then :meth:`finish` builds the mapping and :meth:`encode` applies it.
    """

    def __init__(self, field_names: tuple[str, ...], min_counts: list[int], report: EncodingReport):
        self.field_names, self.min_counts, self.report = field_names, min_counts, report
        self.positions = [_IdCounts() for _ in field_names]
        self.value_slots = tuple(range(len(field_names)))  # every position may carry a number until seen

    def count(self, raw_ids: np.ndarray) -> None:
        """Counts a chunk of training ids ``(n, F)``."""
        for position, counts in enumerate(self.positions):
            ids, seen = np.unique(raw_ids[:, position], return_counts=True)
            counts.add(ids, seen)

    def finish(self, train_chunks, origin: SplitOrigin) -> None:
        """Builds the mapping. ``train_chunks()`` reads the training ids again, as ``(first_row, ids)`` pairs,
        only to name the row of an id that stands in two fields."""
        self.seen = np.unique(np.concatenate([counts.ids for counts in self.positions]))  # sorted
        counts = np.zeros(len(self.seen), dtype=np.int64)
        self.owner = np.full(len(self.seen), -1, dtype=np.int64)  # the field (position) of each seen id
        for position, own in enumerate(self.positions):
            index = np.searchsorted(self.seen, own.ids)
            clash = self.owner[index] >= 0
            if clash.any():
                self._changes_field(train_chunks(), origin, int(self.seen[index[clash][0]]))
            self.owner[index] = position
            counts[index] += own.counts
        kept = counts >= np.asarray(self.min_counts)[self.owner]
        self.dense = np.where(kept, np.cumsum(kept) - 1, -1)  # seen id -> its row, -1 for rare ids
        self.size = int(kept.sum())
        for position, name in enumerate(self.field_names):
            self.report.rare_features[name] += int(((self.owner == position) & ~kept).sum())

    @property
    def num_features(self) -> int:
        """Feature ids in all: the kept training ids, then one out-of-vocabulary id per field."""
        return self.size + len(self.field_names)

    @property
    def num_slots(self) -> int:
        """One slot per positional field."""
        return len(self.field_names)

    def oov_id(self, position: int) -> int:
        """The out-of-vocabulary id of the field at ``position``."""
        return self.size + position

    def fields(self) -> list[Field]:
        """The schema's fields: one categorical field per position, with its vocabulary's size and fingerprint."""
        fields = []
        for position, name in enumerate(self.field_names):
            own = (self.owner == position) & (self.dense >= 0)
            fingerprint = vocabulary_fingerprint(self.seen[own], self.dense[own], self.oov_id(position))
            fields.append(Field(name, "categorical", int(own.sum()) + 1, 1, self.oov_id(position), fingerprint))
        return fields

    def encode(self, raw_ids: np.ndarray, values: np.ndarray, origin: SplitOrigin, first_row: int,
               split: str) -> np.ndarray:
        """Dense ids ``(n, F)`` for a chunk of a split's raw libFM ids; unseen ones map to their field's
        out-of-vocabulary id (counted in the report outside training), absent ones (value 0) to padding."""
        encoded = np.empty_like(raw_ids)
        for position, name in enumerate(self.field_names):
            column = raw_ids[:, position]
            index = np.minimum(np.searchsorted(self.seen, column), len(self.seen) - 1)
            owner = np.where(self.seen[index] == column, self.owner[index], -1)
            clash = (owner >= 0) & (owner != position)
            if clash.any():
                self._changes_field([(first_row, raw_ids)], origin, int(column[clash][0]), int(owner[clash][0]))
            known = (owner == position) & (self.dense[index] >= 0)
            encoded[:, position] = np.where(known, self.dense[index], self.oov_id(position))
            if split != "train":
                self.report.unseen_values[(split, name)] += int((~known).sum())
        return np.where(values == 0, self.num_features, encoded)

    def _changes_field(self, chunks, origin: SplitOrigin, feature: int, owner: int | None = None) -> None:
        for first_row, ids in chunks:
            rows, positions = np.nonzero(ids == feature)  # in row order
            if not len(rows):
                continue
            owner = int(positions[0]) if owner is None else owner
            clashes = np.flatnonzero(positions != owner)
            if len(clashes):
                clash = int(clashes[0])
                position = int(positions[clash])
                raise DataError(f"{origin.where(first_row + int(rows[clash]))}: feature id {feature} stands in field "
                                f"{self.field_names[position]!r} (position {position + 1}) but belongs to field "
                                f"{self.field_names[owner]!r} (position {owner + 1}); positional libFM fields need "
                                "each id in one field only")
        raise AssertionError(f"feature id {feature} was counted in two fields but found in one")


# --- tables (CSV, TSV, parquet, JSON lines, in-memory) -----------------------------------------------


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


def _numbers(column: pa.ChunkedArray | pa.Array, origin: SplitOrigin, name: str, first_row: int,
             what: str) -> np.ndarray:
    """A column as float64, missing values as NaN (text padded with spaces, or True and False, read as pandas reads
    them); a value that is not a number, or is infinite, is an error that names its line."""
    numbers, text = _as_float(column), column
    if numbers is None and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        text = pc.utf8_trim_whitespace(column)
        numbers = _as_float(text)
        numbers = _as_float(text, through=pa.bool_()) if numbers is None else numbers
    if numbers is None:
        row = _first_unparsed(text)
        raise DataError(f"{origin.where(first_row + row)}, column {name!r}: {what} {column[row].as_py()!r} is not a "
                        "number")
    infinite = np.flatnonzero(np.isinf(numbers))
    if len(infinite):
        row = int(infinite[0])
        raise DataError(f"{origin.where(first_row + row)}, column {name!r}: {what} {numbers[row]:g} is not a "
                        "finite number")
    return numbers


def _as_float(column: pa.ChunkedArray | pa.Array, through: pa.DataType | None = None) -> np.ndarray | None:
    try:
        column = column if through is None else pc.cast(column, through)
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _first_unparsed(column: pa.ChunkedArray | pa.Array) -> int:
    """The first row that Arrow cannot read as a number, found by halving (no loop per row).

    >>> _first_unparsed(pa.array(["1", "2", "x", "y"]))
    2
    """
    low, high = 0, len(column)  # the first bad row is in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _as_float(column.slice(low, middle - low)) is not None else (low, middle)
    return low


def log_buckets(numbers: np.ndarray) -> np.ndarray:
    """The Criteo winners' bucket of each number: floor(ln(x)^2) for x > 2, int(x) otherwise; NaN (missing) stays.

    >>> log_buckets(np.array([0.0, 2.0, 3.0, 10.0, 1000.0, -1.0, np.nan])).tolist()
    [0.0, 2.0, 1.0, 5.0, 47.0, -1.0, nan]
    """
    large = numbers > 2
    with np.errstate(invalid="ignore"):
        return np.where(large, np.floor(np.log(np.where(large, numbers, 1.0)) ** 2), np.trunc(numbers))


def hash_buckets(strings: pa.ChunkedArray | pa.Array, buckets: int) -> np.ndarray:
    """Each string's FNV-1a 64-bit hash (:func:`fnv1a64`) modulo ``buckets``.

    >>> hash_buckets(pa.array(["a", "", None]), 1000).tolist()  # FNV-1a: 0xaf63dc4c8601ec8c, 0xcbf29ce484222325
    [996, 37, 37]
    """
    return (fnv1a64(strings) % np.uint64(buckets)).astype(np.int64)


def fnv1a64(strings: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Each string's FNV-1a 64-bit hash, ``uint64``, computed byte position by byte position over all the strings of
    one length at once (no loop per string). Missing strings hash as empty ones."""
    array = pc.cast(strings, pa.large_string()).fill_null("")
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset: array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if array.buffers()[2] is not None else np.empty(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(len(array), 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for length in np.unique(lengths[lengths > 0]).tolist():  # ids of one length are the usual case: one group
        same_length = np.flatnonzero(lengths == length)
        groups = min(len(same_length), -(-len(same_length) * length // (1 << 22)))  # about 4 M bytes at once
        for group in np.array_split(same_length, groups):
            text = data[starts[group, None] + np.arange(length)]  # (strings, length) bytes
            value = hashes[group]
            for position in range(length):
                value = (value ^ text[:, position]) * prime
            hashes[group] = value
    return hashes


class WordIndex:
    """Positions of tokens in a vocabulary, built once. ``pc.index_in`` hashes the whole vocabulary on every call:
    fast alone for up to a few hundred thousand words (39 ms a chunk at 300k words), 0.37 s a chunk for a million.
    A vocabulary of at least :attr:`HASHED_FROM` words is therefore hashed (:func:`fnv1a64`) and sorted once, each
    chunk's hashes are searched in it, and the words checked: 61 ms a chunk at 300k words, 86 ms for a million.
    Should two words share a hash (about one vocabulary in 10^7 at a million words), ``index_in`` stays.

    >>> WordIndex(pa.array(["b", "c"])).positions(pa.array(["c", "a", None, "b"]))
    (array([1, 0, 0, 0]), array([ True, False, False,  True]))
    """

    # Not the crossing of one call alone: in a build, with fields encoded side by side, index_in's hash tables cost
    # more and the allocators keep what they free. 20 M Criteo-shaped rows: 82 s and 0.92 GiB peak RssAnon from 64k
    # words, 99 s and 0.98 GiB from 512k; at 1 M and 5 M rows the same either way.
    HASHED_FROM = 1 << 16

    def __init__(self, words: pa.Array):
        self.words = words
        self.order = self.hashes = None
        if len(words) >= self.HASHED_FROM:
            hashes = fnv1a64(words)
            order = np.argsort(hashes, kind="stable")
            ordered = hashes[order]
            if not np.any(ordered[1:] == ordered[:-1]):
                self.order, self.hashes = order, ordered

    def __len__(self) -> int:
        return len(self.words)

    def positions(self, tokens: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Each token's position in the words and whether it is there at all (missing tokens are not)."""
        if self.hashes is None:
            position = pc.index_in(tokens, value_set=self.words).to_numpy(zero_copy_only=False)
            position = np.asarray(position, dtype=np.float64)
            found = ~np.isnan(position)
            return np.nan_to_num(position).astype(np.int64), found
        hashes = fnv1a64(tokens)
        at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        candidate = self.order[at]
        found = self.hashes[at] == hashes
        same = pc.equal(tokens, self.words.take(candidate)).fill_null(False).to_numpy(zero_copy_only=False)
        found &= np.asarray(same, dtype=bool)
        return np.where(found, candidate, 0), found


class _ValueCounts:
    """How often each value of a field occurs, summed chunk by chunk: the distinct values as sorted 64-bit hashes
    (:func:`fnv1a64`) with their counts, 16 bytes each, and the text of only the values seen ``min_count`` times,
    taken from the chunk in which they reach it. Holding the text and count of every distinct value as Arrow
    strings, and merging them, grew a Criteo-shaped build's memory by 0.3 GiB from 1 M to 20 M rows.

    Two values of one field that share a hash (about one field in 10^8 at a million values) are refused when they
    meet in one chunk; in different chunks their counts add up and only one's text is kept, so the other's rows read
    as the field's out-of-vocabulary id.
    """

    def __init__(self, name: str, min_count: int):
        self.name, self.min_count = name, min_count
        self.hashes = np.empty(0, dtype=np.uint64)  # sorted, one per distinct value
        self.counts = np.empty(0, dtype=np.int64)
        self.kept_words: list[pa.Array] = []  # the text of the values counted min_count times so far

    def add(self, values: pa.ChunkedArray | pa.Array) -> None:
        counted = pc.value_counts(pc.drop_null(values))
        words = counted.field("values")
        hashes = fnv1a64(words)
        order = np.argsort(hashes)
        hashes, counts = hashes[order], counted.field("counts").to_numpy()[order]
        if len(hashes) > 1 and (same := np.flatnonzero(hashes[1:] == hashes[:-1])).size:
            pair = words.take(order[[same[0], same[0] + 1]]).to_pylist()
            raise DataError(f"column {self.name!r}: values {pair[0]!r} and {pair[1]!r} share a 64-bit hash "
                            "(FNV-1a), so their counts cannot be told apart; please report this data set")
        at = np.searchsorted(self.hashes, hashes)
        known = at < len(self.hashes)
        known[known] = self.hashes[at[known]] == hashes[known]
        seen_at = at[known]
        self.counts[seen_at] += counts[known]
        totals = counts.copy()
        totals[known] = self.counts[seen_at]
        new = ~known  # inserted in order: hashes is sorted
        self.hashes = np.insert(self.hashes, at[new], hashes[new])
        self.counts = np.insert(self.counts, at[new], counts[new])
        reached = (totals >= self.min_count) & (totals - counts < self.min_count)
        if reached.any():
            self.kept_words.append(words.take(order[reached]))

    def kept(self) -> tuple[pa.Array, int]:
        """The values seen at least ``min_count`` times, sorted, and how many distinct values were rarer."""
        if not self.kept_words:
            return pa.array([], pa.string()), len(self.hashes)
        kept = pa.concat_arrays(self.kept_words)
        return pc.take(kept, pc.array_sort_indices(kept)), len(self.hashes) - len(kept)


class TableVocabulary:
    """Per-field vocabularies of a table's training split; ids are laid out field after field, each
    field's out-of-vocabulary id last. Numeric fields take one id whose value is the number.

    Training chunks go to :meth:`count`, then :meth:`finish` builds the vocabularies and :meth:`encode` applies them.
    """

    def __init__(self, columns: list[ColumnSpec], label: str | None, max_values: int | None,
                 report: EncodingReport):
        self.columns, self.label, self.max_values, self.report = columns, label, max_values, report
        self.counts = {spec.name: _ValueCounts(spec.name, spec.min_count) for spec in columns if _counted(spec)}
        self.longest = {spec.name: 0 for spec in columns if spec.kind == "multi"}

    @property
    def counted_columns(self) -> list[str]:
        """The columns :meth:`count` reads: a numeric field, or a hashed one that keeps every value, counts nothing."""
        return list(self.counts)

    def count(self, table: pa.Table, origin: SplitOrigin, first_row: int) -> None:
        """Counts a chunk of training rows, the fields side by side (Arrow and numpy work outside the GIL)."""
        def count_field(spec: ColumnSpec) -> None:
            if spec.kind == "multi":
                lists = pc.split_pattern(_as_strings(table.column(spec.name)), spec.separator)
                lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
                self.longest[spec.name] = max(self.longest[spec.name], int(np.nan_to_num(lengths, nan=0).max(initial=0)))
                tokens = pc.list_flatten(lists)
                self.counts[spec.name].add(pc.filter(tokens, pc.not_equal(tokens, "")))
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
        self.indexes = [None if words is None else WordIndex(words) for words in self.vocabularies]
        self.value_slots = tuple(slot for slot, (spec, _) in enumerate(self._slot_columns())
                                 if spec.is_number)

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

    def encode(self, table: pa.Table, origin: SplitOrigin, first_row: int, split: str,
               labelled: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
                numbers = _numbers(column, origin, spec.name, first_row, "value")
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
        if labelled:
            labels = _numbers(table.column(self.label), origin, self.label, first_row, "label")
            missing = np.flatnonzero(np.isnan(labels))
            if len(missing):
                raise DataError(f"{origin.where(first_row + int(missing[0]))}, column "
                                f"{self.label!r}: the label is missing (empty or NaN)")
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
        buckets = log_buckets(_numbers(column, origin, spec.name, first_row, "value"))
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
