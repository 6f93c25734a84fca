"""Attentional Factorization Machine (Xiao et al., IJCAI 2017)."""

from __future__ import annotations

from torch import Tensor, nn

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.schema import FieldSchema
from lit_ifm.layers import PairAttention, pair_products, slot_pairs
from lit_ifm.models.base import FieldAwareModel


class AFM(FieldAwareModel):
    """``y = w0 + sum_i w_i x_i + p^T sum_{(i,j) in X} a_ij (V_i * V_j) x_i x_j`` with
    ``a_ij = softmax over the instance's real pairs of h^T ReLU(W (V_i * V_j) x_i x_j + b)``.

    ``interaction_dropout`` acts on the attention-pooled K-vector (AFM's pair-wise interaction layer).
    ``p`` starts at ones, so an untrained AFM is FM with averaged pairs.

    Args:
        schema: the data's fields and sizes (see :class:`FieldAwareModel`).
        attention_dim: the attention network's hidden size (AFM's attention factor).
        same_field_pairs: keep the pairs within a multi-valued field (Eq. 1).
        **kwargs: :class:`FieldAwareModel`'s arguments.

    >>> from lit_ifm.data.synthetic import synthetic_schema
    >>> AFM(synthetic_schema(), embedding_dim=8, attention_dim=3).num_parameters() - (8 * 210 + 210 + 1)
    38
    """

    def __init__(self, schema: FieldSchema, *, attention_dim: int = 16, same_field_pairs: bool = True, **kwargs):
        super().__init__(schema, **kwargs)
        left, right = slot_pairs(self.schema.slot_fields, same_field=same_field_pairs)
        self.register_buffer("pair_left", left, persistent=False)
        self.register_buffer("pair_right", right, persistent=False)
        self.attention = PairAttention(self.embedding_dim, attention_dim)
        self.projection = nn.Linear(self.embedding_dim, 1, bias=False)
        nn.init.ones_(self.projection.weight)

    def interaction(self, batch: FieldBatch) -> Tensor:
        products = pair_products(self.embed(batch), self.pair_left, self.pair_right)  # (B, P, K)
        pair_mask = batch.mask[:, self.pair_left] & batch.mask[:, self.pair_right]  # (B, P)
        attention = self.attention(products, pair_mask).to(products.dtype)  # (B, P)
        pooled = (attention.unsqueeze(-1) * products).sum(dim=1)  # (B, K)
        return self.projection(self.interaction_dropout(pooled)).squeeze(-1)
