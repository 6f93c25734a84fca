"""Text values to positions: a vocabulary's index (:class:`WordIndex`), value counts by 64-bit hash
(:class:`ValueCounts`) and hashing into a fixed number of buckets (FNV-1a, :func:`fnv1a64`)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from lit_ifm.errors import DataError


def hash_buckets(strings: pa.ChunkedArray | pa.Array, buckets: int) -> np.ndarray:
    """Each string's FNV-1a 64-bit hash (:func:`fnv1a64`) modulo ``buckets``.

    >>> hash_buckets(pa.array(["a", "", None]), 1000).tolist()  # FNV-1a: 0xaf63dc4c8601ec8c, 0xcbf29ce484222325
    [996, 37, 37]
    """
    return (fnv1a64(strings) % np.uint64(buckets)).astype(np.int64)


def fnv1a64(strings: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Each string's FNV-1a 64-bit hash, ``uint64``, computed byte position by byte position over all the strings of
    one length at once (no loop per string). Missing strings hash as empty ones."""
    array = pc.cast(strings, pa.large_string()).fill_null("")
    array = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset: array.offset + len(array) + 1]
    data = np.frombuffer(array.buffers()[2], dtype=np.uint8) if array.buffers()[2] is not None else np.empty(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    hashes = np.full(len(array), 0xCBF29CE484222325, dtype=np.uint64)
    prime = np.uint64(0x100000001B3)
    for length in np.unique(lengths[lengths > 0]).tolist():  # ids of one length are the usual case: one group
        same_length = np.flatnonzero(lengths == length)
        groups = min(len(same_length), -(-len(same_length) * length // (1 << 22)))  # about 4 M bytes at once
        for group in np.array_split(same_length, groups):
            text = data[starts[group, None] + np.arange(length)]  # (strings, length) bytes
            value = hashes[group]
            for position in range(length):
                value = (value ^ text[:, position]) * prime
            hashes[group] = value
    return hashes


class WordIndex:
    """Positions of tokens in a vocabulary, built once. ``pc.index_in`` hashes the whole vocabulary on every call:
    fast alone for up to a few hundred thousand words (39 ms a chunk at 300k words), 0.37 s a chunk for a million.
    A vocabulary of at least :attr:`HASHED_FROM` words is therefore hashed (:func:`fnv1a64`) and sorted once, each
    chunk's hashes are searched in it, and the words checked: 61 ms a chunk at 300k words, 86 ms for a million.
    Should two words share a hash (about one vocabulary in 10^7 at a million words), ``index_in`` stays.

    >>> WordIndex(pa.array(["b", "c"])).positions(pa.array(["c", "a", None, "b"]))
    (array([1, 0, 0, 0]), array([ True, False, False,  True]))
    """

    # Not the crossing of one call alone: in a build, with fields encoded side by side, index_in's hash tables cost
    # more and the allocators keep what they free. 20 M Criteo-shaped rows: 82 s and 0.92 GiB peak RssAnon from 64k
    # words, 99 s and 0.98 GiB from 512k; at 1 M and 5 M rows the same either way.
    HASHED_FROM = 1 << 16

    def __init__(self, words: pa.Array):
        self.words = words
        self.order = self.hashes = None
        if len(words) >= self.HASHED_FROM:
            hashes = fnv1a64(words)
            order = np.argsort(hashes, kind="stable")
            ordered = hashes[order]
            if not np.any(ordered[1:] == ordered[:-1]):
                self.order, self.hashes = order, ordered

    def __len__(self) -> int:
        return len(self.words)

    def positions(self, tokens: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """Each token's position in the words and whether it is there at all (missing tokens are not)."""
        if self.hashes is None:
            position = pc.index_in(tokens, value_set=self.words).to_numpy(zero_copy_only=False)
            position = np.asarray(position, dtype=np.float64)
            found = ~np.isnan(position)
            return np.nan_to_num(position).astype(np.int64), found
        hashes = fnv1a64(tokens)
        at = np.minimum(np.searchsorted(self.hashes, hashes), len(self.hashes) - 1)
        candidate = self.order[at]
        found = self.hashes[at] == hashes
        same = pc.equal(tokens, self.words.take(candidate)).fill_null(False).to_numpy(zero_copy_only=False)
        found &= np.asarray(same, dtype=bool)
        return np.where(found, candidate, 0), found


class ValueCounts:
    """How often each value of a field occurs, summed chunk by chunk: the distinct values as sorted 64-bit hashes
    (:func:`fnv1a64`) with their counts, 16 bytes each, and the text of only the values seen ``min_count`` times,
    taken from the chunk in which they reach it. Holding the text and count of every distinct value as Arrow
    strings, and merging them, grew a Criteo-shaped build's memory by 0.3 GiB from 1 M to 20 M rows.

    Two values of one field that share a hash (about one field in 10^8 at a million values) are refused when they
    meet in one chunk; in different chunks their counts add up and only one's text is kept, so the other's rows read
    as the field's out-of-vocabulary id.
    """

    def __init__(self, name: str, min_count: int):
        self.name, self.min_count = name, min_count
        self.hashes = np.empty(0, dtype=np.uint64)  # sorted, one per distinct value
        self.counts = np.empty(0, dtype=np.int64)
        self.kept_words: list[pa.Array] = []  # the text of the values counted min_count times so far

    def add(self, values: pa.ChunkedArray | pa.Array) -> None:
        """Counts a chunk's values (missing ones are not values), keeping the text of those that reach
        ``min_count`` in it."""
        counted = pc.value_counts(pc.drop_null(values))
        words = counted.field("values")
        hashes = fnv1a64(words)
        order = np.argsort(hashes)
        hashes, counts = hashes[order], counted.field("counts").to_numpy()[order]
        if len(hashes) > 1 and (same := np.flatnonzero(hashes[1:] == hashes[:-1])).size:
            pair = words.take(order[[same[0], same[0] + 1]]).to_pylist()
            raise DataError(f"column {self.name!r}: values {pair[0]!r} and {pair[1]!r} share a 64-bit hash "
                            "(FNV-1a), so their counts cannot be told apart; please report this data set")
        at = np.searchsorted(self.hashes, hashes)
        known = at < len(self.hashes)
        known[known] = self.hashes[at[known]] == hashes[known]
        seen_at = at[known]
        self.counts[seen_at] += counts[known]
        totals = counts.copy()
        totals[known] = self.counts[seen_at]
        new = ~known  # inserted in order: hashes is sorted
        self.hashes = np.insert(self.hashes, at[new], hashes[new])
        self.counts = np.insert(self.counts, at[new], counts[new])
        reached = (totals >= self.min_count) & (totals - counts < self.min_count)
        if reached.any():
            self.kept_words.append(words.take(order[reached]))

    def kept(self) -> tuple[pa.Array, int]:
        """The values seen at least ``min_count`` times, sorted, and how many distinct values were rarer."""
        if not self.kept_words:
            return pa.array([], pa.string()), len(self.hashes)
        kept = pa.concat_arrays(self.kept_words)
        return pc.take(kept, pc.array_sort_indices(kept)), len(self.hashes) - len(kept)



def pack_words(words: pa.Array) -> dict[str, torch.Tensor]:
    """A vocabulary as two tensors, its UTF-8 bytes and their offsets: what a ``weights_only`` checkpoint holds
    compactly (a million ids of 8 characters take 17 MB), and :func:`unpack_words` reads back without a copy.

    >>> unpack_words(pack_words(pa.array(["a", "bé", ""]))).to_pylist()
    ['a', 'bé', '']
    """
    array = pc.cast(words, pa.large_string()).combine_chunks() if isinstance(words, pa.ChunkedArray) else \
        pc.cast(words, pa.large_string())
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset: array.offset + len(array) + 1]
    data = array.buffers()[2]
    text = np.frombuffer(data, dtype=np.uint8)[offsets[0]: offsets[-1]] if data is not None else np.empty(0, np.uint8)
    return {"utf8": torch.from_numpy(text.copy()), "offsets": torch.from_numpy(offsets - offsets[0])}


def unpack_words(packed: dict[str, torch.Tensor]) -> pa.Array:
    """The vocabulary :func:`pack_words` packed, as an Arrow string array."""
    offsets, text = packed["offsets"].numpy(), packed["utf8"].numpy()
    words = pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(text))
    return pc.cast(words, pa.string()) if len(text) < 2**31 else words
