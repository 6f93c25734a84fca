"""Which rows make each split: a file per split, or one source split 70/20/10 at random (the paper's protocol), and
where each row of a split stands in its file (for messages)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa


class Rows(Protocol):
    """What a split is cut from: rows read in chunks (:class:`~lit_ifm.data.rows.readers.RowSource`)."""

    num_rows: int
    column_names: list[str]

    def chunks(self, rows: int, columns: list[str] | None = None) -> Iterator[pa.Table]:
        """The rows in order, ``rows`` at a time, with ``columns`` only."""

SPLITS = ("train", "validation", "test")
SCORED = "scored"  # the one split of new rows scored with a trained model's encoder



def line_of(path: Path, row: int) -> str:
    """Where row ``row`` (0-based) of a file stands, as a person opening the file would count it."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return f"{path.name} line {csv_line(path, row)}"
    if suffix == ".parquet":
        return f"{path.name} row {row}"
    return f"{path.name} line {row + 1}"


def csv_line(path: Path, row: int, block_bytes: int = 1 << 24) -> int:
    """The line of a CSV or TSV file on which its data row ``row`` (0-based, after the header) starts: a quoted
    value may hold line breaks, and blank lines hold no row. The file is read up to that row, ``block_bytes`` at a
    time (messages alone need it); without the file, the row's line as though every row took one.

    A line break ends a row when an even number of quotes precedes it (a quote inside a quoted value is doubled).

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "notes.csv"
    ...     _ = path.write_text('user,note\\nu1,"two\\nlines"\\n\\nu2,x\\n')
    ...     csv_line(path, 1), csv_line(path / "gone.csv", 1)
    (5, 3)
    """
    if not path.is_file():
        return row + 2  # the header is line 1
    wanted = row + 1  # the header is record 0
    records = lines = quotes = 0  # before the block: records that hold something, line breaks, quotes
    pending, pending_line = 0, 1  # the bytes of the record that the block continues, and its first line
    last = 0  # the byte before the block
    with path.open("rb") as file:
        while block := file.read(block_bytes):
            data = np.frombuffer(block, dtype=np.uint8)
            breaks = np.flatnonzero(data == ord("\n"))
            marks = np.flatnonzero(data == ord('"')) if b'"' in block else np.empty(0, dtype=np.int64)
            ends = breaks[(quotes + np.searchsorted(marks, breaks)) % 2 == 0]  # the line breaks that end a record
            starts = np.r_[0, ends[:-1] + 1]
            sizes = ends - starts
            before_end = data[np.maximum(ends - 1, 0)]  # a record of one byte, "\r", is a blank line too
            if len(ends):
                sizes[0] += pending
                before_end[0] = data[ends[0] - 1] if ends[0] else last
            empty = (sizes == 0) | ((sizes == 1) & (before_end == ord("\r")))
            first_lines = lines + np.searchsorted(breaks, starts) + 1
            if len(ends):
                first_lines[0] = pending_line
            held = np.flatnonzero(~empty)
            if records + len(held) > wanted:
                return int(first_lines[held[wanted - records]])
            records += len(held)
            if len(ends):
                pending, pending_line = len(data) - ends[-1] - 1, lines + len(breaks[breaks <= ends[-1]]) + 1
            else:
                pending += len(data)
            lines, quotes, last = lines + len(breaks), quotes + len(marks), data[-1]
    return pending_line if records == wanted and pending else row + 2


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

    def __init__(self, sources: dict[str, Rows], origins: dict[str, SplitOrigin],
                 assignment: np.ndarray | None = None):
        self.sources, self.origins, self.assignment = sources, origins, assignment

    @classmethod
    def at_random(cls, source: Rows, path: Path, rng: np.random.Generator) -> SplitRows:
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
