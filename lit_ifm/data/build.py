"""The one build of a store: rows (:mod:`lit_ifm.data.rows`) through an encoder (:mod:`lit_ifm.data.encoding`) into
a store's files (:mod:`lit_ifm.data.store`).

A first pass counts the training values, a second encodes every split chunk by chunk, so memory follows the chunk
and the vocabularies; then the labels are mapped to the task's, negatives are sampled for a positive-only log, and
the store's description is written last.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lit_ifm.data.encoding import encoding_state
from lit_ifm.data.encoding.encoder import Encoder
from lit_ifm.data.encoding.labels import LabelRule
from lit_ifm.data.encoding.negatives import ItemTable, sample_negatives
from lit_ifm.data.encoding.report import EncodingReport
from lit_ifm.data.rows.splits import SPLITS, SplitOrigin, SplitRows
from lit_ifm.data.schema import Field, FieldSchema
from lit_ifm.data.store import folder as store
from lit_ifm.data.store.mapped import EncodedSplit, MappedArray, record_type
from lit_ifm.errors import DataError

CHUNK_ROWS = 1 << 18  # rows encoded at once: large enough for vectorised work, small enough to stay flat in memory


@dataclass(frozen=True)
class NegativeSampling:
    """Negatives for a positive-only log: ``per_positive`` rows per positive, each the positive with another item
    (drawn from the training items, never making an observed positive) and that item's own item-side fields."""

    per_positive: int


@dataclass(frozen=True)
class SampledLists:
    """The sampled ranking protocol: each positive of the test split becomes a list with ``per_positive`` drawn
    items (with their item-side fields, never an observed positive of that context). The test split then holds
    its positives, in file order, followed by the drawn rows of the first positive, of the second, and so on."""

    per_positive: int


def build_store(folder: Path, rows: SplitRows, encoder: Encoder, labels: LabelRule, source: str,
                negatives: NegativeSampling | None = None, rng: np.random.Generator | None = None,
                splits: tuple[str, ...] = SPLITS, fitted: bool = False,
                items: tuple[str, ...] | ItemTable = (), lists: SampledLists | None = None) -> None:
    """Encodes the ``splits`` of ``rows`` with ``encoder`` into the store's files in ``folder`` (see
    :mod:`lit_ifm.data.store`), with labels mapped by ``labels`` and, for a positive-only log, ``negatives`` drawn
    with ``rng``; ``source`` names the data in the summary. The encoder counts the first split's values and builds
    its vocabularies first, unless it is ``fitted`` already (new rows scored with a trained model's encoder).
    ``items`` names the item-side fields, the key first, whose table (:class:`ItemTable`, from the training rows)
    the encoding keeps and negatives draw from; a fitted encoder passes its table on. ``lists`` turns the test
    split into sampled ranking lists (:class:`SampledLists`)."""
    rows.origins = store.keep_file_rows(folder, rows.origins)
    for split in splits:
        if rows.num_rows(split) == 0:
            raise DataError(f"the {split} split ({rows.origins[split].path}) has no rows")
        encoder.check_columns(rows.column_names(split), rows.origins[split].path)
    if not fitted:
        counted = encoder.counted_columns
        if counted is None or counted:
            for split, first_row, chunk in rows.chunks(CHUNK_ROWS, splits[:1], counted):
                encoder.count(chunk, rows.origins[split], first_row)
        encoder.finish()
    width, value_slots = encoder.num_slots, encoder.value_slots
    with contextlib.ExitStack() as files:
        writers = {split: files.enter_context(store.SplitWriter(folder, split, width, value_slots)) for split in splits}
        for split, first_row, chunk in rows.chunks(CHUNK_ROWS, splits, encoder.encoded_columns):
            writers[split].append(*encoder.encode(chunk, rows.origins[split], first_row, split))
    label_files = {split: store.LabelFile(folder, split, CHUNK_ROWS) for split in splits}
    stored = encoder.stored_value_slots() if not fitted else value_slots
    if stored != value_slots:  # keep the values of the slots that carry numbers
        for split in splits:
            store.keep_value_slots(folder, split, width, len(value_slots), [value_slots.index(slot) for slot in stored],
                                   CHUNK_ROWS)
    labels.check(label_files, rows.origins)
    if labels.maps:
        for data in label_files.values():
            data.map(labels.apply)
    fields = encoder.fields()
    table = item_table(folder, fields, stored, items, encoder.num_features) if isinstance(items, tuple) and items \
        else items or None
    notes = []
    if negatives is not None:
        add_negatives(folder, label_files, fields, stored, negatives, labels.task, rng, table)
        kept = [field.name for field in fields if field.name not in table.fields]
        if len(table.fields) == 1 and kept:
            notes.append(f"negatives keep {', '.join(kept)} from their positive row and take only another "
                         f"{table.fields[0]}: name the item's own fields in item_fields")
    if lists is not None:
        if table is None:
            raise DataError("ranking_negatives draws items: name the item field (item_field or item_fields)")
        rows.origins["test"] = sample_lists(folder, label_files, fields, stored, lists, labels.task, rng, table,
                                            rows.origins["test"])
        notes.append(f"test: each positive ranked against {lists.per_positive} sampled items (ranking_negatives)")
    store.write_encoding(folder, encoding_state(encoder, labels, table))
    low, high, mean = label_files[splits[0]].range_and_mean()
    schema = FieldSchema(fields, encoder.num_features, (low, high))
    counts = {split: len(label_files[split]) for split in splits}
    lines = [f"{split}: {counts[split]} rows" for split in splits] + encoder.report.lines() + notes
    labelled = encoder_reads_labels(encoder)
    described = summary(source, labels, schema, counts, mean if labelled else None, encoder.report)
    store.write_meta(folder, schema, stored, rows.origins, counts, lines,
                     "\n".join([described, *(f"  {note}" for note in notes)]), labelled)


