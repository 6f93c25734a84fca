"""Linear model: the first-order part alone, the floor every interaction model must beat."""

from __future__ import annotations

from torch import Tensor

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.schema import FieldSchema
from lit_ifm.models.base import FieldAwareModel


class LinearModel(FieldAwareModel):
    """``y = w0 + sum_i w_i x_i``: no interactions (linear or logistic regression on the features).

    Its feature embeddings exist (the base owns them) but never enter the prediction, so they are frozen:
    not counted, not optimised, and no DDP reducer waits for their gradients.
    """

    def __init__(self, schema: FieldSchema, **kwargs):
        super().__init__(schema, **kwargs)
        self.feature_embedding.weight.requires_grad_(False)

    def interaction(self, batch: FieldBatch) -> Tensor:
        return batch.feature_values.new_zeros(len(batch))
