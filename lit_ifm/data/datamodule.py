"""FieldAwareDataModule: every source (libFM, tables, the Hub, synthetic) to typed FieldBatches."""

from __future__ import annotations

import functools
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets
import lightning as L
import numpy as np
import pyarrow as pa
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from lit_ifm.checkpoints import ENCODING_KEY, SCHEMA_KEY, read_checkpoint
from lit_ifm.compat import global_seed
from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.build import NegativeSampling, SampledLists, build_store
from lit_ifm.data.encoding import ItemTable, encoder_from_state
from lit_ifm.data.encoding.encoder import fingerprint
from lit_ifm.data.encoding.labels import LabelRule
from lit_ifm.data.encoding.libfm import LibFMEncoder, count_libfm_fields
from lit_ifm.data.encoding.report import EncodingReport
from lit_ifm.data.encoding.tables import ColumnSpec, TableEncoder
from lit_ifm.data.loading.dataset import FieldBatchDataset
from lit_ifm.data.loading.sampling import OrderedRows, ShuffledBatches, ShuffledRows
from lit_ifm.data.rows import files, readers
from lit_ifm.data.rows.splits import SCORED, SPLITS, SplitOrigin, SplitRows
from lit_ifm.data.schema import FieldSchema
from lit_ifm.data.store import mapped
from lit_ifm.data.store.folder import STORE_VERSION, Store, build_once
from lit_ifm.data.store.mapped import EncodedSplit
from lit_ifm.data.synthetic import SyntheticConfig
from lit_ifm.errors import CheckpointError, ConfigError, DataError
from lit_ifm.metrics import Ranking

Task = Literal["regression", "binary"]


def checkpoint_layout(state: dict) -> str:
    """``libfm`` or ``table``: the kind of files an encoding state reads."""
    return "libfm" if state["encoder"]["kind"] == "libfm" else "table"


# Settings that change the encoded splits, so a store built under other settings is not reused (and that scoring
# with a checkpoint takes from it unless told otherwise).
ENCODING_SETTINGS = ("task", "categorical", "numeric", "multi_valued", "label", "signed_labels", "positive_threshold",
                      "min_count", "max_values", "negatives_per_positive", "item_field", "item_fields", "split_seed",
                      "numeric_buckets", "hash_buckets", "missing_as_id")
