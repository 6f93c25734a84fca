"""From the labels in a file to those a task trains on."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from lit_ifm.data.rows.splits import SplitOrigin
from lit_ifm.errors import DataError


class LabelChunks(Protocol):
    def chunks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first row, labels)`` chunk by chunk."""


@dataclass(frozen=True)
class LabelRule:
    """Maps labels as read to those the task trains on: 0/1 for ``binary`` (labels at or above
    ``positive_threshold`` positive; without one, 0/1 or -1/+1 as they are), numbers for ``regression`` (0/1 read as
    -1/+1 with ``signed_labels``, the paper's protocol).

    >>> LabelRule("binary", positive_threshold=4.0).apply(np.array([1.0, 4.0, 5.0])).tolist()
    [0.0, 1.0, 1.0]
    >>> LabelRule("regression", signed_labels=True).apply(np.array([0.0, 1.0])).tolist()
    [-1.0, 1.0]
    """

    task: str
    positive_threshold: float | None = None
    signed_labels: bool = False

    @property
    def maps(self) -> bool:
        """Whether labels change at all (regression without ``signed_labels`` uses them as numbers)."""
        return self.task == "binary" or self.signed_labels

    def apply(self, labels: np.ndarray) -> np.ndarray:
        """The task's labels, float32."""
        if self.task == "binary":
            threshold = self.positive_threshold
            return (labels >= threshold if threshold is not None else labels > 0).astype(np.float32)
        if self.signed_labels:
            return np.where(labels == 0, -1.0, labels).astype(np.float32)
        return labels.astype(np.float32)

    def check(self, labels: Mapping[str, LabelChunks], origins: Mapping[str, SplitOrigin]) -> None:
        """Refuses labels the rule would read wrongly: a binary task without a threshold, and ``signed_labels``,
        take 0/1 or -1/+1 only (and 0 beside -1 may be a third class)."""
        if self.task == "binary" and self.positive_threshold is not None:
            return
        if self.task == "binary":
            what, advice = "task binary", ("set positive_threshold (labels at or above it are positive, e.g. "
                                           "--data.positive_threshold 4 for 1..5 ratings) or use task regression")
        elif self.signed_labels:
            what, advice = "signed_labels", "drop signed_labels to use the labels as numbers"
        else:
            return
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
