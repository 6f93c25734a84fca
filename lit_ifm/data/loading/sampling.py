"""The order in which rows are batched: ``DistributedSampler``'s, without its Python list of every row.

torch's ``DistributedSampler`` and Lightning's ``UnrepeatedDistributedSampler`` build a list of every row index
(about 36 bytes a row: 1.2 GB for Criteo_x1's 33 M training rows) each epoch. These give the same indices in the
same order from a tensor (8 bytes a row while shuffling, nothing otherwise), a block at a time.

:class:`ShuffledBatches` can also shuffle runs of consecutive rows rather than rows (a block shuffle), which a large
memory-mapped store reads in one read a run rather than one a row.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import DistributedSampler

from lit_ifm.compat import UnrepeatedDistributedSampler

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
        return _blocks(self.rank_indices())

    def rank_indices(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """This rank's rows of this epoch, in order, as one int64 tensor (drawn with ``generator``, else a new
        one seeded for this epoch)."""
        if generator is None:
            generator = self.epoch_generator()
        indices = self.epoch_order(generator)
        if not self.drop_last and self.total_size > len(indices):  # repeat the first rows: as many for every rank
            indices = indices.repeat(-(-self.total_size // len(indices)))[: self.total_size]
        return self.rank_share(indices[: self.total_size])

    def rank_share(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's ``num_samples`` of the epoch's ``total_size`` indices: every ``num_replicas``-th one."""
        return indices[self.rank:: self.num_replicas]

    def epoch_generator(self) -> torch.Generator:
        """The generator of this epoch's order, seeded by (seed, epoch) alone."""
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        return generator

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        """Every row once, in this epoch's order, before it is dealt to the ranks."""
        return torch.randperm(len(self.dataset), generator=generator)


class ShuffledBatches(ShuffledRows):
    """:class:`ShuffledRows`' rows, ``batch_size`` at a time as one index tensor (a ``DataLoader`` with
    ``batch_size=None`` hands each to the dataset whole): no Python int per row and no list per batch, which
    cost a quarter of a millisecond a step at batch 1024.

    With ``block_rows`` k > 1 it shuffles blocks of k consecutive rows (the last one shorter) instead of rows, gives
    each rank a run of that order (whole blocks but at its two ends), and then shuffles the rows within each batch:
    a batch holds the rows of about ``batch_size / k`` blocks, each row still once an epoch.

    >>> rows = list(range(10))
    >>> [batch.tolist() for batch in ShuffledBatches(rows, 2, 1, batch_size=2, seed=3)]
    [[0, 7], [5, 9], [4]]
    >>> list(ShuffledRows(rows, 2, 1, seed=3))
    [0, 7, 5, 9, 4]
    >>> [sorted(batch.tolist()) for batch in ShuffledBatches(rows, 1, 0, batch_size=4, seed=3, block_rows=2)]
    [[0, 1, 2, 3], [6, 7, 8, 9], [4, 5]]
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int, batch_size: int, seed: int = 0,
                 drop_last: bool = False, block_rows: int = 1):
        super().__init__(dataset, num_replicas, rank, seed=seed, drop_last=drop_last)
        self.batch_size, self.block_rows = batch_size, block_rows

    def epoch_order(self, generator: torch.Generator) -> torch.Tensor:
        if self.block_rows == 1:
            return super().epoch_order(generator)
        rows = len(self.dataset)
        blocks = torch.randperm(-(-rows // self.block_rows), generator=generator)
        order = (blocks[:, None] * self.block_rows + torch.arange(self.block_rows)).flatten()
        return order[order < rows]

    def rank_share(self, indices: torch.Tensor) -> torch.Tensor:
        if self.block_rows == 1:
            return super().rank_share(indices)
        # A run of the order, not every num_replicas-th row: dealt row by row, each block would be split among the
        # ranks, and a rank would read it in pieces of block_rows / num_replicas rows.
        return indices[self.rank * self.num_samples: (self.rank + 1) * self.num_samples]

    def __iter__(self) -> Iterator[torch.Tensor]:  # type: ignore[override]
        # A generator: the order is drawn at the first batch, after Lightning has set the epoch (it makes the
        # iterator before that when it resumes a run).
        generator = self.epoch_generator()
        for batch in self.rank_indices(generator).split(self.batch_size):
            yield batch if self.block_rows == 1 else batch[torch.randperm(len(batch), generator=generator)]

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)


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
