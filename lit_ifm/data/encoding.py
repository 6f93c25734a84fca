"""Turning raw rows into feature ids, values and labels, with vocabularies built on the training split.

Parsing runs once per file through ``datasets.Dataset.map`` (batched, cached by ``datasets`` and
memory-mapped); the vocabulary look-ups are vectorised numpy/Arrow work, never a Python loop per row.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lit_ifm.data.schema import Field, FieldKind
from lit_ifm.data.sources import DataError, line_of

MAP_BATCH_SIZE = 50_000
_ENCODING_VERSION = 1  # bump when parsing or encoding changes, so cached results are not reused


@dataclass
class EncodedSplit:
    """One split as contiguous arrays: ids ``(N, S)``, values ``(N, S)``, labels ``(N,)``."""

    name: str
    feature_ids: np.ndarray
    feature_values: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class EncodingReport:
    """What encoding changed, so nothing is dropped silently."""

    rare_features: Counter = field(default_factory=Counter)  # field -> training values below min_count
    unseen_values: Counter = field(default_factory=Counter)  # (split, field) -> values mapped to the OOV id
    truncated_rows: Counter = field(default_factory=Counter)  # (split, field) -> rows with more values than slots

    def lines(self) -> list[str]:
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


def _to_numpy_matrix(column: pa.ChunkedArray | pa.Array, width: int, dtype) -> np.ndarray:
    flat = column.combine_chunks().flatten() if isinstance(column, pa.ChunkedArray) else column.flatten()
    return np.array(flat.to_numpy(zero_copy_only=False), dtype=dtype).reshape(-1, width)


def _columns(dataset: datasets.Dataset, width: int, ids: str, values: str) -> tuple[np.ndarray, ...]:
    table = dataset.data.table
    return (
        _to_numpy_matrix(table.column(ids), width, np.int64),
        _to_numpy_matrix(table.column(values), width, np.float32),
        np.array(table.column("label").to_numpy(), dtype=np.float32),
    )


# --- libFM --------------------------------------------------------------------------------------------


class _LibFMParser:
    """``label id:value id:value ...`` lines with exactly one feature per positional field."""

    def __init__(self, path: Path, num_fields: int, field_names: tuple[str, ...]):
        self.path, self.num_fields, self.field_names = path, num_fields, field_names

    def __call__(self, batch: dict[str, list[str]], indices: list[int]) -> dict[str, np.ndarray]:
        rows = len(indices)
        labels = np.empty(rows, dtype=np.float64)
        ids = np.empty((rows, self.num_fields), dtype=np.int64)
        values = np.empty((rows, self.num_fields), dtype=np.float32)
        for row, (index, line) in enumerate(zip(indices, batch["text"])):  # once per file, then cached
            tokens = line.split()
            where = line_of(self.path, index)
            if len(tokens) != self.num_fields + 1:
                raise DataError(f"{where}: {max(len(tokens) - 1, 0)} features, expected {self.num_fields} "
                                f"(one per field: {', '.join(self.field_names)}) after the label")
            try:
                labels[row] = float(tokens[0])
            except ValueError:
                raise DataError(f"{where}: label {tokens[0]!r} is not a number") from None
            for position, token in enumerate(tokens[1:]):
                feature, colon, value = token.partition(":")
                try:
                    if not colon:
                        raise ValueError
                    ids[row, position] = int(feature)
                    values[row, position] = float(value)
                except ValueError:
                    raise DataError(f"{where}: malformed libFM token {token!r} in field "
                                    f"{self.field_names[position]!r}; expected <feature id>:<value>") from None
                if ids[row, position] < 0:
                    raise DataError(f"{where}: negative feature id in {token!r}")
        return {"label": labels, "raw_ids": ids, "values": values}


def count_libfm_fields(path: Path) -> int:
    with path.open() as lines:
        first = lines.readline().split()
    if len(first) < 2:
        raise DataError(f"{line_of(path, 0)}: expected '<label> <id>:<value> ...', got {' '.join(first)!r}")
    return len(first) - 1


def parse_libfm(lines: datasets.Dataset, path: Path, field_names: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """Raw global ids ``(N, F)``, values ``(N, F)`` and labels ``(N,)`` of a libFM file."""
    width = len(field_names)
    parsed = lines.map(
        _LibFMParser(path, width, field_names),
        batched=True,
        batch_size=MAP_BATCH_SIZE,
        with_indices=True,
        remove_columns=["text"],
        features=datasets.Features({
            "label": datasets.Value("float64"),
            "raw_ids": datasets.Sequence(datasets.Value("int64"), length=width),
            "values": datasets.Sequence(datasets.Value("float32"), length=width),
        }),
        desc=f"parsing {path.name}",
        new_fingerprint=fingerprint(lines._fingerprint, "libfm", field_names),
    )
    return _columns(parsed, width, "raw_ids", "values")


class LibFMVocabulary:
    """Keeps the file's global feature ids; each id belongs to the field of its position.

    Ids of the training split with at least ``min_count`` occurrences are kept; any other id maps to
    its field's out-of-vocabulary id ``max_id + 1 + field``.
    """

    def __init__(self, train_ids: np.ndarray, path: Path, field_names: tuple[str, ...], min_count: int,
                 report: EncodingReport):
        self.field_names = field_names
        self.max_id = int(train_ids.max())
        self.owner = np.full(self.max_id + 1, -1, dtype=np.int64)
        for position in range(train_ids.shape[1]):
            ids = np.unique(train_ids[:, position])
            clash = self.owner[ids] >= 0
            if clash.any():
                self._changes_field(train_ids, path, int(ids[clash][0]))
            self.owner[ids] = position
        counts = np.bincount(train_ids.ravel(), minlength=self.max_id + 1)
        self.kept = counts >= min_count
        for position, name in enumerate(field_names):
            field_ids = np.flatnonzero(self.owner == position)
            report.rare_features[name] += int((~self.kept[field_ids]).sum())
        self.report = report

    @property
    def num_features(self) -> int:
        return self.max_id + 1 + len(self.field_names)

    def oov_id(self, position: int) -> int:
        return self.max_id + 1 + position

    def fields(self) -> list[Field]:
        return [Field(name, "categorical", int(((self.owner == position) & self.kept).sum()) + 1, 1,
                      self.oov_id(position)) for position, name in enumerate(self.field_names)]

    def encode(self, raw_ids: np.ndarray, path: Path, split: str) -> np.ndarray:
        encoded = np.empty_like(raw_ids)
        for position, name in enumerate(self.field_names):
            column = raw_ids[:, position]
            in_range = column <= self.max_id
            owner = np.where(in_range, self.owner[np.minimum(column, self.max_id)], -1)
            clash = (owner >= 0) & (owner != position)
            if clash.any():
                feature = int(column[clash][0])
                self._changes_field(raw_ids, path, feature, int(self.owner[feature]))
            known = (owner == position) & self.kept[np.minimum(column, self.max_id)]
            encoded[:, position] = np.where(known, column, self.oov_id(position))
            if split != "train":
                self.report.unseen_values[(split, name)] += int((~known).sum())
        return encoded

    def _changes_field(self, ids: np.ndarray, path: Path, feature: int, owner: int | None = None) -> None:
        rows, positions = np.nonzero(ids == feature)  # in row order
        owner = int(positions[0]) if owner is None else owner
        clash = int(np.flatnonzero(positions != owner)[0])
        position = int(positions[clash])
        raise DataError(f"{line_of(path, int(rows[clash]))}: feature id {feature} stands in field "
                        f"{self.field_names[position]!r} (position {position + 1}) but belongs to field "
                        f"{self.field_names[owner]!r} (position {owner + 1}); positional libFM fields need each "
                        "id in one field only")


# --- tables (CSV, TSV, parquet, JSON lines, in-memory) -----------------------------------------------


@dataclass(frozen=True)
class ColumnSpec:
    name: str
    kind: FieldKind
    separator: str = "|"


def _as_strings(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Categorical values compared as text; integral floats (ints with missing values) lose their '.0'."""
    if pa.types.is_floating(column.type):
        valid = pc.drop_null(column)
        if len(valid) == 0 or pc.all(pc.equal(valid, pc.floor(valid))).as_py():
            column = pc.cast(column, pa.int64())
    return pc.cast(column, pa.string())


