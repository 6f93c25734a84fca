"""The paper's positional libFM files: ``label id:value id:value ...``, one feature per field, parsed by Arrow."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from lit_ifm.data.encoding.encoder import vocabulary_fingerprint
from lit_ifm.data.encoding.numbers import LARGEST, too_large_text
from lit_ifm.data.encoding.report import EncodingReport
from lit_ifm.data.rows.readers import not_utf8
from lit_ifm.data.rows.splits import SplitOrigin, line_of
from lit_ifm.data.schema import Field
from lit_ifm.errors import DataError


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
        # NaN and infinite numbers fail the comparison too; the line-by-line reading names them
        if (ids < 0).any() or not ((np.abs(values) <= LARGEST).all() and (np.abs(labels) <= LARGEST).all()):
            raise _Unparsed
        return ids, values.astype(np.float32).reshape(rows, width), labels
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
        if abs(labels[row]) > LARGEST:
            raise DataError(f"{where}: {too_large_text('label', labels[row])}")
        for position, token in enumerate(tokens[1:]):
            feature, colon, value = token.partition(":")
            try:
                if not colon:
                    raise ValueError
                ids[row, position] = int(feature)
                number = float(value)
            except ValueError:
                raise DataError(f"{where}: malformed libFM token {token!r} in field "
                                f"{field_names[position]!r}; expected <feature id>:<value>") from None
            if ids[row, position] < 0:
                raise DataError(f"{where}: negative feature id in {token!r}")
            if not math.isfinite(number):
                raise DataError(f"{where}: feature value in {token!r} is not a finite number")
            if abs(number) > LARGEST:
                raise DataError(f"{where}: {too_large_text('feature value', number)} (in {token!r})")
            values[row, position] = number
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



class LibFMEncoder:
    """Maps the file's feature ids densely: the training ids seen at least ``min_count`` times (their field's) take
    ids ``0 .. n-1`` in id order (one embedding row each, whatever their values), and any other id maps to its
    field's out-of-vocabulary id ``n + field``. Each id belongs to the field of its position; an id that stands in
    two fields is refused with the line where it changes field. Chunks hold the lines as a ``text`` column.

    The :class:`~lit_ifm.data.encoding.encoder.Encoder` protocol: training chunks go to :meth:`count`, then
    :meth:`finish` builds the mapping and :meth:`encode` applies it.
    """

    counted_columns = encoded_columns = None  # the one text column

    def check_columns(self, available: list[str], path: Path) -> None:
        """Nothing to check: a libFM file is read as lines."""

    def __init__(self, field_names: tuple[str, ...], min_counts: list[int], report: EncodingReport):
        self.field_names, self.min_counts, self.report = tuple(field_names), list(min_counts), report
        self.positions = [_IdCounts() for _ in field_names]
        self.seen = np.empty(0, dtype=np.int64)  # every training id so far, sorted
        self.owner = np.empty(0, dtype=np.int64)  # the field (position) of each seen id
        self.carries_numbers = np.zeros(len(field_names), dtype=bool)  # positions with a value other than 0 and 1

    def count(self, chunk: pa.Table, origin: SplitOrigin, first_row: int) -> None:
        """Counts a chunk of training lines, and refuses an id found in another field than before."""
        raw_ids = parse_libfm(chunk.column("text"), origin, first_row, self.field_names)[0]
        chunk_ids, chunk_owner = [], []
        for position, counts in enumerate(self.positions):
            ids, seen = np.unique(raw_ids[:, position], return_counts=True)
            counts.add(ids, seen)
            if len(self.seen):  # an id of another field in earlier chunks
                at = np.minimum(np.searchsorted(self.seen, ids), len(self.seen) - 1)
                known = self.owner[at]
                clash = (self.seen[at] == ids) & (known != position)
            if len(self.seen) and clash.any():
                self._changes_field(raw_ids, origin, first_row, int(ids[clash][0]), int(known[clash][0]))
            chunk_ids.append(ids)
            chunk_owner.append(np.full(len(ids), position))
        ids, owner = np.concatenate(chunk_ids), np.concatenate(chunk_owner)
        distinct, counts = np.unique(ids, return_counts=True)
        if (counts > 1).any():  # an id in two fields of this chunk
            self._changes_field(raw_ids, origin, first_row, int(distinct[counts > 1][0]))
        merged, first = np.unique(np.concatenate([self.seen, ids]), return_index=True)
        self.seen, self.owner = merged, np.concatenate([self.owner, owner])[first]

    def finish(self) -> None:
        """Builds the mapping from the counts."""
        counts = np.zeros(len(self.seen), dtype=np.int64)
        for own in self.positions:
            counts[np.searchsorted(self.seen, own.ids)] += own.counts
        kept = counts >= np.asarray(self.min_counts)[self.owner]
        self.dense = np.where(kept, np.cumsum(kept) - 1, -1)  # seen id -> its row, -1 for rare ids
        self.size = int(kept.sum())
        for position, name in enumerate(self.field_names):
            self.report.rare_features[name] += int(((self.owner == position) & ~kept).sum())
        self.positions = []

    def state_dict(self) -> dict:
        """What turns lines into ids once :meth:`finish` ran, in types a ``weights_only`` checkpoint loads: every
        training id, its field and its dense id (-1: below ``min_count``)."""
        return {"kind": "libfm", "field_names": list(self.field_names), "min_counts": self.min_counts,
                "seen": torch.from_numpy(self.seen), "owner": torch.from_numpy(self.owner),
                "dense": torch.from_numpy(np.asarray(self.dense, dtype=np.int64))}

    @classmethod
    def from_state_dict(cls, state: dict, report: EncodingReport | None = None) -> LibFMEncoder:
        """The encoder :meth:`state_dict` describes, ready to :meth:`encode`."""
        encoder = cls(tuple(state["field_names"]), state["min_counts"], report or EncodingReport())
        encoder.positions = []
        encoder.seen, encoder.owner, encoder.dense = (state[name].numpy() for name in ("seen", "owner", "dense"))
        encoder.size = int((encoder.dense >= 0).sum())
        return encoder

    @property
    def num_features(self) -> int:
        """Feature ids in all: the kept training ids, then one out-of-vocabulary id per field."""
        return self.size + len(self.field_names)

    @property
    def num_slots(self) -> int:
        """One slot per positional field."""
        return len(self.field_names)

    @property
    def value_slots(self) -> tuple[int, ...]:
        """Every position may carry a number until the rows are encoded (see :meth:`stored_value_slots`)."""
        return tuple(range(len(self.field_names)))

    def stored_value_slots(self) -> tuple[int, ...]:
        """The positions that carried a value other than 0 and 1 in the rows encoded so far."""
        return tuple(int(slot) for slot in np.flatnonzero(self.carries_numbers))

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

    def encode(self, chunk: pa.Table, origin: SplitOrigin, first_row: int,
               split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dense ids ``(n, F)``, values and labels of a chunk of a split's lines; unseen ids map to their field's
        out-of-vocabulary id (counted in the report outside training), absent ones (value 0) to padding."""
        raw_ids, values, labels = parse_libfm(chunk.column("text"), origin, first_row, self.field_names)
        encoded = np.empty_like(raw_ids)
        for position, name in enumerate(self.field_names):
            column = raw_ids[:, position]
            index = np.minimum(np.searchsorted(self.seen, column), len(self.seen) - 1)
            owner = np.where(self.seen[index] == column, self.owner[index], -1)
            clash = (owner >= 0) & (owner != position)
            if clash.any():
                self._changes_field(raw_ids, origin, first_row, int(column[clash][0]), int(owner[clash][0]))
            known = (owner == position) & (self.dense[index] >= 0)
            encoded[:, position] = np.where(known, self.dense[index], self.oov_id(position))
            if split != "train":
                self.report.unseen_values[(split, name)] += int((~known).sum())
        self.carries_numbers |= ((values != 0) & (values != 1)).any(axis=0)
        return np.where(values == 0, self.num_features, encoded), values, labels

    def _changes_field(self, ids: np.ndarray, origin: SplitOrigin, first_row: int, feature: int,
                       owner: int | None = None) -> None:
        """Refuses ``feature``, found in a chunk ``ids`` in another field than ``owner`` (by default: the field of its
        first occurrence in the chunk), naming the first line where it does."""
        rows, positions = np.nonzero(ids == feature)  # in row order
        owner = int(positions[0]) if owner is None else owner
        clash = int(np.flatnonzero(positions != owner)[0])
        position = int(positions[clash])
        raise DataError(f"{origin.where(first_row + int(rows[clash]))}: feature id {feature} stands in field "
                        f"{self.field_names[position]!r} (position {position + 1}) but belongs to field "
                        f"{self.field_names[owner]!r} (position {owner + 1}); positional libFM fields need "
                        "each id in one field only")
