"""Which rows make each split: a file per split, or one source split 70/20/10 at random (the paper's protocol), and
where each row of a split stands in its file (for messages)."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

if TYPE_CHECKING:
    from lit_ifm.data.rows.readers import RowSource

SPLITS = ("train", "validation", "test")



def line_of(path: Path, row: int) -> str:
    """Where row ``row`` (0-based) of a file stands, as a person opening the file would count it."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return f"{path.name} line {csv_line(path, row)}"
    if suffix == ".parquet":
        return f"{path.name} row {row}"
    return f"{path.name} line {row + 1}"


def csv_line(path: Path, row: int) -> int:
    """The line of a CSV or TSV file on which its data row ``row`` (0-based, after the header) starts: a quoted
    value may hold line breaks, and blank lines hold no row. The file is read up to that row, as messages need it
    only; without the file, the row's line as though every row took one.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder) / "notes.csv"
    ...     _ = path.write_text('user,note\\nu1,"two\\nlines"\\n\\nu2,x\\n')
    ...     csv_line(path, 1), csv_line(path / "gone.csv", 1)
    (5, 3)
    """
    if path.is_file():
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as file:
            reader = csv.reader(file, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
            start, index = 1, -1  # the header is record -1
            for record in reader:
                if record:
                    if index == row:
                        return start
                    index += 1
                start = reader.line_num + 1
    return row + 2  # the header is line 1


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
