"""DeepFM (Guo et al., IJCAI 2017): FM and a deep network sharing the feature embeddings."""

from __future__ import annotations

from torch import Tensor

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.schema import FieldSchema
from lit_ifm.layers import MLP, bi_interaction
from lit_ifm.models.base import FieldAwareModel


class DeepFM(FieldAwareModel):
    """``y = w0 + sum_i w_i x_i + sum_{(i,j) in X} <V_i, V_j> x_i x_j + MLP(concat_i V_i x_i)``.

    The FM part is the paper's Eq. 2 (with ``interaction_dropout`` on its pooled K-vector, as in FM); the deep
    part reads the S slot embeddings side by side (an empty slot is a zero block).

    Args:
        schema: the data's fields and sizes (see :class:`FieldAwareModel`).
        hidden_sizes: the deep part's ReLU hidden layers; a 1-unit linear output follows.
        hidden_dropout: dropout after each hidden layer.
        batch_norm: batch norm after each hidden layer.
        same_field_pairs: keep the FM pairs within a multi-valued field (Eq. 1).
        **kwargs: :class:`FieldAwareModel`'s arguments.

    >>> from lit_ifm.data.synthetic import synthetic_schema
    >>> DeepFM(synthetic_schema(), embedding_dim=8, hidden_sizes=(16,)).deep[0].in_features
    80
    """

    def __init__(self, schema: FieldSchema, *, hidden_sizes: tuple[int, ...] = (64, 64), hidden_dropout: float = 0.0,
                 batch_norm: bool = False, same_field_pairs: bool = True, **kwargs):
        super().__init__(schema, **kwargs)
        self.same_field_pairs = same_field_pairs
        self.deep = MLP(self.schema.num_slots * self.embedding_dim, [*hidden_sizes, 1], hidden_dropout, batch_norm)

    def interaction(self, batch: FieldBatch) -> Tensor:
        embeddings = self.embed(batch)  # (B, S, K)
        pooled = bi_interaction(embeddings, self.slot_fields, self.same_field_pairs)  # (B, K)
        wide = self.interaction_dropout(pooled).sum(dim=1)
        return wide + self.deep(embeddings.flatten(1)).squeeze(-1)  # (B, S K) -> (B,)
