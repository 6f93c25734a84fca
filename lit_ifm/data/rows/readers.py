"""Reading a source's rows in chunks of Arrow tables, so that memory follows the chunk, not the file: parquet and
CSV/TSV streamed by Arrow, JSON and libFM text parsed (and cached) by HuggingFace ``datasets``, and in-memory
``datasets.Dataset`` tables."""

from __future__ import annotations

import abc
import csv
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from lit_ifm.data.rows.splits import line_of
from lit_ifm.errors import DataError


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
            # Arrow numbers the records read on one thread (the count), the header's 1
            where = line_of(self.path, row.number - 2) if row.number is not None else \
                f"{self.path.name}, row {row.text[:60]!r}"
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


class ArrowRows(RowSource):
    """An Arrow table in memory (what a pandas DataFrame or a list of dicts becomes)."""

    def __init__(self, table: pa.Table):
        self.table = table
        self.num_rows = table.num_rows
        self.column_names = table.column_names

    def chunks(self, rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
        table = self.table if columns is None else self.table.select(columns)
        for start in range(0, max(self.num_rows, 1), rows):
            yield table.slice(start, rows)


def _column(values: list) -> pa.Array:
    """A column of Python values: NaN and None missing; values of mixed types (text beside numbers, as a DataFrame's
    records give them) as text, integral numbers without their ``.0``.

    >>> _column(["a", float("nan"), 3.0]).to_pylist()
    ['a', None, '3']
    """
    try:
        return pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        missing = [value is None or (isinstance(value, float) and math.isnan(value)) for value in values]
        return pa.array([None if gone else str(int(value)) if isinstance(value, float) and value.is_integer()
                         else str(value) for value, gone in zip(values, missing)])


def rows_of(rows, cache_dir: str | None = None) -> tuple[RowSource, Path]:
    """Rows as a user has them, and the name messages give them: a file (CSV, TSV, parquet, JSON lines or libFM), a
    ``datasets.Dataset``, a pandas ``DataFrame``, a list of dicts (one a row) or an Arrow table.

    >>> source, name = rows_of([{"user": "a", "item": 1}, {"user": "b", "item": 2}])
    >>> source.num_rows, source.column_names, str(name)
    (2, ['user', 'item'], 'rows')
    """
    if isinstance(rows, (str, Path)):
        path = Path(rows).expanduser()
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        if path.suffix.lower() == ".libfm":
            return DatasetRows(read_lines(path, cache_dir), from_file=True), path
        if path.suffix.lower() not in (".csv", ".tsv", ".parquet", ".jsonl", ".json"):
            raise DataError(f"{path}: unknown file type {path.suffix!r}; expected .csv, .tsv, .parquet, .jsonl or .libfm")
        return open_table(path, cache_dir), path
    if isinstance(rows, datasets.Dataset):
        return DatasetRows(rows), Path("dataset")
    if isinstance(rows, pa.Table):
        return ArrowRows(rows), Path("table")
    if isinstance(rows, list) and all(isinstance(row, dict) for row in rows):
        names = list(dict.fromkeys(name for row in rows for name in row))
        return ArrowRows(pa.table({name: _column([row.get(name) for row in rows]) for name in names})), Path("rows")
    if hasattr(rows, "columns") and hasattr(rows, "to_dict"):  # a pandas DataFrame
        return ArrowRows(pa.Table.from_pandas(rows, preserve_index=False)), Path("DataFrame")
    raise DataError(f"rows of type {type(rows).__name__}: expected a file path, a pandas DataFrame, a list of dicts, a "
                    "datasets.Dataset or an Arrow table")
