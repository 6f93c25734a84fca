"""Interaction-aware Factorization Machine (Hong et al., AAAI 2019), the paper's Eq. 9: FM's prediction with
every pair weighted by the feature aspect T and the field aspect F of :mod:`lit_ifm.models.interaction_aware`."""

from __future__ import annotations

from torch import Tensor

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.schema import FieldSchema
from lit_ifm.models.interaction_aware import InteractionAwareModel


class IFM(InteractionAwareModel):
    """``y = w0 + sum_i w_i x_i + sum_{(i,j) in X} T_ij (U_fi * U_fj)^T D (V_i * V_j) x_i x_j`` (Eq. 9),
    i.e. G_IFM = ``sum <IX_ij, FX_ij>`` (Eq. 13).

    Regularise the field aspect with ``l2_regularization={"field_aspect": lambda_F}``. Parameters: FM's
    plus ``n K_F + K_F K`` (field aspect) plus ``K_a K + 2 K_a`` (attention), plus ``2 K`` for the pooled
    batch norm, which folds away at inference.

    Args:
        schema: the data's fields and sizes (see :class:`FieldAwareModel`).
        pooled_batch_norm: batch-normalise the pooled interaction vector (see
            :class:`~lit_ifm.models.interaction_aware.PooledInteraction`);
            ``False`` trains the paper's parametrisation as it is written. Default: on from scratch, off when
            ``init_from`` starts from an FM
            (:func:`~lit_ifm.models.interaction_aware.pooled_batch_norm_default`).
        **kwargs: :class:`InteractionAwareModel`'s arguments (attention_dim, field_factors, temperature,
            variant, same_field_pairs, attention_sum) and :class:`FieldAwareModel`'s.

    >>> from lit_ifm.data.synthetic import synthetic_schema
    >>> model = IFM(synthetic_schema(), embedding_dim=8, field_factors=4, attention_dim=3)
    >>> model.num_parameters() == (8 * 210 + 210 + 1) + (10 * 4 + 4 * 8) + (3 * 8 + 2 * 3) + 2 * 8
    True
    """

    def __init__(self, schema: FieldSchema, *, pooled_batch_norm: bool | None = None, **kwargs):
        super().__init__(schema, **kwargs)
        self.pooling = self.pooled_interaction(pooled_batch_norm)

    def interaction(self, batch: FieldBatch) -> Tensor:
        return self.pooling(self.batch_aspects(batch).fused())
