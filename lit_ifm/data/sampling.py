"""The order in which rows are batched: ``DistributedSampler``'s, without its Python list of every row.

torch's ``DistributedSampler`` and Lightning's ``UnrepeatedDistributedSampler`` build a list of every row index
(about 36 bytes a row: 1.2 GB for Criteo_x1's 33 M training rows) each epoch. These give the same indices in the
same order from a tensor (8 bytes a row while shuffling, nothing otherwise), a block at a time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DistributedSampler

_BLOCK = 1 << 16  # indices turned into Python ints at once


def _blocks(indices: torch.Tensor) -> Iterator[int]:
    for start in range(0, len(indices), _BLOCK):
        yield from indices[start: start + _BLOCK].tolist()


class ShuffledRows(DistributedSampler):
    """``DistributedSampler(shuffle=True)``: the same rows in the same order for every (seed, epoch, rank).

    >>> rows = list(range(10))
    >>> list(ShuffledRows(rows, 2, 1, seed=3)) == list(DistributedSampler(rows, 2, 1, shuffle=True, seed=3))
    True
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int, seed: int = 0, drop_last: bool = False):
        super().__init__(dataset, num_replicas, rank, shuffle=True, seed=seed, drop_last=drop_last)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        indices = torch.randperm(len(self.dataset), generator=generator)
        if not self.drop_last and self.total_size > len(indices):  # repeat the first rows: as many for every rank
            indices = indices.repeat(-(-self.total_size // len(indices)))[: self.total_size]
        return _blocks(indices[self.rank: self.total_size: self.num_replicas])


class OrderedRows(UnrepeatedDistributedSampler):
    """``UnrepeatedDistributedSampler(shuffle=False)``: every row once across ranks, in order.

    >>> rows = list(range(10))
    >>> list(OrderedRows(rows, 3, 2)) == list(UnrepeatedDistributedSampler(rows, 3, 2, shuffle=False))
    True
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int):
        super().__init__(dataset, num_replicas, rank, shuffle=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))
