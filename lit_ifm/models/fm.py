"""Factorization Machine (Rendle 2010), the paper's Eq. 2."""

from __future__ import annotations

from torch import Tensor

from lit_ifm.data.batch import FieldBatch
from lit_ifm.layers import bi_interaction
from lit_ifm.models.base import FieldAwareModel


class FM(FieldAwareModel):
    """``y = w0 + sum_i w_i x_i + sum_{(i,j) in X} <V_i, V_j> x_i x_j`` (Eq. 2).

    The pair sum is computed in O(S K) by the sum-square identity
    ``sum_{i<j} e_i * e_j = ((sum_i e_i)^2 - sum_i e_i^2) / 2`` with ``e_i = V_i x_i``; empty slots have
    ``x_i = 0`` and drop out. Dropout (``interaction_dropout``) acts on the pooled K-vector, as the
    paper's FM baseline does. All arguments are :class:`FieldAwareModel`'s.

    >>> from lit_ifm.data.synthetic import synthetic_schema
    >>> FM(synthetic_schema(), embedding_dim=8).num_parameters() == 8 * 210 + 210 + 1
    True
    """

    def interaction(self, batch: FieldBatch) -> Tensor:
        pooled = bi_interaction(self.embed(batch), self.slot_fields)  # (B, K)
        return self.interaction_dropout(pooled).sum(dim=1)
