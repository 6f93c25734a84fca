"""Interaction-aware Neural Network (Hong et al., AAAI 2019), the paper's Eq. 14-15."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.schema import FieldSchema
from lit_ifm.layers import MLP
from lit_ifm.models.interaction_aware import InteractionAwareModel


class INN(InteractionAwareModel):
    """``h0 = concat_{(i,j)} IX_ij * FX_ij``, ``h_l = ReLU(Q_l h_{l-1} + z_l)``, ``G_INN = h_L`` with an
    identity last layer (Eq. 14-15); ``y = w0 + sum_i w_i x_i + G_INN``.

    h0 has one K-block per slot pair (P K inputs); a pair with an empty slot has ``T_ij = 0`` and so a
    zero block.

    With ``ifm_shortcut`` (lit_ifm's default, beyond the paper), IFM's interaction ``G_IFM`` (Eq. 13, the sum
    of h0, through :class:`~lit_ifm.models.interaction_aware.PooledInteraction`) is added to ``h_L``: INN then starts out
    as IFM and its MLP learns what IFM's sum misses. The paper's INN alone fell behind IFM, and FM
    pre-training made it worse, as its MLP over P K inputs overfits within an epoch or two.

    Args:
        schema: the data's fields and sizes (see :class:`FieldAwareModel`).
        hidden_sizes: the ReLU hidden layers; a 1-unit identity output layer follows. The authors' code
            uses one hidden layer of 5 units.
        hidden_dropout: dropout after each hidden layer.
        ifm_shortcut: add ``G_IFM`` to the MLP's output, whose last layer then starts at zero, so that INN
            starts out computing IFM's function; ``False`` is the paper's ``G_INN = h_L`` with the usual
            initialisation.
        pooled_batch_norm: batch-normalise the shortcut's pooled vector, as :class:`~lit_ifm.models.ifm.IFM`
            does (by default from scratch only, :func:`~lit_ifm.models.interaction_aware.pooled_batch_norm_default`).
        **kwargs: :class:`~lit_ifm.models.interaction_aware.InteractionAwareModel`'s arguments (attention_dim,
            field_factors, temperature, variant, same_field_pairs, attention_sum) and
            :class:`FieldAwareModel`'s.

    >>> from lit_ifm.data.synthetic import synthetic_schema
    >>> model = INN(synthetic_schema(), embedding_dim=8, hidden_sizes=(5,))
    >>> model.num_pairs, model.mlp[0].in_features
    (45, 360)
    """

    def __init__(self, schema: FieldSchema, *, hidden_sizes: tuple[int, ...] = (64,), hidden_dropout: float = 0.0,
                 ifm_shortcut: bool = True, pooled_batch_norm: bool | None = None, **kwargs):
        super().__init__(schema, **kwargs)
        self.mlp = MLP(self.num_pairs * self.embedding_dim, [*hidden_sizes, 1], dropout=hidden_dropout)
        # Not self.pooling: F also feeds the MLP, so the shortcut's scale does not fold into it.
        self.shortcut = self.pooled_interaction(pooled_batch_norm) if ifm_shortcut else None
        if self.shortcut is not None:  # INN starts as IFM, and its MLP adds only what training finds
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def interaction(self, batch: FieldBatch) -> Tensor:
        h0 = self.batch_aspects(batch).fused()  # (B, P', K): all P pairs, or the P' a sampler selected
        first = self.mlp[0]
        weight = first.weight.view(first.out_features, self.num_pairs, self.embedding_dim)  # (H, P, K)
        if self.active_pairs is not None:
            # The MLP input keeps its P K layout with zero blocks for unselected pairs; multiplying only
            # the selected blocks gives the same first layer at P'/P of the cost.
            weight = weight[:, self.active_pairs]  # (H, P', K)
        hidden = torch.einsum("bpk,hpk->bh", h0, weight) + first.bias  # Q_1 h0 + z_1, (B, H)
        for layer in list(self.mlp)[1:]:
            hidden = layer(hidden)
        if self.shortcut is not None:
            return hidden.squeeze(-1) + self.shortcut(h0)
        return hidden.squeeze(-1)