def encoder_reads_labels(encoder: Encoder) -> bool:
    """Whether the encoded rows carry labels of their own (a table without a label column, scored or a positive-only
    log, does not)."""
    return getattr(encoder, "label", True) is not None


def item_table(folder: Path, fields: list[Field], value_slots: tuple[int, ...], names: tuple[str, ...],
               padding_id: int) -> ItemTable:
    """The :class:`ItemTable` of the training split written in ``folder``: the fields ``names`` (the key first) of
    each item's first training row."""
    known = [field.name for field in fields]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise DataError(f"item fields {unknown} are not fields; the fields are {known}")
    key = fields[known.index(names[0])]
    if key.slots != 1 or key.kind != "categorical":
        raise DataError(f"item_field {key.name!r} must be a single-valued categorical field")
    firsts = np.cumsum([0, *(field.slots for field in fields)])
    slots = np.concatenate([np.arange(firsts[known.index(name)], firsts[known.index(name) + 1]) for name in names])
    records, path = record_type(int(firsts[-1]), len(value_slots)), folder / "train.records"
    train = MappedArray(path, records, (path.stat().st_size // records.itemsize,))
    # only the key column and each item's first row are read into memory, not the whole split
    _, first = np.unique(train.array["ids"][:, slots[0]], return_index=True)
    rows = train.take(first)
    values = EncodedSplit("train", rows["ids"], rows["values"], value_slots, np.zeros(len(rows), np.float32),
                          padding_id).feature_values
    return ItemTable.of_rows(names, slots, rows["ids"].astype(np.int64), values, key.oov_id)


def add_negatives(folder: Path, labels: dict[str, store.LabelFile], fields: list[Field], value_slots: tuple[int, ...],
                  negatives: NegativeSampling, task: str, rng: np.random.Generator, items: ItemTable) -> None:
    """Appends ``negatives.per_positive`` negatives per row of every split of a positive-only log (after the file's
    rows, so that row numbers of the file still hold), each with a training item of ``items`` and its attributes."""
    positives = {split: data.read() for split, data in labels.items()}
    for split, data in positives.items():
        if (data <= 0).any():
            raise DataError(f"negative sampling expects a positive-only log, but the {split} split has "
                            f"{int((data <= 0).sum())} rows with a label <= 0")
    num_slots = sum(field.slots for field in fields)
    splits = {split: store.read_split(folder, split, num_slots, len(value_slots)) for split in SPLITS}
    observed = np.concatenate([ids for ids, _ in splits.values()]).astype(np.int64)
    negative_label = 0.0 if task == "binary" else -1.0
    for split, (ids, values) in splits.items():
        sampled, drawn = sample_negatives(ids.astype(np.int64), items, observed, negatives.per_positive, rng)
        sampled_values = item_values(values, drawn, items, value_slots, negatives.per_positive)
        store.rewrite_split(folder, split, np.concatenate([ids, sampled]), np.concatenate([values, sampled_values]))
        labels[split].write(np.concatenate([positives[split],
                                            np.full(len(sampled), negative_label, dtype=np.float32)]))


def sample_lists(folder: Path, labels: dict[str, store.LabelFile], fields: list[Field], value_slots: tuple[int, ...],
                 lists: SampledLists, task: str, rng: np.random.Generator, items: ItemTable,
                 origin: SplitOrigin) -> SplitOrigin:
    """Rewrites the test split as :class:`SampledLists` and returns its origin, whose file rows are the positives'
    (rows the file had as negatives leave the split)."""
    num_slots = sum(field.slots for field in fields)
    positive = {split: data.read() > 0 for split, data in labels.items()}
    splits = {split: store.read_split(folder, split, num_slots, len(value_slots)) for split in labels}
    observed = np.concatenate([ids[positive[split]] for split, (ids, _) in splits.items()]).astype(np.int64)
    ids, values = (array[positive["test"]] for array in splits["test"])
    if not len(ids):
        raise DataError("ranking_negatives: the test split has no positive row to rank")
    sampled, drawn = sample_negatives(ids.astype(np.int64), items, observed, lists.per_positive, rng)
    store.rewrite_split(folder, "test", np.concatenate([ids, sampled]),
                        np.concatenate([values, item_values(values, drawn, items, value_slots, lists.per_positive)]))
    negative_label = 0.0 if task == "binary" else -1.0
    labels["test"].write(np.concatenate([labels["test"].read()[positive["test"]],
                                         np.full(len(sampled), negative_label, dtype=np.float32)]))
    file_rows = np.flatnonzero(positive["test"])  # positives are the file's rows, sampled negatives follow them
    if origin.file_rows is not None:
        file_rows = np.asarray(origin.file_rows)[file_rows]
    return store.keep_file_rows(folder, {"test": SplitOrigin(origin.path, file_rows)})["test"]


def item_values(values: np.ndarray, drawn: np.ndarray, items: ItemTable, value_slots: tuple[int, ...],
                per_positive: int) -> np.ndarray:
    """The stored values ``(N * per_positive, V)`` of rows that copy ``values`` ``per_positive`` times with the
    drawn items: an item's numbers (its year, say) come with it."""
    copied = np.repeat(values, per_positive, axis=0)
    for column, slot in enumerate(value_slots):
        if slot in items.slots:
            copied[:, column] = items.values[drawn, int(np.flatnonzero(items.slots == slot)[0])]
    return copied


def summary(source: str, labels: LabelRule, schema: FieldSchema, counts: dict[str, int], mean: float | None,
            report: EncodingReport) -> str:
    """What was loaded, printed when the data is first prepared: rows per split and the labels (``mean`` ``None``:
    rows without labels), then the schema, one line per field
    (:meth:`~lit_ifm.data.encoding.report.EncodingReport.table`)."""
    low, high = schema.label_range
    if mean is None:
        described = "no labels"
    elif labels.task == "binary":
        described = f"{mean:.1%} of the training labels positive"
    else:
        described = f"labels from {low:.4g} to {high:.4g}" + (" (0/1 read as -1/+1)" if labels.signed_labels else "")
    rows = ", ".join(f"{split} {count:,}" for split, count in counts.items())
    head = (f"lit_ifm data from {source}, task {labels.task}: {rows} rows; {described}; {schema.num_fields} "
            f"fields in {schema.num_slots} slots, {schema.num_features:,} feature ids")
    return "\n".join([head, *(f"  {line}" for line in report.table(schema.fields, [split for split in counts
                                                                                        if split != "train"]))])
