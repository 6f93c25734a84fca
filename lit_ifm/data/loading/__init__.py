"""How batches are gathered: a split's rows as a dataset of batches (:mod:`.dataset`), in the order the samplers give
(:mod:`.sampling`)."""

from lit_ifm.data.loading.dataset import FieldBatchDataset
from lit_ifm.data.loading.sampling import OrderedRows, ShuffledBatches, ShuffledRows

__all__ = ["FieldBatchDataset", "OrderedRows", "ShuffledBatches", "ShuffledRows"]
