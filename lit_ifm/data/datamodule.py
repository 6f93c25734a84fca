"""FieldAwareDataModule: every source (libFM, tables, the Hub, synthetic) to typed FieldBatches."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets
import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from lit_ifm.compat import global_seed
from lit_ifm.data import encoding, sources, store
from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.negatives import sample_negatives
from lit_ifm.data.sampling import OrderedRows, ShuffledBatches, ShuffledRows
from lit_ifm.data.schema import Field, FieldSchema
from lit_ifm.data.sources import SPLITS, SplitOrigin, SplitRows, split_rows
from lit_ifm.data.store import EncodedSplit
from lit_ifm.data.synthetic import SyntheticConfig
from lit_ifm.errors import ConfigError, DataError

Task = Literal["regression", "binary"]


class FieldBatchDataset(Dataset):
    """Batches gathered from an encoded split (memory-mapped): one fancy index per array, never a loop per row.
    With :meth:`to`, the split is copied to a device once and batches are gathered there. An index tensor
    (what :class:`~lit_ifm.data.sampling.ShuffledBatches` yields) gives a batch of those rows, an int one row."""

    def __init__(self, split: EncodedSplit):
        self.split = split
        self.labels: torch.Tensor | None = None  # the device copy, once moved
        self.unit_values = False  # whether every value of the device copy is 1

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int] | torch.Tensor) -> FieldBatch:
        if self.labels is None:
            rows = indices.numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices, dtype=np.int64)
            ids, values, labels = self.split.gather(rows)
            return FieldBatch(torch.from_numpy(ids), torch.from_numpy(values), torch.from_numpy(labels),
                              torch.from_numpy(rows), self.split.unit_values(values))
        index = torch.as_tensor(indices, dtype=torch.long, device=self.labels.device)
        return FieldBatch(self.feature_ids[index], self.feature_values[index], self.labels[index], index,
                          self.unit_values)

    def to(self, device: torch.device | str) -> FieldBatchDataset:
        """Copies the rows to ``device``, so that batches are gathered where the model is."""
        self.feature_ids = torch.from_numpy(self.split.feature_ids.astype(np.int64)).to(device)
        values = self.split.feature_values
        self.unit_values = self.split.unit_values(values)  # then so is every batch's
        self.feature_values = torch.from_numpy(values).to(device)
        self.labels = torch.from_numpy(np.array(self.split.labels)).to(device)
        return self

    def __getitem__(self, index: int | torch.Tensor) -> FieldBatch:
        return self.__getitems__(index if isinstance(index, torch.Tensor) else [index])


# Settings that change the encoded splits, so a store built under other settings is not reused.
_ENCODING_SETTINGS = ("task", "categorical", "numeric", "multi_valued", "label", "signed_labels", "positive_threshold",
                      "min_count", "max_values", "negatives_per_positive", "item_field", "split_seed",
                      "numeric_buckets", "hash_buckets", "missing_as_id")


def _already_batched(batch: FieldBatch) -> FieldBatch:
    return batch


@dataclass
class PreparedData:
    """What preparing a source gives: the schema, the encoded splits, the counted changes, the printed summary and
    the folder of the store that holds the splits (``None`` for a source of one's own, whose store is not kept)."""

    schema: FieldSchema
    splits: dict[str, EncodedSplit]
    report: list[str]
    summary: str
    folder: Path | None = None


class FieldAwareDataModule(L.LightningDataModule):
    """One data module for every field-aware model.

    ``source`` picks the data:

    - ``synthetic``: the embedded generator (:class:`SyntheticConfig`), no files, no network;
    - a folder (or a file) of the paper's positional libFM files ``<name>.train.libfm``,
      ``<name>.validation.libfm``, ``<name>.test.libfm``: one feature per field, fields in file order,
      named by ``categorical`` (default ``field_0, field_1, ...``); global feature ids are kept;
    - a folder (or a file) of CSV, TSV, parquet or JSON-lines tables (``train``, ``valid``, ``test``),
      whose columns the field spec names: ``categorical``, ``numeric`` and ``multi_valued``
      (column -> separator), plus the ``label`` column;
    - a HuggingFace Hub dataset id laid out like that, e.g. ``reczoo/Frappe_x1``.

    A source without its own splits is split 70/20/10 at random with ``split_seed`` (the paper's protocol).
    Vocabularies come from the training split only (also when one file is split); unseen values map to a
    per-field out-of-vocabulary id and are counted in :attr:`report`. libFM feature ids are mapped densely, one
    embedding row per training id, whatever the ids' values.
    The :attr:`schema` is ready once the module is built, so LightningCLI links it to the model.

    The source is read in chunks and encoded once into a store of flat files (:mod:`lit_ifm.data.store`) under
    ``cache_dir``, reused while the files and the data settings are unchanged; every process (DDP ranks,
    DataLoader workers) maps the same store and gathers its batches from it, so memory stays flat in the number of
    rows.

    Args:
        source: ``synthetic``, a local path, or a Hub dataset id.
        task: ``regression`` (labels used as numbers) or ``binary`` (labels 0/1 or -1/+1, or any numbers with
            ``positive_threshold``).
        categorical: categorical columns; for libFM files, the names of the positional fields.
        numeric: numeric columns (one feature whose value is the number; 0 or missing means absent).
        multi_valued: multi-valued columns and their separators, e.g. ``{"genres": "|"}``.
        label: the label column of a table source.
        signed_labels: regression only: map 0/1 labels to -1/+1, the paper's protocol (-1/+1 stay). The binary
            task reads 0/1 and -1/+1 alike and ignores it, so one recipe serves both tasks.
        positive_threshold: binary only: labels at or above it are positive (1), the others negative (0), e.g. 4
            for 1..5 ratings. Without it, binary labels must be 0/1 or -1/+1.
        min_count: training values seen fewer times map to the out-of-vocabulary id; one count for every field,
            or a mapping from field names to counts (fields not named keep every value), e.g. ``{C3: 10}``.
        max_values: the most slots a multi-valued field takes (default: its longest training row).
        negatives_per_positive: for positive-only logs, sampled negatives per positive row (the paper: 2).
        item_field: the field whose value is replaced to make a negative.
        split_seed: seed of the random split and of negative sampling (and of the training order when
            ``seed_everything`` was not called).
        batch_size: training batch size.
        eval_batch_size: validation, test and predict batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        pin_memory: pin batches for faster host-to-GPU copies.
        numeric_buckets: ``log2`` turns every numeric field into a categorical one of buckets floor(ln(x)^2)
            for x > 2 and int(x) otherwise (the Criteo winners' transform, as in BARS and FuxiCTR).
        hash_buckets: categorical fields whose values map to a fixed number of ids by a hash rather than by a
            vocabulary, e.g. ``{C3: 1000000}`` (with ``min_count``, rarer values map to the out-of-vocabulary id).
        missing_as_id: a missing value of a categorical (or bucketed numeric) field is a value of its own, with its
            own id, rather than an absent feature.
        device_resident: keep every split on the accelerator the trainer uses and gather batches there (no
            per-batch host work or copy; no workers, no pinning). ``auto`` (the default), unless workers or
            pinning are asked for: on an accelerator whose free memory holds the splits twice over; on the CPU
            when they take at most ``store.RESIDENT_BUDGET`` (256 MiB) as tensors, beyond which batches are read
            from the memory-mapped store, flat in memory.
        cache_dir: where encoded splits are stored, memory-mapped and reused (``<cache_dir>/encoded``), and where
            ``datasets`` caches parsed JSON and libFM files (default: ``$LIT_IFM_CACHE``, else
            ``~/.cache/lit_ifm`` and ``datasets``' own).
        predict_split: the split ``predict`` scores.
        synthetic: the generator's settings when ``source`` is ``synthetic``.
        shuffle_block_rows: shuffle the training rows as blocks of this many consecutive rows of the split (a block
            shuffle), then the rows within each batch: a batch holds the rows of about
            ``batch_size / shuffle_block_rows`` blocks mixed, every row still once an epoch.
            A store too large to index in memory reads a block in one read rather than a row per read (5 M
            Criteo-shaped rows, blocks of 64: 2.8 M rows/s against 0.65 M; benchmarks/RESULTS.md). 1, the default,
            shuffles row by row. Suits rows in no particular order; rows sorted by time or user keep that order
            within a block.
    """

    def __init__(
        self,
        source: str = "synthetic",
        task: Task = "regression",
        categorical: list[str] | None = None,
        numeric: list[str] | None = None,
        multi_valued: dict[str, str] | None = None,
        label: str = "label",
        signed_labels: bool = False,
        positive_threshold: float | None = None,
        min_count: int | dict[str, int] = 1,
        max_values: int | None = None,
        negatives_per_positive: int = 0,
        item_field: str | None = None,
        split_seed: int = 2019,
        batch_size: int = 1024,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        numeric_buckets: Literal["log2"] | None = None,
        hash_buckets: dict[str, int] | None = None,
        missing_as_id: bool = False,
        device_resident: bool | Literal["auto"] = "auto",
        cache_dir: str | None = None,
        predict_split: Literal["train", "validation", "test"] = "test",
        synthetic: SyntheticConfig = SyntheticConfig(),
        shuffle_block_rows: int = 1,
    ):
        # This class's own arguments, also when a subclass with other arguments calls it (the CLI would otherwise
        # give save_hyperparameters the subclass's alone, and hparams would lack these).
        arguments = {name: value for name, value in locals().items() if name not in ("self", "__class__")}
        super().__init__()
        if positive_threshold is not None and task != "binary":
            raise ConfigError("positive_threshold turns labels into 0/1 for task binary; the regression task uses "
                              "labels as numbers")
        if negatives_per_positive and not item_field:
            raise ConfigError("negatives_per_positive needs item_field, the field whose value a negative replaces")
        counts = min_count.values() if isinstance(min_count, dict) else [min_count]
        if any(count < 1 for count in counts):
            raise ConfigError(f"min_count must be at least 1, got {min_count}")
        if shuffle_block_rows < 1:
            raise ConfigError(f"shuffle_block_rows must be at least 1, got {shuffle_block_rows}")
        if any(buckets < 1 for buckets in (hash_buckets or {}).values()):
            raise ConfigError(f"hash_buckets must be at least 1 per field, got {hash_buckets}")
        if device_resident is True and (num_workers or pin_memory):
            raise ConfigError("device_resident batches are gathered on the accelerator: set num_workers=0 and "
                              "pin_memory=false")
        self.save_hyperparameters(arguments, logger=False)  # the CLI logs the whole resolved config instead
        self.synthetic = synthetic
        self.source = str(source)
        self.task = task
        self._prepared: PreparedData | None = None
        self._datasets: dict[str, FieldBatchDataset] = {}

    # --- preparing ----------------------------------------------------------------------------------

    @property
    def schema(self) -> FieldSchema:
        """The data's fields and sizes, which size the model (the CLI links it to ``model.schema``)."""
        return self.prepared.schema

    @property
    def prepared(self) -> PreparedData:
        """The encoded splits, schema and report, prepared once (the first use reads and encodes the source)."""
        if self._prepared is None:
            self._prepared = self._prepare()
            rank_zero_info(self._prepared.summary)
        return self._prepared

    @property
    def report(self) -> list[str]:
        """What preparing the data counted: rows per split, out-of-vocabulary and truncated values."""
        return self.prepared.report

    @property
    def summary(self) -> str:
        """What was loaded, as printed when the data is first prepared: rows per split and the labels, then the
        schema, one line per field (see :meth:`~lit_ifm.data.encoding.EncodingReport.table`)."""
        return self.prepared.summary

    def load_rows(self) -> datasets.Dataset | dict[str, datasets.Dataset] | None:
        """The rows of a source of your own: a subclass overrides this to return one ``datasets.Dataset`` (split
        70/20/10 at random with ``split_seed``) or a dict of ``train``, ``validation`` and ``test`` datasets, with
        the columns the field spec (``categorical``, ``numeric``, ``multi_valued``) names and the ``label``
        column. They are then encoded as files are: vocabularies from the training rows, out-of-vocabulary ids,
        the report. ``None``, the default, reads ``source``.

        >>> class Ratings(FieldAwareDataModule):
        ...     def load_rows(self):
        ...         return datasets.Dataset.from_dict({"user": ["a", "b"] * 20, "label": [1.0, 0.0] * 20})
        >>> Ratings(source="ratings", task="binary", categorical=["user"]).schema.field_names
        ('user',)
        """
        return None

    def prepare_data(self) -> None:
        # Lightning's download hook, for code that uses this module without the CLI. Under the CLI the
        # schema link already prepared the data (Hub downloads are cached and locked, so ranks share one).
        if self.source != "synthetic" and sources.is_hub_id(self.source):
            sources.download_from_hub(self.source, self._cache_dir)

    def setup(self, stage: str | None = None) -> None:
        for split, data in self.prepared.splits.items():
            self._datasets.setdefault(split, FieldBatchDataset(data))
        if self.trainer is not None and self._resident_on(self.trainer.strategy.root_device):
            for dataset in self._datasets.values():
                dataset.to(self.trainer.strategy.root_device)

    def _resident_on(self, device: torch.device) -> bool:
        """Whether the splits go to ``device`` (see ``device_resident``); says why not when ``auto`` declines."""
        hp = self.hparams
        if hp.device_resident != "auto":
            return bool(hp.device_resident)
        if hp.num_workers or hp.pin_memory:
            return False
        needed = sum(len(split) * (split.feature_ids.shape[1] * 12 + 4)  # int64 ids, float32 values and labels
                     for split in self.prepared.splits.values())
        if device.type == "cpu":  # small splits as tensors, gathered as in a plain loop; large ones stay mapped
            return needed <= store.RESIDENT_BUDGET
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
        if free is not None and 2 * needed <= free:
            return True
        room = f"half the {free / 2**30:.1f} GiB free on {device}" if free is not None else \
            f"what lit_ifm can tell is free on {device}"
        rank_zero_info(f"lit_ifm: the splits take {needed / 2**30:.2f} GiB as device tensors, more than {room}: "
                       "batches are gathered on the host (--data.device_resident true insists)")
        return False

    @property
    def _cache_dir(self) -> str | None:
        return self.hparams.cache_dir or sources.default_cache_dir()

    def _field_names(self, path: Path) -> tuple[str, ...]:
        if self.hparams.categorical:
            return tuple(self.hparams.categorical)
        return tuple(f"field_{index}" for index in range(encoding.count_libfm_fields(path)))

    def _prepare(self) -> PreparedData:
        with sources.quiet_datasets():
            folder, temporary = self._store()
        opened = store.Store(folder)
        if temporary:  # mapped already: the files live on until the maps close
            shutil.rmtree(folder, ignore_errors=True)
        return PreparedData(opened.schema, opened.splits, opened.report, opened.summary, None if temporary else folder)

    def _store(self) -> tuple[Path, bool]:
        """The folder of the encoded splits, built unless a store for this source and these settings exists, and
        whether it is a temporary one (a source of one's own, whose rows this module cannot fingerprint)."""
        settings = [(name, self.hparams[name]) for name in _ENCODING_SETTINGS]
        own_rows = self.load_rows()
        if own_rows is not None:
            self.store_root.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="own-rows.tmp-", dir=self.store_root))
            try:
                self._build(folder, lambda rng: self._own_split_rows(own_rows, rng), self._column_specs)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            return folder, True
        if self.source == "synthetic":
            key = encoding.fingerprint(store.STORE_VERSION, "synthetic", self.synthetic, settings)
            names = self.synthetic.field_names
            return store.build_once(self.store_root, key, lambda folder: self._build(
                folder, self._synthetic_rows, lambda: [self._spec(name, "categorical", names) for name in names])), False
        location = sources.download_from_hub(self.source, self._cache_dir) if sources.is_hub_id(self.source) \
            else self.source
        found = sources.find_source_files(location)
        files = {split: sources.file_identity(path) for split, path in found.files.items()}
        key = encoding.fingerprint(store.STORE_VERSION, found.layout, files, settings)
        columns = (lambda: None) if found.layout == "libfm" else self._column_specs
        return store.build_once(self.store_root, key,
                                lambda folder: self._build(folder, lambda rng: self._file_rows(found, rng), columns)), False

    @property
    def store_root(self) -> Path:
        """The folder that holds the encoded splits of every source and setting (one sub-folder each)."""
        return sources.store_root(self.hparams.cache_dir)

    def _own_split_rows(self, own_rows, rng: np.random.Generator) -> SplitRows:
        origin = Path(f"{type(self).__name__}.load_rows")
        if not isinstance(own_rows, dict):
            return SplitRows.at_random(sources.DatasetRows(own_rows), origin, rng)
        if sorted(own_rows) != sorted(SPLITS):
            raise DataError(f"{origin}: returned splits {sorted(own_rows)}; expected {list(SPLITS)}, or one "
                            "table to split at random")
        return SplitRows({split: sources.DatasetRows(own_rows[split]) for split in SPLITS},
                         {split: SplitOrigin(origin) for split in SPLITS})

    def _synthetic_rows(self, rng: np.random.Generator) -> SplitRows:
        return SplitRows.at_random(sources.DatasetRows(self.synthetic.generate(self.task)), Path("synthetic"), rng)

    def _file_rows(self, found: sources.SourceFiles, rng: np.random.Generator) -> SplitRows:
        if found.layout == "libfm":
            opened = {split: sources.DatasetRows(sources.read_lines(path, self._cache_dir), from_file=True)
                      for split, path in found.files.items()}
        else:
            opened = {split: sources.open_table(path, self._cache_dir) for split, path in found.files.items()}
        if found.has_splits:
            return SplitRows(opened, {split: SplitOrigin(path) for split, path in found.files.items()})
        return SplitRows.at_random(opened["all"], found.files["all"], rng)

    def _build(self, folder: Path, split_rows_of, columns_of) -> None:
        """Reads the source in chunks, encodes it and writes the store's files into ``folder``: a first pass counts
        the training values, a second encodes every split; memory follows the chunk and the vocabularies.
        ``split_rows_of(rng)`` opens the source; ``columns_of()`` gives a table's field spec, ``None`` for libFM."""
        hp = self.hparams
        report = encoding.EncodingReport()
        rng = np.random.default_rng(hp.split_seed)
        rows = split_rows_of(rng)
        rows.origins = store.keep_file_rows(folder, rows.origins)
        for split in SPLITS:
            if rows.num_rows(split) == 0:
                raise DataError(f"the {split} split ({rows.origins[split].path}) has no rows")
        specs = columns_of()
        libfm = specs is None
        if libfm:
            vocabulary, encode, columns = self._libfm_vocabulary(rows, report)
        else:
            vocabulary, encode, columns = self._table_vocabulary(rows, specs, report)
        width = vocabulary.num_slots
        value_slots = vocabulary.value_slots
        numbers = np.zeros(width, dtype=bool)  # libFM positions with a value other than 0 and 1
        with contextlib.ExitStack() as files:
            writers = {split: files.enter_context(store.SplitWriter(folder, split, width, value_slots))
                       for split in SPLITS}
            for split, first, chunk in rows.chunks(encoding.CHUNK_ROWS, SPLITS, columns):
                ids, values, labels = encode(split, first, chunk)
                writers[split].append(ids, values, labels)
                if libfm:
                    numbers |= ((values != 0) & (values != 1)).any(axis=0)
        labels = {split: store.LabelFile(folder, split, encoding.CHUNK_ROWS) for split in SPLITS}
        if libfm:  # store values only for the positions that carry numbers
            value_slots = tuple(int(slot) for slot in np.flatnonzero(numbers))
            for split in SPLITS:
                store.keep_value_slots(folder, split, width, width, list(value_slots), encoding.CHUNK_ROWS)
        self._map_labels(labels, rows.origins)
        fields = vocabulary.fields()
        if hp.negatives_per_positive:
            self._add_negatives(folder, labels, fields, vocabulary.num_features, value_slots, rng)
        low, high, mean = labels["train"].range_and_mean()
        schema = FieldSchema(fields, vocabulary.num_features, (low, high))
        counts = {split: len(labels[split]) for split in SPLITS}
        lines = [f"{split}: {counts[split]} rows" for split in SPLITS] + report.lines()
        store.write_meta(folder, schema, value_slots, rows.origins, counts, lines,
                         self._summary(schema, counts, mean, report))

    def _libfm_vocabulary(self, rows: SplitRows, report: encoding.EncodingReport):
        first = rows.origins["train"].path
        names = self._field_names(first)
        if self.hparams.hash_buckets or self.hparams.numeric_buckets:
            raise DataError(f"{first.name}: hash_buckets and numeric_buckets apply to table columns; libFM files "
                            "carry feature ids already")
        vocabulary = encoding.LibFMVocabulary(names, [self._min_count(name, names) for name in names], report)

        def parse(split: str, first_row: int, chunk) -> tuple[np.ndarray, ...]:
            return encoding.parse_libfm(chunk.column("text"), rows.origins[split], first_row, names)

        def train_ids():
            return ((first_row, parse(split, first_row, chunk)[0])
                    for split, first_row, chunk in rows.chunks(encoding.CHUNK_ROWS, ("train",)))

        for _, ids in train_ids():
            vocabulary.count(ids)
        vocabulary.finish(train_ids, rows.origins["train"])

        def encode(split: str, first_row: int, chunk) -> tuple[np.ndarray, ...]:
            ids, values, labels = parse(split, first_row, chunk)
            return vocabulary.encode(ids, values, rows.origins[split], first_row, split), values, labels

        return vocabulary, encode, None

    def _table_vocabulary(self, rows: SplitRows, columns: list[encoding.ColumnSpec], report: encoding.EncodingReport):
        hp = self.hparams
        labelled = not (hp.negatives_per_positive and hp.label not in rows.column_names("train"))
        label = hp.label if labelled else None
        for split in SPLITS:
            encoding.check_columns(rows.column_names(split), columns, label, rows.origins[split].path)
        read = [spec.name for spec in columns] + ([label] if label else [])
        vocabulary = encoding.TableVocabulary(columns, label, hp.max_values, report)
        counted = vocabulary.counted_columns  # the first pass reads these alone
        for split, first_row, chunk in rows.chunks(encoding.CHUNK_ROWS, ("train",), counted) if counted else ():
            vocabulary.count(chunk, rows.origins[split], first_row)
        vocabulary.finish()

        def encode(split: str, first_row: int, chunk) -> tuple[np.ndarray, ...]:
            return vocabulary.encode(chunk, rows.origins[split], first_row, split, labelled)

        return vocabulary, encode, read

    def _summary(self, schema: FieldSchema, counts: dict[str, int], mean: float,
                 report: encoding.EncodingReport) -> str:
        low, high = schema.label_range
        if self.task == "binary":
            summary = f"{mean:.1%} of the training labels positive"
        else:
            summary = f"labels from {low:.4g} to {high:.4g}" + (
                " (0/1 read as -1/+1)" if self.hparams.signed_labels else "")
        rows = ", ".join(f"{split} {counts[split]:,}" for split in SPLITS)
        head = (f"lit_ifm data from {self.source}, task {self.task}: {rows} rows; {summary}; {schema.num_fields} "
                f"fields in {schema.num_slots} slots, {schema.num_features:,} feature ids")
        return "\n".join([head, *(f"  {line}" for line in report.table(schema.fields))])

    def _min_count(self, name: str, names) -> int:
        min_count = self.hparams.min_count
        if not isinstance(min_count, dict):
            return min_count
        unknown = sorted(set(min_count) - set(names))
        if unknown:
            raise DataError(f"min_count names {unknown}, which are not fields; the fields are {list(names)}")
        return min_count.get(name, 1)

    def _spec(self, name: str, kind: str, names, separator: str = "|") -> encoding.ColumnSpec:
        hp = self.hparams
        return encoding.ColumnSpec(name, kind, separator, self._min_count(name, names),
                                   hp.numeric_buckets if kind == "numeric" else None,
                                   (hp.hash_buckets or {}).get(name), hp.missing_as_id)

    def _column_specs(self) -> list[encoding.ColumnSpec]:
        hp = self.hparams
        names = [*(hp.categorical or []), *(hp.numeric or []), *(hp.multi_valued or {})]
        specs = [self._spec(name, "categorical", names) for name in hp.categorical or []]
        specs += [self._spec(name, "numeric", names) for name in hp.numeric or []]
        specs += [self._spec(name, "multi", names, separator) for name, separator in (hp.multi_valued or {}).items()]
        if not specs:
            raise DataError(f"data source {self.source}: a table source needs a field spec: name its columns "
                            "with categorical, numeric and/or multi_valued")
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise DataError(f"the field spec names a column twice: {names}")
        hashed = {spec.name: spec for spec in specs if spec.hash_buckets}
        unknown = sorted(set(hp.hash_buckets or {}) - set(hashed))
        wrong = [name for name, spec in hashed.items() if spec.kind == "multi" or spec.is_number]
        if unknown or wrong:
            raise DataError(f"hash_buckets names {unknown + wrong}, which are not categorical fields; the "
                            f"categorical fields are {[s.name for s in specs if s.kind == 'categorical']}")
        return specs

    def _map_labels(self, labels: dict[str, store.LabelFile], origins: dict[str, SplitOrigin]) -> None:
        """Maps the stored labels to those the task trains on: 0/1 for binary, numbers (-1/+1 with signed_labels)
        for regression."""
        hp = self.hparams
        if self.task == "binary" and hp.positive_threshold is not None:
            mapping = lambda data: data >= hp.positive_threshold  # noqa: E731
        elif self.task == "binary":
            self._check_two_classes(labels, origins, "task binary", "set positive_threshold (labels at or above it are "
                                    "positive, e.g. --data.positive_threshold 4 for 1..5 ratings) or use task regression")
            mapping = lambda data: data > 0  # noqa: E731
        elif hp.signed_labels:
            self._check_two_classes(labels, origins, "signed_labels", "drop signed_labels to use the labels as numbers")
            mapping = lambda data: np.where(data == 0, -1.0, data)  # noqa: E731
        else:
            return
        for data in labels.values():
            data.map(mapping)

    @staticmethod
    def _check_two_classes(labels: dict[str, store.LabelFile], origins: dict[str, SplitOrigin], what: str,
                           advice: str) -> None:
        """Labels all 0/1 or all -1/+1. Anything else, or 0 beside -1 (three classes?), would be read wrongly."""
        signed = any((chunk == -1).any() for data in labels.values() for _, chunk in data.chunks())
        allowed = (-1.0, 1.0) if signed else (0.0, 1.0)
        for split, data in labels.items():
            for start, chunk in data.chunks():
                unexpected = np.flatnonzero(~np.isin(chunk, allowed))
                if len(unexpected):
                    value = chunk[int(unexpected[0])]
                    label = f"{value:g}" + (" beside -1 labels" if signed and value == 0 else "")
                    raise DataError(f"{origins[split].where(start + int(unexpected[0]))}: label {label} is not 0/1 or "
                                    f"-1/+1, as {what} expects; {advice}")

    def _add_negatives(self, folder: Path, labels: dict[str, store.LabelFile], fields: list[Field],
                       num_features: int, value_slots: tuple[int, ...], rng: np.random.Generator) -> None:
        hp = self.hparams
        names = [field.name for field in fields]
        if hp.item_field not in names:
            raise DataError(f"item_field {hp.item_field!r} is not a field; the fields are {names}")
        item = fields[names.index(hp.item_field)]
        if item.slots != 1:
            raise DataError(f"item_field {hp.item_field!r} must be single-valued for negative sampling")
        item_slot = sum(field.slots for field in fields[: names.index(hp.item_field)])
        positives = {split: data.read() for split, data in labels.items()}
        for split, data in positives.items():
            if (data <= 0).any():
                raise DataError(f"negative sampling expects a positive-only log, but the {split} split has "
                                f"{int((data <= 0).sum())} rows with a label <= 0")
        num_slots = sum(field.slots for field in fields)
        splits = {split: store.read_split(folder, split, num_slots, len(value_slots)) for split in SPLITS}
        observed = np.concatenate([ids for ids, _ in splits.values()]).astype(np.int64)
        train_items = np.unique(splits["train"][0][:, item_slot])
        items = train_items[train_items != item.oov_id].astype(np.int64)
        negative_label = 0.0 if self.task == "binary" else -1.0
        for split, (ids, values) in splits.items():
            negatives = sample_negatives(ids.astype(np.int64), item_slot, items, observed, hp.negatives_per_positive,
                                         rng)
            # the sampled rows come after the file's, so row numbers of the file still hold
            store.rewrite_split(folder, split, np.concatenate([ids, negatives]),
                                np.concatenate([values, np.repeat(values, hp.negatives_per_positive, axis=0)]))
            labels[split].write(np.concatenate([positives[split],
                                                np.full(len(negatives), negative_label, dtype=np.float32)]))

    # --- loading ------------------------------------------------------------------------------------

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self._datasets:
            self.setup()
        hp, dataset = self.hparams, self._datasets[split]
        world_size, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        if shuffle:
            # A DistributedSampler even on one process: its order depends on (seed, epoch) only, so a run
            # resumed from a checkpoint sees the same batches as an uninterrupted one, and every DDP rank
            # shuffles alike. The seed is seed_everything's (split_seed when nothing was seeded). It yields
            # whole batches of row indices, which the DataLoader passes on as they are (batch_size None).
            seed = global_seed(hp.split_seed)  # seed_everything's, same on all ranks
            sampler = ShuffledBatches(dataset, world_size, rank, hp.batch_size, seed=seed,
                                      block_rows=hp.shuffle_block_rows)
            batch_size = None
            if self.trainer is not None and self.trainer.overfit_batches:  # Lightning swaps in a row sampler
                sampler, batch_size = ShuffledRows(dataset, world_size, rank, seed=seed), hp.batch_size
        else:
            # Each validation/test row is scored exactly once across ranks (no padding duplicates).
            sampler, batch_size = OrderedRows(dataset, world_size, rank), hp.eval_batch_size or hp.batch_size
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=_already_batched,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.hparams.predict_split, shuffle=False)
