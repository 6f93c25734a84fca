"""Turning raw rows into feature ids, values and labels, with vocabularies built on the training split.

Parsing runs once per file through ``datasets.Dataset.map`` (batched, cached by ``datasets`` and
memory-mapped); the vocabulary look-ups are vectorised numpy/Arrow work, never a Python loop per row.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lit_ifm.data.schema import Field, FieldKind
from lit_ifm.data.sources import DataError, SplitOrigin, line_of, not_utf8

MAP_BATCH_SIZE = 50_000
_ENCODING_VERSION = 2  # bump when parsing or encoding changes, so cached results are not reused


@dataclass
class EncodedSplit:
    """One split as contiguous arrays: ids ``(N, S)``, values ``(N, S)``, labels ``(N,)``, and where its rows
    come from (for messages)."""

    name: str
    feature_ids: np.ndarray
    feature_values: np.ndarray
    labels: np.ndarray
    origin: SplitOrigin

    def __len__(self) -> int:
        return len(self.labels)


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


def arrow_rows(dataset: datasets.Dataset) -> pa.Table:
    """A dataset's rows as one Arrow table. After ``select`` (a random split of one file), ``dataset.data``
    still holds every row of the file; this holds the selected ones only."""
    return dataset.with_format("arrow")[:]


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
                                    f"{self.field_names[position]!r}; expected <feature id>:<value>") from None
                if ids[row, position] < 0:
                    raise DataError(f"{where}: negative feature id in {token!r}")
                if not math.isfinite(values[row, position]):
                    raise DataError(f"{where}: feature value in {token!r} is not a finite number")
        return {"label": labels, "raw_ids": ids, "values": values}


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
    """Maps the file's feature ids densely: the training ids seen at least ``min_count`` times take ids
    ``0 .. n-1`` in id order (one embedding row each, whatever their values), and any other id maps to its
    field's out-of-vocabulary id ``n + field``. Each id belongs to the field of its position.
    """

    def __init__(self, train_ids: np.ndarray, origin: SplitOrigin, field_names: tuple[str, ...], min_count: int,
                 report: EncodingReport):
        self.field_names, self.report = field_names, report
        self.seen, counts = np.unique(train_ids, return_counts=True)  # sorted; memory follows rows, not id values
        self.owner = np.full(len(self.seen), -1, dtype=np.int64)  # the field (position) of each seen id
        for position in range(train_ids.shape[1]):
            index = np.searchsorted(self.seen, np.unique(train_ids[:, position]))
            clash = self.owner[index] >= 0
            if clash.any():
                self._changes_field(train_ids, origin, int(self.seen[index[clash][0]]))
            self.owner[index] = position
        kept = counts >= min_count
        self.dense = np.where(kept, np.cumsum(kept) - 1, -1)  # seen id -> its row, -1 for rare ids
        self.size = int(kept.sum())
        for position, name in enumerate(field_names):
            report.rare_features[name] += int(((self.owner == position) & ~kept).sum())

    @property
    def num_features(self) -> int:
        """Feature ids in all: the kept training ids, then one out-of-vocabulary id per field."""
        return self.size + len(self.field_names)

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

    def encode(self, raw_ids: np.ndarray, origin: SplitOrigin, split: str) -> np.ndarray:
        """Dense ids ``(N, F)`` for a split's raw libFM ids; unseen ones map to their field's out-of-vocabulary
        id (counted in the report outside training)."""
        encoded = np.empty_like(raw_ids)
        for position, name in enumerate(self.field_names):
            column = raw_ids[:, position]
            index = np.minimum(np.searchsorted(self.seen, column), len(self.seen) - 1)
            owner = np.where(self.seen[index] == column, self.owner[index], -1)
            clash = (owner >= 0) & (owner != position)
            if clash.any():
                self._changes_field(raw_ids, origin, int(column[clash][0]), int(owner[clash][0]))
            known = (owner == position) & (self.dense[index] >= 0)
            encoded[:, position] = np.where(known, self.dense[index], self.oov_id(position))
            if split != "train":
                self.report.unseen_values[(split, name)] += int((~known).sum())
        return encoded

    def _changes_field(self, ids: np.ndarray, origin: SplitOrigin, feature: int, owner: int | None = None) -> None:
        rows, positions = np.nonzero(ids == feature)  # in row order
        owner = int(positions[0]) if owner is None else owner
        clash = int(np.flatnonzero(positions != owner)[0])
        position = int(positions[clash])
        raise DataError(f"{origin.where(int(rows[clash]))}: feature id {feature} stands in field "
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


def _numbers(column: pa.ChunkedArray | pa.Array, origin: SplitOrigin, name: str, first_row: int,
             what: str) -> np.ndarray:
    """A column as float64, missing values as NaN; an infinite value is an error that names its line."""
    try:
        numbers = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        for row, value in enumerate(column.to_pylist()):
            try:
                float(value) if value is not None else None
            except (TypeError, ValueError):
                raise DataError(f"{origin.where(first_row + row)}, column {name!r}: {what} {value!r} "
                                "is not a number") from None
        raise
    infinite = np.flatnonzero(np.isinf(numbers))
    if len(infinite):
        row = int(infinite[0])
        raise DataError(f"{origin.where(first_row + row)}, column {name!r}: {what} {numbers[row]:g} is not a "
                        "finite number")
    return numbers


class TableVocabulary:
    """Per-field vocabularies of a table's training split; ids are laid out field after field, each
    field's out-of-vocabulary id last. Numeric fields take one id whose value is the number."""

    def __init__(self, train: datasets.Dataset, path: Path, columns: list[ColumnSpec], label: str | None,
                 min_count: int, max_values: int | None, report: EncodingReport):
        table = arrow_rows(train)  # the training rows only, also when they were selected from one file
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
                report.multi_splits[spec.name] = (spec.separator, longest)
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
        """The schema's fields, in the order of the field spec, with sizes, slots and fingerprints."""
        fields = []
        for spec, vocabulary, slots, offset in zip(self.columns, self.vocabularies, self.slots, self.offsets):
            values = [] if vocabulary is None else vocabulary.to_pylist()
            oov_id = offset + len(values)
            fingerprint = vocabulary_fingerprint(values, np.arange(offset, oov_id), oov_id)
            fields.append(Field(spec.name, spec.kind, len(values) + (vocabulary is not None), slots, oov_id, fingerprint))
        return fields

    @property
    def num_slots(self) -> int:
        """Slots of a row: one per categorical or numeric field, ``slots`` per multi-valued field."""
        return sum(self.slots)

    def encode(self, dataset: datasets.Dataset, origin: SplitOrigin, split: str,
               labelled: bool = True) -> tuple[np.ndarray, ...]:
        """Ids ``(N, S)``, values ``(N, S)`` and labels ``(N,)`` of a split; unseen values and truncated rows are
        counted in the report."""
        check_columns(dataset.column_names, self.columns, self.label if labelled else None, origin.path)
        width = self.num_slots
        encoded = dataset.with_format("arrow").map(
            _TableEncoder(self, origin, split, labelled),
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
            desc=f"encoding {origin.path.name}",
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


class _TableEncoder:
    def __init__(self, vocabulary: TableVocabulary, origin: SplitOrigin, split: str, labelled: bool):
        self.vocabulary, self.origin, self.split, self.labelled = vocabulary, origin, split, labelled

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
                numbers = _numbers(column, self.origin, spec.name, first_row, "value")
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
            labels = _numbers(label_column, self.origin, vocabulary.label, first_row, "label")
            missing = np.flatnonzero(np.isnan(labels))
            if len(missing):
                raise DataError(f"{self.origin.where(first_row + int(missing[0]))}, column "
                                f"{vocabulary.label!r}: the label is missing (empty or NaN)")
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
