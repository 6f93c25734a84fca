"""Field-aware Factorization Machine (Juan et al., RecSys 2016)."""

from __future__ import annotations

from torch import Tensor

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.schema import FieldSchema
from lit_ifm.layers import slot_pairs
from lit_ifm.models.base import FieldAwareModel


class FFM(FieldAwareModel):
    """``y = w0 + sum_i w_i x_i + sum_{(i,j) in X} <V_{i,f_j}, V_{j,f_i}> x_i x_j``: each feature has one
    K-vector per field, and a pair uses the vector of each side meant for the other side's field.

    The feature table holds ``n K`` columns per feature (``V_{i,1}, ..., V_{i,n}``), so the parameter
    count is the paper's ``m n K + m + 1``, and an FM checkpoint cannot initialise it (``init_from``
    says so). ``interaction_dropout`` acts on the pair products.

    Args:
        schema: the data's fields and sizes (see :class:`FieldAwareModel`).
        same_field_pairs: keep the pairs within a multi-valued field (Eq. 1).
        **kwargs: :class:`FieldAwareModel`'s arguments.

    >>> from lit_ifm.data.synthetic import synthetic_schema
    >>> FFM(synthetic_schema(), embedding_dim=8).num_parameters() == 210 * 10 * 8 + 210 + 1
    True
    """

    @classmethod
    def feature_embedding_width(cls, schema: FieldSchema, embedding_dim: int) -> int:
        return schema.num_fields * embedding_dim

    def __init__(self, schema: FieldSchema, *, same_field_pairs: bool = True, **kwargs):
        super().__init__(schema, **kwargs)
        left, right = slot_pairs(self.schema.slot_fields, same_field=same_field_pairs)
        self.register_buffer("pair_left", left, persistent=False)
        self.register_buffer("pair_right", right, persistent=False)

    def interaction(self, batch: FieldBatch) -> Tensor:
        batch_size, num_slots = batch.feature_ids.shape
        vectors = self.embed(batch)  # (B, S, F K)
        vectors = vectors.view(batch_size, num_slots, self.schema.num_fields, self.embedding_dim)  # (B, S, F, K)
        left_field, right_field = self.slot_fields[self.pair_left], self.slot_fields[self.pair_right]  # (P,)
        left = vectors[:, self.pair_left, right_field]  # V_{i, f_j} x_i, (B, P, K)
        right = vectors[:, self.pair_right, left_field]  # V_{j, f_i} x_j, (B, P, K)
        return self.interaction_dropout(left * right).sum(dim=(1, 2))