def _numbers(column: pa.ChunkedArray | pa.Array, path: Path, name: str, first_row: int, what: str) -> np.ndarray:
    try:
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        for row, value in enumerate(column.to_pylist()):
            try:
                float(value) if value is not None else None
            except (TypeError, ValueError):
                raise DataError(f"{line_of(path, first_row + row)}, column {name!r}: {what} {value!r} "
                                "is not a number") from None
        raise


class TableVocabulary:
    """Per-field vocabularies of a table's training split; ids are laid out field after field, each
    field's out-of-vocabulary id last. Numeric fields take one id whose value is the number."""

    def __init__(self, train: datasets.Dataset, path: Path, columns: list[ColumnSpec], label: str | None,
                 min_count: int, max_values: int | None, report: EncodingReport):
        table = train.data.table
        check_columns(table.column_names, columns, label, path)
        self.columns, self.label, self.report = columns, label, report
        self.vocabularies: list[pa.Array | None] = []
        self.offsets: list[int] = []
        self.slots: list[int] = []
        offset = 0
        for spec in columns:
            self.offsets.append(offset)
            if spec.kind == "numeric":
                self.vocabularies.append(None)
                self.slots.append(1)
                offset += 1
                continue
            values = _as_strings(table.column(spec.name))
            if spec.kind == "multi":
                lists = pc.split_pattern(values, spec.separator)
                lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
                tokens = pc.list_flatten(lists)
                tokens = pc.filter(tokens, pc.not_equal(tokens, ""))
                longest = int(np.nan_to_num(lengths, nan=0).max()) if len(lengths) else 1
                self.slots.append(max(1, min(longest, max_values or longest)))
                values = tokens
            else:
                self.slots.append(1)
            counts = pc.value_counts(pc.drop_null(values))
            kept = pc.filter(counts.field("values"), pc.greater_equal(counts.field("counts"), min_count))
            report.rare_features[spec.name] += len(counts) - len(kept)
            vocabulary = pc.array_sort_indices(kept)
            self.vocabularies.append(pc.take(kept, vocabulary))
            offset += len(kept) + 1
        self.num_features = offset

    def fields(self) -> list[Field]:
        return [
            Field(spec.name, spec.kind, 1 if vocabulary is None else len(vocabulary) + 1, slots,
                  offset + (0 if vocabulary is None else len(vocabulary)))
            for spec, vocabulary, slots, offset in zip(self.columns, self.vocabularies, self.slots, self.offsets)
        ]

    @property
    def num_slots(self) -> int:
        return sum(self.slots)

    def encode(self, dataset: datasets.Dataset, path: Path, split: str, labelled: bool = True) -> tuple[np.ndarray, ...]:
        check_columns(dataset.column_names, self.columns, self.label if labelled else None, path)
        width = self.num_slots
        encoded = dataset.with_format("arrow").map(
            _TableEncoder(self, path, split, labelled),
            batched=True,
            batch_size=MAP_BATCH_SIZE,
            with_indices=True,
            remove_columns=dataset.column_names,
            features=datasets.Features({
                "feature_ids": datasets.Sequence(datasets.Value("int64"), length=width),
                "feature_values": datasets.Sequence(datasets.Value("float32"), length=width),
                "label": datasets.Value("float64"),
                "unseen": datasets.Sequence(datasets.Value("int64"), length=len(self.columns)),
                "truncated": datasets.Sequence(datasets.Value("int64"), length=len(self.columns)),
            }),
            desc=f"encoding {path.name}",
            new_fingerprint=fingerprint(dataset._fingerprint, "table", split, labelled, self.label, self.columns,
                                        self.offsets, self.slots, self.num_features,
                                        [None if v is None else v.to_pylist() for v in self.vocabularies]),
        )
        table = encoded.data.table
        for name, key in (("unseen", self.report.unseen_values), ("truncated", self.report.truncated_rows)):
            counts = _to_numpy_matrix(table.column(name), len(self.columns), np.int64).sum(axis=0)
            for spec, count in zip(self.columns, counts):
                if split != "train" or name == "truncated":
                    key[(split, spec.name)] += int(count)
        return _columns(encoded, width, "feature_ids", "feature_values")


