"""Numbers in table columns: parsing them with the line of a bad one, and the Criteo winners' buckets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lit_ifm.data.rows.splits import SplitOrigin
from lit_ifm.errors import DataError

# The largest magnitude a stored number may have. Numbers are stored and trained on as float32, and the models square
# them (the FM's pairwise term, the squared error): beyond the square root of float32's largest value, 3.4e38, a
# square overflows and the loss or the prediction turns into NaN.
LARGEST = float(np.sqrt(np.finfo(np.float32).max))  # 1.8e19


def parse_numbers(column: pa.ChunkedArray | pa.Array, origin: SplitOrigin, name: str, first_row: int,
             what: str) -> np.ndarray:
    """A column as float64, missing values as NaN (text padded with spaces, or True and False, read as pandas reads
    them); a value that is not a number, or is infinite, is an error that names its line."""
    numbers, text = _as_float(column), column
    if numbers is None and (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        text = pc.utf8_trim_whitespace(column)
        numbers = _as_float(text)
        numbers = _as_float(text, through=pa.bool_()) if numbers is None else numbers
    if numbers is None:
        row = _first_unparsed(text)
        raise DataError(f"{origin.where(first_row + row)}, column {name!r}: {what} {column[row].as_py()!r} is not a "
                        "number")
    infinite = np.flatnonzero(np.isinf(numbers))
    if len(infinite):
        row = int(infinite[0])
        raise DataError(f"{origin.where(first_row + row)}, column {name!r}: {what} {numbers[row]:g} is not a "
                        "finite number")
    return numbers


def stored_numbers(numbers: np.ndarray, origin: SplitOrigin, name: str, first_row: int, what: str) -> np.ndarray:
    """``numbers`` cast to float32, the type the store keeps (missing values stay NaN); one that overflows float32,
    or whose square does (:data:`LARGEST`), is an error that names its line.

    >>> from pathlib import Path
    >>> stored_numbers(np.array([1.5, np.nan, -2e19]), SplitOrigin(Path("a.csv")), "price", 0, "value")
    Traceback (most recent call last):
    lit_ifm.errors.DataError: a.csv line 4, column 'price': value -2e+19 is too large: numbers are stored as float32 \
and the models square them, which overflows beyond a magnitude of 1.8e+19
    """
    too_large = np.flatnonzero(np.abs(np.nan_to_num(numbers)) > LARGEST)
    if len(too_large):
        row = int(too_large[0])
        raise DataError(f"{origin.where(first_row + row)}, column {name!r}: {too_large_text(what, numbers[row])}")
    return numbers.astype(np.float32)


def too_large_text(what: str, number: float) -> str:
    """Why ``number`` is refused (see :data:`LARGEST`)."""
    return (f"{what} {number:g} is too large: numbers are stored as float32 and the models square them, which "
            f"overflows beyond a magnitude of {LARGEST:.2g}")


def _as_float(column: pa.ChunkedArray | pa.Array, through: pa.DataType | None = None) -> np.ndarray | None:
    try:
        column = column if through is None else pc.cast(column, through)
        return pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _first_unparsed(column: pa.ChunkedArray | pa.Array) -> int:
    """The first row that Arrow cannot read as a number, found by halving (no loop per row).

    >>> _first_unparsed(pa.array(["1", "2", "x", "y"]))
    2
    """
    low, high = 0, len(column)  # the first bad row is in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _as_float(column.slice(low, middle - low)) is not None else (low, middle)
    return low


def log_buckets(numbers: np.ndarray) -> np.ndarray:
    """The Criteo winners' bucket of each number: floor(ln(x)^2) for x > 2, int(x) otherwise; NaN (missing) stays.

    >>> log_buckets(np.array([0.0, 2.0, 3.0, 10.0, 1000.0, -1.0, np.nan])).tolist()
    [0.0, 2.0, 1.0, 5.0, 47.0, -1.0, nan]
    """
    large = numbers > 2
    with np.errstate(invalid="ignore"):
        return np.where(large, np.floor(np.log(np.where(large, numbers, 1.0)) ** 2), np.trunc(numbers))

