"""Neural Factorization Machine (He & Chua, SIGIR 2017): an MLP on FM's bi-interaction pooling."""

from __future__ import annotations

from torch import Tensor, nn

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.schema import FieldSchema
from lit_ifm.layers import MLP, BatchNorm, bi_interaction
from lit_ifm.models.base import FieldAwareModel


class NFM(FieldAwareModel):
    """``y = w0 + sum_i w_i x_i + MLP(BN(sum_{(i,j) in X} (V_i x_i) * (V_j x_j)))``.

    The bi-interaction pooling is FM's pair sum kept as a K-vector; batch norm and ``interaction_dropout``
    act on it before the MLP, as in NFM.

    Args:
        schema: the data's fields and sizes (see :class:`FieldAwareModel`).
        hidden_sizes: the ReLU hidden layers; a 1-unit linear output (NFM's h) follows.
        hidden_dropout: dropout after each hidden layer.
        batch_norm: batch norm on the pooled vector and after each hidden layer.
        same_field_pairs: keep the pairs within a multi-valued field (Eq. 1).
        **kwargs: :class:`FieldAwareModel`'s arguments.

    >>> from lit_ifm.data.synthetic import synthetic_schema
    >>> NFM(synthetic_schema(), embedding_dim=8, hidden_sizes=(16,)).mlp[0].in_features
    8
    """

    def __init__(self, schema: FieldSchema, *, hidden_sizes: tuple[int, ...] = (64,), hidden_dropout: float = 0.0,
                 batch_norm: bool = True, same_field_pairs: bool = True, **kwargs):
        super().__init__(schema, **kwargs)
        self.same_field_pairs = same_field_pairs
        self.pooled_norm = BatchNorm(self.embedding_dim) if batch_norm else nn.Identity()
        self.mlp = MLP(self.embedding_dim, [*hidden_sizes, 1], hidden_dropout, batch_norm)

    def interaction(self, batch: FieldBatch) -> Tensor:
        pooled = bi_interaction(self.embed(batch), self.slot_fields, self.same_field_pairs)  # (B, K)
        hidden = self.interaction_dropout(self.pooled_norm(pooled))
        return self.mlp(hidden).squeeze(-1)
