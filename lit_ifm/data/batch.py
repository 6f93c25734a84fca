"""The one batch type every model consumes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class FieldBatch:
    """A mini-batch of B rows laid out in S slots (one per categorical or numeric field, several per
    multi-valued field; ``FieldSchema.slot_fields`` maps slots to fields)::

        feature_ids     (B, S) long    global feature id per slot, FieldSchema.padding_id where empty
        feature_values  (B, S) float   x_i: 1 for categorical, the number for numeric, 0 where empty
        labels          (B,)   float   the target, already mapped to the task
        row_ids         (B,)   long    the row's position in its split, for predictions

    A slot whose value is 0 is absent, as in the paper's Eq. 1 (only non-zero features interact).
    ``unit_values`` says that every value is 1 (every slot holds a feature, none a number), so that models
    need not scale embeddings by the values: the same result, a third faster for FM on a CPU.

    >>> batch = FieldBatch(torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3), torch.zeros(2), torch.arange(2))
    >>> len(batch), batch.mask.shape
    (2, torch.Size([2, 3]))
    """

    feature_ids: Tensor
    feature_values: Tensor
    labels: Tensor
    row_ids: Tensor
    unit_values: bool = False

    def __len__(self) -> int:
        return self.labels.shape[0]

    @property
    def mask(self) -> Tensor:
        """``(B, S)`` bool, True where the slot holds a feature."""
        return self.feature_values != 0

    def to(self, device: torch.device | str, non_blocking: bool = False) -> FieldBatch:
        """The batch on ``device`` (what Lightning calls to move it)."""
        return FieldBatch(*(t.to(device, non_blocking=non_blocking) for t in self._tensors()), self.unit_values)

    def pin_memory(self) -> FieldBatch:
        """The batch in pinned host memory, for faster copies to a GPU (``DataLoader(pin_memory=True)``)."""
        return FieldBatch(*(t.pin_memory() for t in self._tensors()), self.unit_values)

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.feature_ids, self.feature_values, self.labels, self.row_ids
