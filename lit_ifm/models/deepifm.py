"""DeepIFM (Hong et al., AAAI 2019): DeepFM with its wide part replaced by G_IFM (Eq. 13)."""

from __future__ import annotations

from torch import Tensor

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.schema import FieldSchema
from lit_ifm.layers import MLP
from lit_ifm.models.interaction_aware import InteractionAwareModel


class DeepIFM(InteractionAwareModel):
    """``y = w0 + sum_i w_i x_i + G_IFM(FX, IX) + MLP(concat_i V_i x_i)``: IFM's pair part (Eq. 13) beside
    a deep part on the concatenated embeddings, both sharing V.

    Args:
        schema: the data's fields and sizes (see :class:`FieldAwareModel`).
        hidden_sizes: the deep part's ReLU hidden layers; a 1-unit linear output follows.
        hidden_dropout: dropout after each hidden layer.
        batch_norm: batch norm after each hidden layer.
        pooled_batch_norm: batch-normalise G_IFM's pooled vector, as :class:`~lit_ifm.models.ifm.IFM` does (by
            default from scratch only, :func:`~lit_ifm.models.interaction_aware.pooled_batch_norm_default`).
        **kwargs: :class:`~lit_ifm.models.interaction_aware.InteractionAwareModel`'s arguments and :class:`FieldAwareModel`'s.

    >>> from lit_ifm.data.synthetic import synthetic_schema
    >>> DeepIFM(synthetic_schema(), embedding_dim=8, hidden_sizes=(16,)).deep[0].in_features
    80
    """

    def __init__(self, schema: FieldSchema, *, hidden_sizes: tuple[int, ...] = (64, 64), hidden_dropout: float = 0.0,
                 batch_norm: bool = False, pooled_batch_norm: bool | None = None, **kwargs):
        super().__init__(schema, **kwargs)
        self.pooling = self.pooled_interaction(pooled_batch_norm)
        self.deep = MLP(self.schema.num_slots * self.embedding_dim, [*hidden_sizes, 1], hidden_dropout, batch_norm)

    def interaction(self, batch: FieldBatch) -> Tensor:
        embeddings = self.embed(batch)  # (B, S, K)
        wide = self.pooling(self.aspects(embeddings, batch.mask, self.active_pairs,
                                         self.active_pair_log_weights).fused())  # (B,)
        return wide + self.deep(embeddings.flatten(1)).squeeze(-1)  # (B, S K) -> (B,)
