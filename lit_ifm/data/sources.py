"""Finding a source's split files (local folder, single file or HuggingFace Hub repo) and reading their rows in
chunks: parquet and CSV/TSV streamed by Arrow, JSON and libFM text parsed (and cached) by HuggingFace ``datasets``."""

from __future__ import annotations

import abc
import csv
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lit_ifm.errors import DataError

SPLITS = ("train", "validation", "test")
TABLE_FORMATS = (".csv", ".tsv", ".parquet", ".jsonl", ".json")
_SPLIT_ALIASES = {"train": ("train",), "validation": ("validation", "valid", "val"), "test": ("test",)}
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class SourceFiles:
    """The files of a source: one per split, or a single ``all`` file to be split at random."""

    layout: str  # "libfm" or "table"
    files: dict[str, Path]  # split name ("train", "validation", "test" or "all") -> file

    @property
    def has_splits(self) -> bool:
        """True for a train/validation/test layout, False for one file to split at random."""
        return "train" in self.files


def line_of(path: Path, row: int) -> str:
    """Where row ``row`` (0-based) of a file stands, as a person opening the file would count it."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return f"{path.name} line {row + 2}"  # the header is line 1
    if suffix == ".parquet":
        return f"{path.name} row {row}"
    return f"{path.name} line {row + 1}"


@dataclass(frozen=True)
class SplitOrigin:
    """Where a split's rows come from: its file and, for a one-file source split at random, the file rows it
    holds in order, so that messages name lines of the file rather than positions inside the split.

    >>> SplitOrigin(Path("all.csv"), np.array([4, 9])).where(1)
    'all.csv line 11'
    """

    path: Path
    file_rows: np.ndarray | None = None

    def where(self, row: int) -> str:
        """Where row ``row`` of the split stands in its file, e.g. ``all.csv line 11``."""
        return line_of(self.path, row if self.file_rows is None else int(self.file_rows[row]))


def find_source_files(source: str | Path) -> SourceFiles:
    """The split files of a local file or folder.

    A folder holds ``<name>.train.libfm``, ``<name>.validation.libfm``, ``<name>.test.libfm`` (the paper's
    layout) or ``train``/``valid``/``test`` table files (``.csv``, ``.tsv``, ``.parquet``, ``.jsonl``), as in
    the Hub's ``reczoo/Frappe_x1``; a folder with one data file, or a single file, is split at random.
    """
    path = Path(source).expanduser()
    if path.is_file():
        return SourceFiles(_layout_of(path), {"all": path})
    if not path.is_dir():
        raise DataError(f"data source {str(source)!r}: no such file or folder")
    candidates = sorted(p for p in path.iterdir() if p.is_file() and _layout_of(p, strict=False))
    if not candidates:
        raise DataError(f"data source {path}: no data files; expected <name>.train.libfm/.validation.libfm/"
                        f".test.libfm or train/valid/test files ending in {sorted(TABLE_FORMATS)} or .libfm")
    files: dict[str, Path] = {}
    for split, aliases in _SPLIT_ALIASES.items():
        for candidate in candidates:
            stem_parts = candidate.name.lower().split(".")
            if any(alias in stem_parts[:-1] for alias in aliases):
                files.setdefault(split, candidate)
    if not files:
        if len(candidates) > 1:
            raise DataError(f"data source {path}: found {[c.name for c in candidates]} but no file named for a "
                            "split; name them train/valid/test (or <name>.train.libfm ...) or pass one file")
        return SourceFiles(_layout_of(candidates[0]), {"all": candidates[0]})
    missing = [split for split in SPLITS if split not in files]
    if missing:
        raise DataError(f"data source {path}: found {sorted(f.name for f in files.values())} but no "
                        f"{' or '.join(missing)} file; expected one file per split (train, valid, test)")
    layouts = {_layout_of(f) for f in files.values()}
    if len(layouts) > 1:
        raise DataError(f"data source {path}: split files mix libFM and table formats: {sorted(map(str, files.values()))}")
    return SourceFiles(layouts.pop(), files)


def _layout_of(path: Path, strict: bool = True) -> str:
    suffix = path.suffix.lower()
    if suffix == ".libfm":
        return "libfm"
    if suffix in TABLE_FORMATS:
        return "table"
    if strict:
        raise DataError(f"{path}: unknown file type {suffix!r}; expected .libfm or one of {sorted(TABLE_FORMATS)}")
    return ""


def is_hub_id(source: str) -> bool:
    """Whether ``source`` names a HuggingFace Hub dataset (``owner/name``) rather than a local path."""
    return bool(_HUB_ID.match(source)) and not Path(source).exists()


def download_from_hub(repo_id: str, cache_dir: str | None = None, timeout: float = 5.0) -> Path:
    """Fetch a Hub dataset repo's data files and return the local snapshot folder.

    Uses the local cache when it has the repo; otherwise checks within ``timeout`` seconds that the Hub
    answers, so an offline machine fails at once with advice rather than after a minute of retries.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    patterns = ["*.csv", "*.tsv", "*.parquet", "*.jsonl", "*.json", "*.libfm", "**/*.csv", "**/*.parquet"]
    advice = (f"Pass a local folder laid out like the Hub repo instead (train.csv, valid.csv, test.csv), "
              f"e.g. --data.source /path/to/{repo_id.split('/')[-1]}, or a folder of the paper's libFM files.")
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns,
                                      cache_dir=cache_dir, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError):
        pass
    if constants.HF_HUB_OFFLINE:
        raise DataError(f"HuggingFace Hub dataset {repo_id!r} is not in the local cache and HF_HUB_OFFLINE is "
                        f"set, so it cannot be downloaded. {advice}")
    _check_hub_reachable(constants.ENDPOINT, repo_id, timeout, advice)
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns, cache_dir=cache_dir))
    except Exception as error:  # the Hub's own errors (missing repo, auth) carry the details
        raise DataError(f"could not download HuggingFace Hub dataset {repo_id!r}: {error}. {advice}") from error


