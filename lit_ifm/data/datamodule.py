"""FieldAwareDataModule: every source (libFM, tables, the Hub, synthetic) to typed FieldBatches."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets
import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lit_ifm.data import encoding, sources
from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.negatives import sample_negatives
from lit_ifm.data.schema import FieldSchema
from lit_ifm.data.sources import SPLITS, SplitOrigin
from lit_ifm.data.synthetic import SyntheticConfig
from lit_ifm.errors import ConfigError, DataError

Task = Literal["regression", "binary"]


class FieldBatchDataset(Dataset):
    """Rows held as contiguous tensors; a batch is one fancy-index per tensor, never a loop per row."""

    def __init__(self, split: encoding.EncodedSplit):
        self.feature_ids = torch.from_numpy(split.feature_ids)
        self.feature_values = torch.from_numpy(split.feature_values)
        self.labels = torch.from_numpy(split.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> FieldBatch:
        index = torch.as_tensor(indices, dtype=torch.long, device=self.labels.device)
        return FieldBatch(self.feature_ids[index], self.feature_values[index], self.labels[index], index)

    def to(self, device: torch.device | str) -> FieldBatchDataset:
        """Moves the rows, so that batches are gathered where the model is."""
        self.feature_ids, self.feature_values, self.labels = (
            tensor.to(device) for tensor in (self.feature_ids, self.feature_values, self.labels))
        return self

    def __getitem__(self, index: int) -> FieldBatch:
        return self.__getitems__([index])


def split_rows(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded 70/20/10 split of ``count`` rows (the paper's protocol), each part in file order.

    >>> [len(part) for part in split_rows(10, np.random.default_rng(0))]
    [7, 2, 1]
    """
    order = rng.permutation(count)
    return [np.sort(part) for part in np.split(order, [int(0.7 * count), int(0.9 * count)])]


def _already_batched(batch: FieldBatch) -> FieldBatch:
    return batch


