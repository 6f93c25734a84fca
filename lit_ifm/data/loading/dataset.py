"""Batches gathered from an encoded split, on the host or on the device the model trains on."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.store.mapped import EncodedSplit


class FieldBatchDataset(Dataset):
    """Batches gathered from an encoded split (memory-mapped): one fancy index per array, never a loop per row.
    With :meth:`to`, the split is copied to a device once and batches are gathered there. An index tensor
    (what :class:`~lit_ifm.data.loading.sampling.ShuffledBatches` yields) gives a batch of those rows, an int one row."""

    def __init__(self, split: EncodedSplit):
        self.split = split
        self.labels: torch.Tensor | None = None  # the device copy, once moved
        self.unit_values = False  # whether every value of the device copy is 1

    def __len__(self) -> int:
        return len(self.split)

    def __getitems__(self, indices: list[int] | torch.Tensor) -> FieldBatch:
        if self.labels is None:
            rows = indices.numpy() if isinstance(indices, torch.Tensor) else np.asarray(indices, dtype=np.int64)
            ids, values, labels = self.split.gather(rows)
            return FieldBatch(torch.from_numpy(ids), torch.from_numpy(values), torch.from_numpy(labels),
                              torch.from_numpy(rows), self.split.unit_values(values))
        index = torch.as_tensor(indices, dtype=torch.long, device=self.labels.device)
        return FieldBatch(self.feature_ids[index], self.feature_values[index], self.labels[index], index,
                          self.unit_values)

    def to(self, device: torch.device | str) -> FieldBatchDataset:
        """Copies the rows to ``device``, so that batches are gathered where the model is."""
        self.feature_ids = torch.from_numpy(self.split.feature_ids.astype(np.int64)).to(device)
        values = self.split.feature_values
        self.unit_values = self.split.unit_values(values)  # then so is every batch's
        self.feature_values = torch.from_numpy(values).to(device)
        self.labels = torch.from_numpy(np.array(self.split.labels)).to(device)
        return self

    def __getitem__(self, index: int | torch.Tensor) -> FieldBatch:
        return self.__getitems__(index if isinstance(index, torch.Tensor) else [index])


