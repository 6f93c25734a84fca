"""How values become ids: the protocol every encoder follows, which one build drives (:mod:`lit_ifm.data.build`).

An encoder sees the training split's chunks (:meth:`Encoder.count`), then builds its vocabularies
(:meth:`Encoder.finish`), then turns the chunks of every split into ids, values and labels (:meth:`Encoder.encode`);
:meth:`Encoder.fields` describes the result for the schema. Chunks are Arrow tables; the work is vectorised
Arrow/numpy, never a Python loop per row.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np
import pyarrow as pa

from lit_ifm.data.encoding.report import EncodingReport
from lit_ifm.data.rows.splits import SplitOrigin
from lit_ifm.data.schema import Field

_ENCODING_VERSION = 3  # bump when parsing or encoding changes, so cached results are not reused


class Encoder(Protocol):
    """Turns a source's rows into feature ids, values and labels, with vocabularies of its training split."""

    report: EncodingReport

    @property
    def counted_columns(self) -> list[str] | None:
        """The columns :meth:`count` reads (``None``: all of them; empty: no count pass is needed)."""

    @property
    def encoded_columns(self) -> list[str] | None:
        """The columns :meth:`encode` reads (``None``: all of them)."""

    def check_columns(self, available: list[str], path: Path) -> None:
        """Refuses a file (at ``path``, with the columns ``available``) that lacks a column this encoder reads."""

    def count(self, chunk: pa.Table, origin: SplitOrigin, first_row: int) -> None:
        """Counts a chunk of training rows whose first row is the split's ``first_row``."""

    def finish(self) -> None:
        """Builds the vocabularies from the counts."""

    def encode(self, chunk: pa.Table, origin: SplitOrigin, first_row: int,
               split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids ``(n, S)``, values ``(n, S)`` and labels ``(n,)`` of a chunk of ``split``."""

    def fields(self) -> list[Field]:
        """The schema's fields, with sizes, slots and fingerprints."""

    def state_dict(self) -> dict:
        """What :meth:`encode` needs once :meth:`finish` ran, in types a ``weights_only`` checkpoint loads; the
        encoder's class rebuilds it with ``from_state_dict``."""

    @property
    def num_features(self) -> int:
        """Feature ids in all, out-of-vocabulary ids included (the padding id is this number)."""

    @property
    def num_slots(self) -> int:
        """S, the slots of an encoded row."""

    @property
    def value_slots(self) -> tuple[int, ...]:
        """The slots whose values :meth:`encode` may give as numbers (every other slot's value is 1 or 0)."""

    def stored_value_slots(self) -> tuple[int, ...]:
        """Once every split is encoded: the value slots whose numbers the store keeps."""


def fingerprint(*parts) -> str:
    """The cache key of a parsing step, from its input's fingerprint and everything the step depends on.

    Given to ``Dataset.map`` so ``datasets`` need not hash the step's code with dill (which fails on
    some pyarrow/Python pairs and costs time).

    >>> fingerprint("abc", [1, 2]) == fingerprint("abc", [1, 2]) != fingerprint("abc", [2, 1])
    True
    """
    return hashlib.sha256(repr((_ENCODING_VERSION, parts)).encode()).hexdigest()[:32]


def vocabulary_fingerprint(values: np.ndarray | list[str], ids: np.ndarray, oov_id: int) -> str:
    """A digest of a field's value -> id mapping and its out-of-vocabulary id. Checkpoints keep it in their
    schema, so a model is never fed ids that now stand for other values.

    >>> ids = np.array([0, 1])
    >>> same = vocabulary_fingerprint(["a", "b"], ids, 2)
    >>> same == vocabulary_fingerprint(["a", "b"], ids, 2), same == vocabulary_fingerprint(["b", "a"], ids, 2)
    (True, False)
    """
    digest = hashlib.sha256()
    if isinstance(values, np.ndarray):
        digest.update(values.astype(np.int64).tobytes())
    else:
        digest.update("\0".join(values).encode())
    digest.update(np.asarray(ids, dtype=np.int64).tobytes())
    digest.update(str(oov_id).encode())
    return digest.hexdigest()[:16]


