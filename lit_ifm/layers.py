"""Pieces that several models share: pair enumeration and the MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn


def slot_pairs(slot_fields: Sequence[int], same_field: bool = True) -> tuple[Tensor, Tensor]:
    """Index tensors ``(left, right)`` of every slot pair ``i < j`` (the paper's Eq. 1 over slots).

    Args:
        slot_fields: the field of each slot (``FieldSchema.slot_fields``).
        same_field: keep pairs whose two slots belong to the same field (a multi-valued field's values).

    >>> slot_pairs([0, 1, 1])
    (tensor([0, 0, 1]), tensor([1, 2, 2]))
    >>> slot_pairs([0, 1, 1], same_field=False)
    (tensor([0, 0]), tensor([1, 2]))
    """
    left, right = torch.triu_indices(len(slot_fields), len(slot_fields), offset=1)
    if not same_field:
        fields = torch.as_tensor(slot_fields)
        keep = fields[left] != fields[right]
        left, right = left[keep], right[keep]
    return left, right


class MLP(nn.Sequential):
    """Linear layers with ReLU (and optional batch norm and dropout) between them; the last is linear.

    >>> MLP(8, [4, 1])(torch.ones(2, 8)).shape
    torch.Size([2, 1])
    """

    def __init__(self, input_dim: int, layer_sizes: Sequence[int], dropout: float = 0.0, batch_norm: bool = False):
        layers: list[nn.Module] = []
        for index, size in enumerate(layer_sizes):
            layers.append(nn.Linear(input_dim, size))
            if index < len(layer_sizes) - 1:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(size))
                layers.append(nn.ReLU())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
            input_dim = size
        super().__init__(*layers)