# ... and the test split's sampled ranking lists: an evaluation setting, which scoring with a checkpoint leaves alone
_STORE_SETTINGS = (*ENCODING_SETTINGS, "ranking_negatives")


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
    labelled: bool = True


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
        item_field: the item's key field: its value is replaced to make a negative, and ``recommend`` ranks its
            values (default: the first of ``item_fields``).
        item_fields: the item-side fields, e.g. ``[item, genres, year]``: a negative, a sampled ranking list and
            ``recommend`` take each item's own (from its first training row) rather than the positive's.
        ranking_field: a single-valued field that groups the test rows into lists, e.g. ``user``: ``test`` then
            also reports ``test/ndcg@K``, ``test/hr@K``, ``test/mrr`` and ``test/gauc`` over those lists
            (:mod:`lit_ifm.metrics`).
        ranking_k: K of ``test/ndcg@K`` and ``test/hr@K``.
        ranking_negatives: the sampled ranking protocol: each test positive becomes a list of itself and this many
            items drawn from the training items (with their item-side fields, never an observed positive of that
            context), and the ranking metrics rank those lists; every test metric is then measured on them.
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
            when they take at most ``RESIDENT_BUDGET`` (256 MiB) as tensors, beyond which batches are read
            from the memory-mapped store, flat in memory.
        cache_dir: where encoded splits are stored, memory-mapped and reused (``<cache_dir>/encoded``), and where
            ``datasets`` caches parsed JSON and libFM files (default: ``$LIT_IFM_CACHE``, else
            ``~/.cache/lit_ifm`` and ``datasets``' own).
        predict_split: the split ``predict`` scores.
        synthetic: the generator's settings when ``source`` is ``synthetic``.
        shuffle_block_rows: shuffle the training rows as blocks of this many consecutive rows of the split (a block
            shuffle), then the rows within each batch: a batch holds the rows of about
            ``batch_size / shuffle_block_rows`` blocks mixed, every row still once an epoch.
            A store too large to index in memory then reads a block in one read rather than a row per read, several
            times faster (docs/large-data.md). 1, the default, shuffles row by row. Suits rows in no particular order; rows sorted by time or user keep that order
            within a block.
        encoder_from: a checkpoint whose encoder (vocabularies, rules, label mapping) encodes every row of
            ``source``, which ``predict``, ``test`` and ``validate`` then score whole (a label column is needed by
            ``test`` and ``validate`` only); no training split is read. ``python -m lit_ifm`` sets it when a
            checkpoint meets a source other than the one it was trained on.
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
        item_fields: list[str] | None = None,
        ranking_field: str | None = None,
        ranking_k: int = 10,
        ranking_negatives: int = 0,
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
        encoder_from: str | None = None,
    ):
        # This class's own arguments, also when a subclass with other arguments calls it (the CLI would otherwise
        # give save_hyperparameters the subclass's alone, and hparams would lack these).
        arguments = {name: value for name, value in locals().items() if name not in ("self", "__class__")}
        super().__init__()
        if positive_threshold is not None and task != "binary":
            raise ConfigError("positive_threshold turns labels into 0/1 for task binary; the regression task uses "
                              "labels as numbers")
        if negatives_per_positive and not (item_field or item_fields):
            raise ConfigError("negatives_per_positive needs item_field, the field whose value a negative replaces")
        if item_field and item_fields and item_field not in item_fields:
            raise ConfigError(f"item_field {item_field!r} is the key of item_fields {item_fields}: name it there too")
        if ranking_k < 1 or ranking_negatives < 0:
            raise ConfigError(f"ranking_k must be at least 1 and ranking_negatives at least 0, got {ranking_k} and "
                              f"{ranking_negatives}")
        if ranking_negatives and encoder_from:
            raise ConfigError("ranking_negatives samples the test split of the training source; with encoder_from, "
                              "rank the rows as they are (ranking_field)")
        counts = min_count.values() if isinstance(min_count, dict) else [min_count]
        if any(count < 1 for count in counts):
            raise ConfigError(f"min_count must be at least 1, got {min_count}")
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}"
                                  + (" (leave it out to use batch_size)" if name == "eval_batch_size" else ""))
        for name, value in (("num_workers", num_workers), ("split_seed", split_seed)):
            if value < 0:
                raise ConfigError(f"{name} must be 0 or more, got {value}")
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

    @property
    def item_fields(self) -> tuple[str, ...]:
        """The item-side fields, the key (``item_field``) first; empty when the data names no item."""
        hp = self.hparams
        key = hp.item_field or (hp.item_fields[0] if hp.item_fields else None)
        return () if key is None else (key, *(name for name in hp.item_fields or [] if name != key))

    @property
    def ranking(self) -> Ranking | None:
        """How ``test`` groups rows into ranked lists (the CLI links it to the model), or ``None``."""
        hp = self.hparams
        if hp.ranking_negatives:
            positives = len(self.prepared.splits["test"]) // (hp.ranking_negatives + 1)
            return Ranking(hp.ranking_field, hp.ranking_k, hp.ranking_negatives, positives)
        return Ranking(hp.ranking_field, hp.ranking_k) if hp.ranking_field else None

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

    def source_rows(self, split: str) -> pa.Table | None:
        """The rows of ``split`` as its table file holds them (every column, in the split's order), to join
        predictions back on; ``None`` when the split does not come from a table file (libFM lines, the synthetic
        generator, :meth:`load_rows`). Rows sampled as negatives have none."""
        split = self.scored_split or split
        origin = self.prepared.splits[split].origin
        if origin.path.suffix.lower() not in files.TABLE_FORMATS or not origin.path.is_file():
            return None
        table = pa.concat_tables(readers.open_table(origin.path, self._cache_dir).chunks(1 << 20))
        return table if origin.file_rows is None else table.take(pa.array(np.asarray(origin.file_rows)))

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
        if self.source != "synthetic" and files.is_hub_id(self.source):
            files.download_from_hub(self.source, self._cache_dir)

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
            return needed <= mapped.RESIDENT_BUDGET
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
        if free is not None and 2 * needed <= free:
            return True
        room = f"half the {free / 2**30:.1f} GiB free on {device}" if free is not None else \
            f"what lit_ifm can tell is free on {device}"
        rank_zero_info(f"lit_ifm: the splits take {needed / 2**30:.2f} GiB as device tensors, more than {room}: "
                       "batches are gathered on the host (--data.device_resident true insists)")
        return False


    @property
    def scored_split(self) -> str | None:
        """The one split of a source scored with a checkpoint's encoder (``encoder_from``), else ``None``."""
        return SCORED if self.hparams.encoder_from else None

    @property
    def _cache_dir(self) -> str | None:
        return self.hparams.cache_dir or files.default_cache_dir()

    def _prepare(self) -> PreparedData:
        with readers.quiet_datasets():
            folder, temporary = self._store()
        opened = Store(folder)
        if self.hparams.encoder_from:  # predictions are clipped to the range the model was trained on
            opened.schema.label_range = self._trained_label_range
        if temporary:  # mapped already: the files live on until the maps close
            shutil.rmtree(folder, ignore_errors=True)
        return PreparedData(opened.schema, opened.splits, opened.report, opened.summary, None if temporary else folder,
                            opened.labelled)

    def _store(self) -> tuple[Path, bool]:
        """The folder of the encoded splits, built unless a store for this source and these settings exists, and
        whether it is a temporary one (a source of one's own, whose rows this module cannot fingerprint)."""
        settings = [(name, self.hparams[name]) for name in _STORE_SETTINGS]
        own_rows = self.load_rows()
        if own_rows is not None:
            self.store_root.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix="own-rows.tmp-", dir=self.store_root))
            try:
                self._build(folder, own_rows=own_rows)
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            return folder, True
        if self.hparams.encoder_from:
            return self._scored_store(settings), False
        if self.source == "synthetic":
            key = fingerprint(STORE_VERSION, "synthetic", self.synthetic, settings)
            return build_once(self.store_root, key, self._build, rank_zero_info), False
        location = files.download_from_hub(self.source, self._cache_dir) if files.is_hub_id(self.source) \
            else self.source
        found = files.find_source_files(location)
        identities = {split: files.file_identity(path) for split, path in found.files.items()}
        key = fingerprint(STORE_VERSION, found.layout, identities, settings)
        return build_once(self.store_root, key, functools.partial(self._build, found=found), rank_zero_info), False

    def _scored_store(self, settings: list) -> Path:
        """The store of every row of ``source``, encoded with the checkpoint ``encoder_from``'s encoder."""
        checkpoint = read_checkpoint(self.hparams.encoder_from, "--data.encoder_from")
        if ENCODING_KEY not in checkpoint:
            raise CheckpointError(f"--data.encoder_from: {self.hparams.encoder_from} carries no encoder (it was written "
                                  "before checkpoints kept one): score the source it was trained on, or retrain")
        state = checkpoint[ENCODING_KEY]
        found = files.find_source_files(self.source)
        if found.has_splits or found.layout != checkpoint_layout(state):
            raise DataError(f"data source {self.source}: rows to score with a checkpoint's encoder come in one "
                            f"{checkpoint_layout(state)} file, not {sorted(path.name for path in found.files.values())}")
        path = found.files["all"]
        trained = checkpoint[SCHEMA_KEY]
        key = fingerprint(STORE_VERSION, "scored", files.file_identity(path), [field.fingerprint for field in
                                                                               trained.fields], state["labels"], settings)
        self._trained_label_range = trained.label_range
        return build_once(self.store_root, key, functools.partial(self._build_scored, path=path, state=state),
                          rank_zero_info)

    def _build_scored(self, folder: Path, path: Path, state: dict) -> None:
        source = readers.DatasetRows(readers.read_lines(path, self._cache_dir), from_file=True) \
            if path.suffix.lower() == ".libfm" else readers.open_table(path, self._cache_dir)
        rows = SplitRows({SCORED: source}, {SCORED: SplitOrigin(path)})
        encoder = encoder_from_state(state, columns=source.column_names)  # test and validate refuse no labels
        items = ItemTable.from_state_dict(state["items"]) if "items" in state else ()
        build_store(folder, rows, encoder, LabelRule(**state["labels"]), self.source, splits=(SCORED,), fitted=True,
                    items=items)

    @property
    def store_root(self) -> Path:
        """The folder that holds the encoded splits of every source and setting (one sub-folder each)."""
        return files.store_root(self.hparams.cache_dir)

    def _build(self, folder: Path, found: files.SourceFiles | None = None, own_rows=None) -> None:
        """Builds the store in ``folder`` from the source's files (``found``), the rows of :meth:`load_rows`
        (``own_rows``), or else the synthetic generator (:func:`~lit_ifm.data.build.build_store`)."""
        hp = self.hparams
        rng = np.random.default_rng(hp.split_seed)
        rows = self._split_rows(rng, found, own_rows)
        if found is not None and found.layout == "libfm":
            names = self._field_names(found.files.get("train", found.files.get("all")))
            if hp.hash_buckets or hp.numeric_buckets:
                raise DataError(f"{rows.origins['train'].path.name}: hash_buckets and numeric_buckets apply to table "
                                "columns; libFM files carry feature ids already")
            encoder = LibFMEncoder(names, [self._min_count(name, names) for name in names], EncodingReport())
        else:
            specs = self._column_specs() if found is not None or own_rows is not None else \
                [self._spec(name, "categorical", self.synthetic.field_names) for name in self.synthetic.field_names]
            # a positive-only log without a label column: every row is a positive
            labelled = not (hp.negatives_per_positive and hp.label not in rows.column_names("train"))
            encoder = TableEncoder(specs, hp.label if labelled else None, hp.max_values, EncodingReport())
        negatives = NegativeSampling(hp.negatives_per_positive) if hp.negatives_per_positive else None
        lists = SampledLists(hp.ranking_negatives) if hp.ranking_negatives else None
        build_store(folder, rows, encoder, self.label_rule, self.source, negatives, rng, items=self.item_fields,
                    lists=lists)

    @property
    def label_rule(self) -> LabelRule:
        """How the labels of the files become the task's."""
        hp = self.hparams
        return LabelRule(self.task, hp.positive_threshold, hp.signed_labels)

    def _split_rows(self, rng: np.random.Generator, found: files.SourceFiles | None, own_rows) -> SplitRows:
        if own_rows is not None:
            origin = Path(f"{type(self).__name__}.load_rows")
            if not isinstance(own_rows, dict):
                return SplitRows.at_random(readers.DatasetRows(own_rows), origin, rng)
            if sorted(own_rows) != sorted(SPLITS):
                raise DataError(f"{origin}: returned splits {sorted(own_rows)}; expected {list(SPLITS)}, or one "
                                "table to split at random")
            return SplitRows({split: readers.DatasetRows(own_rows[split]) for split in SPLITS},
                             {split: SplitOrigin(origin) for split in SPLITS})
        if found is None:
            generated = readers.DatasetRows(self.synthetic.generate(self.task))
            return SplitRows.at_random(generated, Path("synthetic"), rng)
        if found.layout == "libfm":
            opened = {split: readers.DatasetRows(readers.read_lines(path, self._cache_dir), from_file=True)
                      for split, path in found.files.items()}
        else:
            opened = {split: readers.open_table(path, self._cache_dir) for split, path in found.files.items()}
        if found.has_splits:
            return SplitRows(opened, {split: SplitOrigin(path) for split, path in found.files.items()})
        return SplitRows.at_random(opened["all"], found.files["all"], rng)

    def _field_names(self, path: Path) -> tuple[str, ...]:
        if self.hparams.categorical:
            return tuple(self.hparams.categorical)
        return tuple(f"field_{index}" for index in range(count_libfm_fields(path)))

    def _min_count(self, name: str, names) -> int:
        min_count = self.hparams.min_count
        if not isinstance(min_count, dict):
            return min_count
        unknown = sorted(set(min_count) - set(names))
        if unknown:
            raise DataError(f"min_count names {unknown}, which are not fields; the fields are {list(names)}")
        return min_count.get(name, 1)

    def _spec(self, name: str, kind: str, names, separator: str = "|") -> ColumnSpec:
        hp = self.hparams
        return ColumnSpec(name, kind, separator, self._min_count(name, names),
                                   hp.numeric_buckets if kind == "numeric" else None,
                                   (hp.hash_buckets or {}).get(name), hp.missing_as_id)

    def _column_specs(self) -> list[ColumnSpec]:
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

    # --- loading ------------------------------------------------------------------------------------

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.scored_split and shuffle:
            raise ConfigError(f"--data.encoder_from scores every row of {self.source} with a trained model's encoder; "
                              "fit trains on a source's training split: drop encoder_from")
        split = self.scored_split or split
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
        self._check_labelled("validate")
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        self._check_labelled("test")
        return self._loader("test", shuffle=False)

    def _check_labelled(self, command: str) -> None:
        if self.scored_split and not self.prepared.labelled:
            raise DataError(f"{Path(self.source).name}: {command} needs the label column {self.hparams.label!r}, which "
                            "the file lacks; predict scores rows without labels")

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.hparams.predict_split, shuffle=False)