def _check_hub_reachable(endpoint: str, repo_id: str, timeout: float, advice: str) -> None:
    import httpx

    try:
        httpx.head(endpoint, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as error:
        raise DataError(f"cannot reach the HuggingFace Hub at {endpoint} to download {repo_id!r} "
                        f"(offline? {type(error).__name__}). {advice}") from None


def open_table(path: Path, cache_dir: str | None) -> RowSource:
    """A table file's rows: parquet and CSV/TSV streamed by Arrow, JSON parsed (and cached) by ``datasets``."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return ParquetRows(path)
    if suffix in (".csv", ".tsv"):
        return CsvRows(path)
    return DatasetRows(_load("json", path, cache_dir), from_file=True)


def read_lines(path: Path, cache_dir: str | None) -> datasets.Dataset:
    """A text file as a ``datasets.Dataset`` with one ``text`` row per line."""
    return _load("text", path, cache_dir)


def _read_header(path: Path, separator: str) -> list[str]:
    """The column names; a repeated one is refused, as the field spec could not tell which is meant."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:  # -sig: a byte order mark is no part of a name
            header = next((row for row in csv.reader(file, delimiter=separator) if row), [])
    except UnicodeDecodeError:
        raise DataError(not_utf8(path)) from None
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"{path.name} line 1: the header names column{'s' if len(repeated) > 1 else ''} "
                        f"{', '.join(map(repr, repeated))} more than once; give every column its own name")
    return header


