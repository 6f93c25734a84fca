"""The one batch type every model consumes."""

from __future__ import annotations

from collections.abc import Callable
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

    def split(self, rows: int) -> list[FieldBatch]:
        """Consecutive batches of ``rows`` rows (the last may be shorter), views of this one."""
        return [FieldBatch(*parts, self.unit_values) for parts in zip(*(t.split(rows) for t in self._tensors()))]

    def _tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return self.feature_ids, self.feature_values, self.labels, self.row_ids


@dataclass(init=False, eq=False)  # a dataclass: Lightning's precision plugins convert its rows' tensors
class StepGroup:
    """The batches of several consecutive optimizer steps, handed to one ``training_step`` call
    (``FieldAwareDataModule(steps_per_call=k)``, as Keras' ``steps_per_execution``): Lightning's own work per call,
    which can take longer than a small model's whole step, is paid once per k steps. It travels as one batch of
    all the rows (one copy to a device) and is cut into the steps' batches where it is used.

    ``len()`` is its rows, as a :class:`FieldBatch`'s. ``before_each_step`` holds what a callback needs done
    before each step's forward pass rather than once per call (the :class:`~lit_ifm.callbacks.InteractionSampler`
    draws its pairs there).

    >>> group = StepGroup(FieldBatch(torch.zeros(5, 2, dtype=torch.long), torch.ones(5, 2), torch.zeros(5),
    ...                              torch.arange(5)), step_rows=2)
    >>> len(group), [batch.row_ids.tolist() for batch in group.steps()]
    (5, [[0, 1], [2, 3], [4]])
    """

    rows: FieldBatch

    def __init__(self, rows: FieldBatch, step_rows: int):
        self.rows, self.step_rows = rows, step_rows
        self.before_each_step: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self.rows)

    def steps(self) -> list[FieldBatch]:
        """The batch of each optimizer step, in order."""
        return self.rows.split(self.step_rows)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> StepGroup:
        """The group on ``device`` (what Lightning calls to move it)."""
        return StepGroup(self.rows.to(device, non_blocking=non_blocking), self.step_rows)

    def pin_memory(self) -> StepGroup:
        """The group in pinned host memory."""
        return StepGroup(self.rows.pin_memory(), self.step_rows)