@dataclass
class PreparedData:
    """What preparing a source gives: the schema, the encoded splits, the counted changes and the printed summary."""

    schema: FieldSchema
    splits: dict[str, encoding.EncodedSplit]
    report: list[str]
    summary: str


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
        min_count: training values seen fewer times map to the out-of-vocabulary id.
        max_values: the most slots a multi-valued field takes (default: its longest training row).
        negatives_per_positive: for positive-only logs, sampled negatives per positive row (the paper: 2).
        item_field: the field whose value is replaced to make a negative.
        split_seed: seed of the random split and of negative sampling (and of the training order when
            ``seed_everything`` was not called).
        batch_size: training batch size.
        eval_batch_size: validation, test and predict batch size (default: ``batch_size``).
        num_workers: DataLoader worker processes.
        pin_memory: pin batches for faster host-to-GPU copies.
        device_resident: keep every split on the accelerator the trainer uses and gather batches there (no
            per-batch host work or copy; the data must fit in its memory; no workers, no pinning).
        cache_dir: where ``datasets`` caches parsed files (default: ``$LIT_IFM_CACHE`` or its own).
        predict_split: the split ``predict`` scores.
        synthetic: the generator's settings when ``source`` is ``synthetic``.
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
        min_count: int = 1,
        max_values: int | None = None,
        negatives_per_positive: int = 0,
        item_field: str | None = None,
        split_seed: int = 2019,
        batch_size: int = 1024,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        device_resident: bool = False,
        cache_dir: str | None = None,
        predict_split: Literal["train", "validation", "test"] = "test",
        synthetic: SyntheticConfig = SyntheticConfig(),
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
        if min_count < 1:
            raise ConfigError(f"min_count must be at least 1, got {min_count}")
        if device_resident and (num_workers or pin_memory):
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
        if self.hparams.device_resident and self.trainer is not None:
            for dataset in self._datasets.values():
                dataset.to(self.trainer.strategy.root_device)

    @property
    def _cache_dir(self) -> str | None:
        return self.hparams.cache_dir or sources.default_cache_dir()

    def _field_names(self, path: Path) -> tuple[str, ...]:
        if self.hparams.categorical:
            return tuple(self.hparams.categorical)
        return tuple(f"field_{index}" for index in range(encoding.count_libfm_fields(path)))

    def _prepare(self) -> PreparedData:
        with sources.quiet_datasets():
            return self._prepare_quietly()

    def _prepare_quietly(self) -> PreparedData:
        hp = self.hparams
        report = encoding.EncodingReport()
        rng = np.random.default_rng(hp.split_seed)
        own_rows = self.load_rows()
        if own_rows is not None:
            origin = Path(f"{type(self).__name__}.load_rows")
            if isinstance(own_rows, dict):
                if sorted(own_rows) != sorted(SPLITS):
                    raise DataError(f"{origin}: returned splits {sorted(own_rows)}; expected {list(SPLITS)}, or one "
                                    "table to split at random")
                tables, origins = own_rows, {split: SplitOrigin(origin) for split in SPLITS}
            else:
                tables, origins = self._random_split(own_rows, origin, rng)
            splits, schema_fields, num_features = self._encode_tables(tables, origins, self._column_specs(), report)
        elif self.source == "synthetic":
            columns = [encoding.ColumnSpec(name, "categorical") for name in self.synthetic.field_names]
            tables, origins = self._random_split(self.synthetic.generate(self.task), Path("synthetic"), rng)
            splits, schema_fields, num_features = self._encode_tables(tables, origins, columns, report)
        else:
            location = sources.download_from_hub(self.source, self._cache_dir) if sources.is_hub_id(self.source) \
                else self.source
            found = sources.find_source_files(location)
            if found.layout == "libfm":
                splits, schema_fields, num_features = self._encode_libfm(found, rng, report)
            else:
                tables = {split: sources.read_table(path, self._cache_dir) for split, path in found.files.items()}
                if found.has_splits:
                    origins = {split: SplitOrigin(path) for split, path in found.files.items()}
                else:
                    tables, origins = self._random_split(tables["all"], found.files["all"], rng)
                splits, schema_fields, num_features = self._encode_tables(tables, origins, self._column_specs(),
                                                                          report)
        for split, data in splits.items():
            if len(data) == 0:
                raise DataError(f"the {split} split of {self.source} has no rows")
        splits = self._map_labels(splits)
        if hp.negatives_per_positive:
            splits = self._add_negatives(splits, schema_fields, num_features, rng)
        train_labels = splits["train"].labels
        schema = FieldSchema(schema_fields, num_features, (float(train_labels.min()), float(train_labels.max())))
        lines = [f"{split}: {len(data)} rows" for split, data in splits.items()] + report.lines()
        return PreparedData(schema, splits, lines, self._summary(schema, splits, report))

    def _summary(self, schema: FieldSchema, splits: dict[str, encoding.EncodedSplit],
                 report: encoding.EncodingReport) -> str:
        train = splits["train"].labels
        if self.task == "binary":
            labels = f"{train.mean():.1%} of the training labels positive"
        else:
            labels = f"labels from {train.min():.4g} to {train.max():.4g}" + (
                " (0/1 read as -1/+1)" if self.hparams.signed_labels else "")
        rows = ", ".join(f"{split} {len(data):,}" for split, data in splits.items())
        head = (f"lit_ifm data from {self.source}, task {self.task}: {rows} rows; {labels}; {schema.num_fields} "
                f"fields in {schema.num_slots} slots, {schema.num_features:,} feature ids")
        return "\n".join([head, *(f"  {line}" for line in report.table(schema.fields))])

    def _column_specs(self) -> list[encoding.ColumnSpec]:
        hp = self.hparams
        specs = [encoding.ColumnSpec(name, "categorical") for name in hp.categorical or []]
        specs += [encoding.ColumnSpec(name, "numeric") for name in hp.numeric or []]
        specs += [encoding.ColumnSpec(name, "multi", separator) for name, separator in (hp.multi_valued or {}).items()]
        if not specs:
            raise DataError(f"data source {self.source}: a table source needs a field spec: name its columns "
                            "with categorical, numeric and/or multi_valued")
        names = [spec.name for spec in specs]
        if len(set(names)) != len(names):
            raise DataError(f"the field spec names a column twice: {names}")
        return specs

    @staticmethod
    def _random_split(table, path: Path, rng: np.random.Generator) -> tuple[dict, dict[str, SplitOrigin]]:
        parts = dict(zip(SPLITS, split_rows(len(table), rng)))
        return ({split: table.select(rows) for split, rows in parts.items()},
                {split: SplitOrigin(path, rows) for split, rows in parts.items()})

    def _encode_tables(self, tables, origins: dict[str, SplitOrigin], columns, report):
        labelled = not (self.hparams.negatives_per_positive and self.hparams.label not in tables["train"].column_names)
        label = self.hparams.label if labelled else None
        vocabulary = encoding.TableVocabulary(tables["train"], origins["train"].path, columns, label,
                                              self.hparams.min_count, self.hparams.max_values, report)
        splits = {}
        for split in SPLITS:
            if len(tables[split]) == 0:
                raise DataError(f"the {split} split ({origins[split].path}) has no rows")
            ids, values, labels = vocabulary.encode(tables[split], origins[split], split, labelled)
            splits[split] = encoding.EncodedSplit(split, ids, values, labels, origins[split])
        return splits, vocabulary.fields(), vocabulary.num_features

    def _encode_libfm(self, found: sources.SourceFiles, rng, report):
        first = found.files.get("train", found.files.get("all"))
        names = self._field_names(first)
        parsed = {split: encoding.parse_libfm(sources.read_lines(path, self._cache_dir), path, names)
                  for split, path in found.files.items()}
        origins = {split: SplitOrigin(path) for split, path in found.files.items()}
        if not found.has_splits:
            ids, values, labels = parsed.pop("all")
            parts = dict(zip(SPLITS, split_rows(len(labels), rng)))
            parsed = {split: (ids[rows], values[rows], labels[rows]) for split, rows in parts.items()}
            origins = {split: SplitOrigin(found.files["all"], rows) for split, rows in parts.items()}
        for split in SPLITS:
            if len(parsed[split][2]) == 0:
                raise DataError(f"the {split} split ({origins[split].path}) has no rows")
        vocabulary = encoding.LibFMVocabulary(parsed["train"][0], origins["train"], names, self.hparams.min_count,
                                              report)
        splits = {}
        for split in SPLITS:
            ids, values, labels = parsed[split]
            encoded = vocabulary.encode(ids, origins[split], split)
            encoded = np.where(values == 0, vocabulary.num_features, encoded)
            splits[split] = encoding.EncodedSplit(split, encoded, values, labels, origins[split])
        return splits, vocabulary.fields(), vocabulary.num_features

    def _map_labels(self, splits: dict[str, encoding.EncodedSplit]) -> dict[str, encoding.EncodedSplit]:
        """The labels the task trains on: 0/1 for binary, numbers (-1/+1 with signed_labels) for regression."""
        hp = self.hparams
        if self.task == "binary" and hp.positive_threshold is not None:
            threshold = hp.positive_threshold
            return {split: self._with_labels(data, data.labels >= threshold) for split, data in splits.items()}
        if self.task == "binary":
            self._check_two_classes(splits, "task binary", "set positive_threshold (labels at or above it are positive, "
                                    "e.g. --data.positive_threshold 4 for 1..5 ratings) or use task regression")
            return {split: self._with_labels(data, data.labels > 0) for split, data in splits.items()}
        if hp.signed_labels:
            self._check_two_classes(splits, "signed_labels", "drop signed_labels to use the labels as numbers")
            return {split: self._with_labels(data, np.where(data.labels == 0, -1.0, data.labels))
                    for split, data in splits.items()}
        return splits

    @staticmethod
    def _check_two_classes(splits: dict[str, encoding.EncodedSplit], what: str, advice: str) -> None:
        """Labels all 0/1 or all -1/+1. Anything else, or 0 beside -1 (three classes?), would be read wrongly."""
        signed = any((data.labels == -1).any() for data in splits.values())
        allowed = (-1.0, 1.0) if signed else (0.0, 1.0)
        for data in splits.values():
            unexpected = np.flatnonzero(~np.isin(data.labels, allowed))
            if len(unexpected):
                row = int(unexpected[0])
                label = f"{data.labels[row]:g}" + (" beside -1 labels" if signed and data.labels[row] == 0 else "")
                raise DataError(f"{data.origin.where(row)}: label {label} is not 0/1 or -1/+1, as {what} expects; "
                                f"{advice}")

    @staticmethod
    def _with_labels(data: encoding.EncodedSplit, labels: np.ndarray) -> encoding.EncodedSplit:
        return encoding.EncodedSplit(data.name, data.feature_ids, data.feature_values, labels.astype(np.float32),
                                     data.origin)

    def _add_negatives(self, splits, fields, num_features, rng):
        hp = self.hparams
        names = [field.name for field in fields]
        if hp.item_field not in names:
            raise DataError(f"item_field {hp.item_field!r} is not a field; the fields are {names}")
        item = fields[names.index(hp.item_field)]
        if item.slots != 1:
            raise DataError(f"item_field {hp.item_field!r} must be single-valued for negative sampling")
        item_slot = sum(field.slots for field in fields[: names.index(hp.item_field)])
        for split, data in splits.items():
            if (data.labels <= 0).any():
                raise DataError(f"negative sampling expects a positive-only log, but the {split} split has "
                                f"{int((data.labels <= 0).sum())} rows with a label <= 0")
        observed = np.concatenate([data.feature_ids for data in splits.values()])
        train_items = np.unique(splits["train"].feature_ids[:, item_slot])
        items = train_items[train_items != item.oov_id]
        negative_label = 0.0 if self.task == "binary" else -1.0
        result = {}
        for split, data in splits.items():
            negatives = sample_negatives(data.feature_ids, item_slot, items, observed, hp.negatives_per_positive, rng)
            negative_values = np.repeat(data.feature_values, hp.negatives_per_positive, axis=0)
            result[split] = encoding.EncodedSplit(
                split,
                np.concatenate([data.feature_ids, negatives]),
                np.concatenate([data.feature_values, negative_values]),
                np.concatenate([data.labels, np.full(len(negatives), negative_label, dtype=np.float32)]),
                data.origin,  # the sampled rows come after the file's, so row numbers of the file still hold
            )
        return result

    # --- loading ------------------------------------------------------------------------------------

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self._datasets:
            self.setup()
        hp, dataset = self.hparams, self._datasets[split]
        world_size, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        if shuffle:
            # A DistributedSampler even on one process: its order depends on (seed, epoch) only, so a run
            # resumed from a checkpoint sees the same batches as an uninterrupted one, and every DDP rank
            # shuffles alike. The seed is seed_everything's (split_seed when nothing was seeded).
            seed = int(os.environ.get("PL_GLOBAL_SEED", hp.split_seed))  # seed_everything's, same on all ranks
            sampler = DistributedSampler(dataset, world_size, rank, shuffle=True, seed=seed)
        else:
            # Each validation/test row is scored exactly once across ranks (no padding duplicates).
            sampler = UnrepeatedDistributedSampler(dataset, world_size, rank, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=hp.batch_size if shuffle else hp.eval_batch_size or hp.batch_size,
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