def not_utf8(path: Path) -> str:
    """Which line of ``path`` is not UTF-8 text, found by a second, binary read (only once decoding failed)."""
    with path.open("rb") as file:
        for number, line in enumerate(file, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return (f"{path.name} line {number}: not UTF-8 text (byte 0x{line[error.start]:02x} at column "
                        f"{error.start + 1}); save the file as UTF-8")
    return f"{path.name}: not UTF-8 text; save the file as UTF-8"


def _root_cause(error: BaseException) -> BaseException:
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return error


@contextmanager
def quiet_datasets() -> Iterator[None]:
    """No progress bars or info logs from ``datasets`` while lit_ifm reads and parses."""
    verbosity, bars = datasets.logging.get_verbosity(), datasets.is_progress_bar_enabled()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # its errors reach the user as our DataError
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()


def _load(builder: str, path: Path, cache_dir: str | None, **options) -> datasets.Dataset:
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        with quiet_datasets():
            return datasets.load_dataset(builder, data_files=str(path), split="train", cache_dir=cache_dir, **options)
    except Exception as error:
        if "corresponds to no data" in str(error):
            raise DataError(f"{path}: the file has no rows") from None
        cause = _root_cause(error)  # datasets wraps the reader's error in "An error occurred while generating"
        if isinstance(cause, UnicodeDecodeError):
            raise DataError(not_utf8(path)) from None
        raise DataError(f"{path}: could not be read as {builder}: {type(cause).__name__}: {cause}") from None


def default_cache_dir() -> str | None:
    """Where ``datasets`` caches parsed JSON and libFM files unless ``cache_dir`` says: ``$LIT_IFM_CACHE``, else its
    own default."""
    return os.environ.get("LIT_IFM_CACHE")


def store_root(cache_dir: str | None) -> Path:
    """Where encoded splits are stored: ``<cache_dir>/encoded``, with ``cache_dir`` defaulting to
    ``$LIT_IFM_CACHE``, else ``~/.cache/lit_ifm``."""
    return Path(cache_dir or default_cache_dir() or Path.home() / ".cache" / "lit_ifm").expanduser() / "encoded"


def file_identity(path: Path) -> tuple:
    """What says a file is unchanged since a store was built from it: its path, size, change time and inode."""
    status = path.stat()
    return str(path.resolve()), status.st_size, status.st_mtime_ns, status.st_ino


# --- reading rows in chunks ---------------------------------------------------------------------------


class RowSource(abc.ABC):
    """The rows of one file or in-memory table, read as Arrow tables of a bounded number of rows, so that memory
    follows the chunk, not the file."""

    num_rows: int
    column_names: list[str]

    @abc.abstractmethod
    def chunks(self, rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The rows in file order, ``rows`` at a time (the last chunk may be shorter), with ``columns`` only."""


class ParquetRows(RowSource):
    """A parquet file, read row group by row group (no copy of the file is made)."""

    def __init__(self, path: Path):
        if path.stat().st_size == 0:
            raise DataError(f"{path}: the file is empty")
        self.path = path
        try:
            # pre_buffer (pyarrow's default) keeps every range it has read until the file closes: 46 bytes a row of
            # Criteo-shaped data, 1.2 GiB at 20 M rows. Without it, memory follows the row group, and reading is faster.
            self.file = pq.ParquetFile(path, pre_buffer=False)
        except (pa.ArrowException, OSError) as error:
            raise self._unreadable(error) from None
        self.num_rows = self.file.metadata.num_rows
        self.column_names = self.file.schema_arrow.names
        if self.num_rows == 0:
            raise DataError(f"{path}: the file has no rows")

    def chunks(self, rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
        batches = self.file.iter_batches(batch_size=rows, columns=columns, use_threads=True)
        for batch in _checked(batches, self._unreadable):  # a damaged row group
            yield pa.Table.from_batches([batch])

    def _unreadable(self, error: Exception) -> DataError:
        return DataError(f"{self.path}: could not be read as parquet: {type(error).__name__}: {error}")


def _checked(batches: Iterator[pa.RecordBatch],
             unreadable: Callable[[Exception], DataError]) -> Iterator[pa.RecordBatch]:
    """``batches``, a reader's error raised as the ``DataError`` that ``unreadable`` makes of it. Only ``next`` is
    in the ``try``: a ``yield`` there would run the ``except`` clause when the generator is closed early (at exit,
    with ``pa`` already gone)."""
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (pa.ArrowException, OSError) as error:
            raise unreadable(error) from None
        yield batch


# What pandas (and so the ``datasets`` CSV reader lit_ifm used before) reads as a missing cell.
_MISSING_CELLS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
                 "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]


class CsvRows(RowSource):
    """A CSV or TSV file, streamed by Arrow's CSV reader (no copy of the file is made).

    Every cell is read as text: the reader would fix a column's type from its first block, so a categorical column
    of digits that later holds ``abc`` would fail. The encoder turns numeric and label columns into numbers as it
    does for text columns of any source. A counting pass gives :attr:`num_rows` and finds a row of the wrong width.
    """

    BLOCK_BYTES = 1 << 20  # parsed at a time: Arrow's default (16 MiB blocks read Criteo-shaped rows 40% slower)

    def __init__(self, path: Path):
        if path.stat().st_size == 0:
            raise DataError(f"{path}: the file is empty")
        self.path = path
        self.separator = "\t" if path.suffix.lower() == ".tsv" else ","
        self.column_names = _read_header(path, self.separator)
        if not self.column_names:
            raise DataError(f"{path}: the file is empty")
        # one column converted, on one thread: 3 M rows/s, and the reader then numbers a bad row's line
        self.num_rows = sum(batch.num_rows for batch in self._batches(self.column_names[:1], threads=False))
        if self.num_rows == 0:
            raise DataError(f"{path}: the file has no rows")

    def chunks(self, rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
        for chunk in _in_chunks(self._batches(columns or self.column_names), rows):
            yield pa.table({name: _integral_text(column) for name, column in zip(chunk.column_names, chunk.columns)})

    def _batches(self, columns: list[str], threads: bool = True) -> Iterator[pa.RecordBatch]:
        bad_rows = []

        def refuse(row) -> str:  # an exception raised here would be printed and dropped by Arrow, so keep the row
            bad_rows.append(row)
            return "error"

        def read() -> Iterator[pa.RecordBatch]:  # opening reads the first block: its errors too are checked
            yield from pa_csv.open_csv(
                self.path, read_options=pa_csv.ReadOptions(use_threads=threads, block_size=self.BLOCK_BYTES),
                parse_options=pa_csv.ParseOptions(delimiter=self.separator, newlines_in_values=True,
                                                  invalid_row_handler=refuse),
                convert_options=pa_csv.ConvertOptions(
                    include_columns=columns, column_types=dict.fromkeys(columns, pa.string()),
                    null_values=_MISSING_CELLS, strings_can_be_null=True))

        return _checked(read(), lambda error: self._unreadable(error, bad_rows))

    def _unreadable(self, error: Exception, bad_rows: list) -> DataError:
        if bad_rows:
            row = bad_rows[0]
            where = f"{self.path.name} line {row.number}" if row.number is not None else \
                f"{self.path.name}, row {row.text[:60]!r}"  # Arrow numbers rows read on one thread (the count)
            return DataError(f"{where}: {row.actual_columns} fields, expected {row.expected_columns} "
                             "(as in the header)")
        if "invalid UTF8" in str(error):
            return DataError(not_utf8(self.path))
        if "Empty CSV file" in str(error):  # a header without a line end
            return DataError(f"{self.path}: the file has no rows")
        return DataError(f"{self.path}: could not be read as CSV: {type(error).__name__}: {error}")


def _integral_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """``12.0`` as ``12``: pandas wrote integers with missing values that way, and read them back as the integral
    floats the encoder spells as integers; a categorical value keeps its id whichever reader read it."""
    texts = (chunk.buffers()[2] for chunk in column.chunks)  # the characters, read in place
    if not any(text is not None and (np.frombuffer(text, np.uint8) == ord(".")).any() for text in texts):
        return column  # a byte search (20x faster than pc.match_substring) spares most columns the regex
    return pc.replace_substring_regex(column, r"^(-?\d+)\.0*$", r"\1")


def _in_chunks(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.Table]:
    """Record batches of any sizes as tables of ``rows`` rows (the last one shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending)


class DatasetRows(RowSource):
    """A ``datasets.Dataset``. One that ``datasets`` parsed from a file (``from_file``: JSON or text) is read
    from its cache files batch by batch rather than through its memory map, whose touched pages would stay in the
    resident set."""

    def __init__(self, dataset: datasets.Dataset, from_file: bool = False):
        self.dataset, self.from_file = dataset, from_file
        self.num_rows = len(dataset)
        self.column_names = dataset.column_names

    def chunks(self, rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
        batches = self._batches()
        yield from _in_chunks(batches if columns is None else (batch.select(columns) for batch in batches), rows)

    def _batches(self) -> Iterator[pa.RecordBatch]:
        files = [entry["filename"] for entry in self.dataset.cache_files]
        if files and self.from_file:
            for name in files:
                with pa.OSFile(name) as file:
                    yield from pa.ipc.open_stream(file)
        else:
            yield from self.dataset.with_format("arrow")[:].to_batches()


def split_rows(count: int, rng: np.random.Generator) -> list[np.ndarray]:
    """A seeded 70/20/10 split of ``count`` rows (the paper's protocol), each part in file order.

    >>> [len(part) for part in split_rows(10, np.random.default_rng(0))]
    [7, 2, 1]
    """
    order = rng.permutation(count)
    return [np.sort(part) for part in np.split(order, [int(0.7 * count), int(0.9 * count)])]


class SplitRows:
    """Which rows make each split: one source per split, or one source whose rows are split 70/20/10 at random
    (each split keeping file order). Chunks come in file order, each with its split and its first row there."""

    def __init__(self, sources: dict[str, RowSource], origins: dict[str, SplitOrigin],
                 assignment: np.ndarray | None = None):
        self.sources, self.origins, self.assignment = sources, origins, assignment

    @classmethod
    def at_random(cls, source: RowSource, path: Path, rng: np.random.Generator) -> SplitRows:
        """The rows of ``source`` split at random with ``rng`` (:func:`split_rows`)."""
        parts = dict(zip(SPLITS, split_rows(source.num_rows, rng)))
        assignment = np.empty(source.num_rows, dtype=np.int8)
        for index, rows in enumerate(parts.values()):
            assignment[rows] = index
        return cls({"all": source}, {split: SplitOrigin(path, rows) for split, rows in parts.items()}, assignment)

    def num_rows(self, split: str) -> int:
        """The rows of ``split``."""
        if self.assignment is None:
            return self.sources[split].num_rows
        return len(self.origins[split].file_rows)

    def column_names(self, split: str) -> list[str]:
        """The columns of the source that ``split`` comes from."""
        return self.sources[split if self.assignment is None else "all"].column_names

    def chunks(self, rows: int, splits: tuple[str, ...] = SPLITS,
               columns: list[str] | None = None) -> Iterator[tuple[str, int, pa.Table]]:
        """``(split, first row in the split, rows)`` for every chunk of ``splits``, in order."""
        if self.assignment is None:
            for split in splits:
                first = 0
                for chunk in self.sources[split].chunks(rows, columns):
                    yield split, first, chunk
                    first += chunk.num_rows
            return
        firsts, start = dict.fromkeys(SPLITS, 0), 0
        for chunk in self.sources["all"].chunks(rows, columns):
            owner = self.assignment[start: start + chunk.num_rows]
            start += chunk.num_rows
            for index, split in enumerate(SPLITS):
                mine = owner == index
                count = int(mine.sum())
                if split in splits and count:
                    yield split, firsts[split], chunk.filter(pa.array(mine))
                firsts[split] += count