def check_columns(available: list[str], columns: list[ColumnSpec], label: str | None, path: Path) -> None:
    for spec in columns:
        if spec.name not in available:
            raise DataError(f"{path.name}: column {spec.name!r} of the field spec ({spec.kind}) is not in the "
                            f"file; its columns are {available}")
    if label is not None and label not in available:
        raise DataError(f"{path.name}: label column {label!r} is not in the file; its columns are {available}")


class _TableEncoder:
    def __init__(self, vocabulary: TableVocabulary, path: Path, split: str, labelled: bool):
        self.vocabulary, self.path, self.split, self.labelled = vocabulary, path, split, labelled

    def __call__(self, table: pa.Table, indices: list[int]) -> dict[str, np.ndarray]:
        vocabulary = self.vocabulary
        rows, first_row = table.num_rows, indices[0]
        ids = np.empty((rows, vocabulary.num_slots), dtype=np.int64)
        values = np.zeros((rows, vocabulary.num_slots), dtype=np.float32)
        unseen = np.zeros((rows, len(vocabulary.columns)), dtype=np.int64)
        truncated = np.zeros_like(unseen)
        slot = 0
        for index, (spec, words, offset, slots) in enumerate(
                zip(vocabulary.columns, vocabulary.vocabularies, vocabulary.offsets, vocabulary.slots)):
            column = table.column(spec.name)
            block = slice(slot, slot + slots)
            if spec.kind == "numeric":
                numbers = _numbers(column, self.path, spec.name, first_row, "value")
                ids[:, slot] = offset
                values[:, slot] = np.nan_to_num(numbers, nan=0.0)
            elif spec.kind == "categorical":
                strings = _as_strings(column)
                position = pc.index_in(strings, value_set=words).to_numpy(zero_copy_only=False)
                present = ~pc.is_null(strings).to_numpy(zero_copy_only=False)
                found = ~np.isnan(position.astype(np.float64)) if position.dtype == object else ~np.isnan(position)
                ids[:, slot] = np.where(found, np.nan_to_num(position.astype(np.float64)).astype(np.int64) + offset,
                                        offset + len(words))
                values[:, slot] = present
                unseen[:, index] = present & ~found
            else:
                ids[:, block], values[:, block], unseen[:, index], truncated[:, index] = _encode_lists(
                    _as_strings(column), spec.separator, words, offset, slots)
            ids[:, block] = np.where(values[:, block] == 0, vocabulary.num_features, ids[:, block])
            slot += slots
        if self.labelled:
            label_column = table.column(vocabulary.label)
            labels = _numbers(label_column, self.path, vocabulary.label, first_row, "label")
            missing = np.flatnonzero(np.isnan(labels))
            if len(missing):
                raise DataError(f"{line_of(self.path, first_row + int(missing[0]))}, column "
                                f"{vocabulary.label!r}: the label is missing")
        else:
            labels = np.ones(rows)
        return {"feature_ids": ids, "feature_values": values, "label": labels, "unseen": unseen,
                "truncated": truncated}


def _encode_lists(strings: pa.ChunkedArray, separator: str, words: pa.Array, offset: int, slots: int):
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
    found = pc.index_in(tokens, value_set=words).to_numpy(zero_copy_only=False)
    found = np.asarray(found, dtype=np.float64)
    token_ids = np.where(np.isnan(found), offset + len(words), np.nan_to_num(found).astype(np.int64) + offset)
    fits = position_in_row < slots
    ids = np.zeros((rows, slots), dtype=np.int64)
    values = np.zeros((rows, slots), dtype=np.float32)
    ids[row_of_token[fits], position_in_row[fits]] = token_ids[fits]
    values[row_of_token[fits], position_in_row[fits]] = 1.0
    unseen = np.bincount(row_of_token[fits & np.isnan(found)], minlength=rows)
    return ids, values, unseen, (kept_lengths > slots).astype(np.int64)
