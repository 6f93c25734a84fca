"""Three models on lit_ifm's bases: a new interaction, an IFM with another attention network, a new G."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from lit_ifm import FieldAwareModel, FieldBatch, FieldSchema, IFM, InteractionAwareModel
from lit_ifm.layers import pair_products, slot_pairs


class FwFM(FieldAwareModel):
    """Field-weighted FM (Pan et al., WWW 2018): ``sum_{(i,j)} r_{f_i, f_j} <V_i, V_j> x_i x_j``, one learned weight
    per field pair. The base owns V, w, w0, loss, metrics, optimizer and checkpoints: this class adds ``r`` and
    defines ``interaction``.

    Args:
        schema: the data's fields and sizes (the CLI links it from the data).
        **kwargs: ``FieldAwareModel``'s arguments (embedding_dim, lr, ...); the CLI checks them against its
            signature, so a mistyped one is refused.
    """

    def __init__(self, schema: FieldSchema, **kwargs):
        super().__init__(schema, **kwargs)
        left, right = slot_pairs(self.schema.slot_fields)
        self.register_buffer("pair_left", left, persistent=False)
        self.register_buffer("pair_right", right, persistent=False)
        self.field_pair_weights = nn.Parameter(torch.ones(schema.num_fields, schema.num_fields))  # r

    def interaction(self, batch: FieldBatch) -> Tensor:
        products = pair_products(self.embed(batch), self.pair_left, self.pair_right)  # (B, P, K)
        weights = self.field_pair_weights[self.slot_fields[self.pair_left], self.slot_fields[self.pair_right]]  # (P,)
        return (self.interaction_dropout(products).sum(dim=2) * weights).sum(dim=1)


class LinearPairAttention(nn.Module):
    """An attention network without a hidden layer: ``a_p = h^T e_p``, ``T = softmax(a / temperature)`` over an
    instance's real pairs. Same inputs and output as lit_ifm's ``PairAttention``, so IFM takes it as is."""

    def __init__(self, embedding_dim: int, temperature: float):
        super().__init__()
        self.scores = nn.Linear(embedding_dim, 1, bias=False)
        self.temperature = temperature

    def forward(self, pair_vectors: Tensor, pair_mask: Tensor, log_weights: Tensor | None = None) -> Tensor:
        """Weights ``(B, P)`` from pair vectors ``(B, P, K)`` and the real-pair mask ``(B, P)``; ``log_weights``
        (a sampler's importance weights) are added to the scaled logits."""
        logits = self.scores(pair_vectors).squeeze(-1).float() / self.temperature  # (B, P)
        if log_weights is not None:
            logits = logits + log_weights
        logits = logits.masked_fill(~pair_mask, float("-inf"))
        logits = logits.masked_fill(~pair_mask.any(dim=1, keepdim=True), 0.0)  # a row without pairs: no NaN
        return torch.softmax(logits, dim=1) * pair_mask


class LinearAttentionIFM(IFM):
    """IFM (Eq. 9) whose feature aspect T comes from :class:`LinearPairAttention` instead of the attention MLP:
    one piece replaced, everything else (field aspect, sampling, importance reports) IFM's.

    Args:
        schema: the data's fields and sizes.
        **kwargs: ``IFM``'s arguments (``attention_dim`` has no use here).
    """

    def __init__(self, schema: FieldSchema, **kwargs):
        super().__init__(schema, **kwargs)
        if self.feature_aspect is not None:  # variant field_aspect_only has no attention to replace
            self.feature_aspect = LinearPairAttention(self.embedding_dim, self.feature_aspect.temperature)


class ProjectedIFM(InteractionAwareModel):
    """A new G over IFM's aspects (the paper's Eq. 12): ``G = p^T sum_{(i,j)} IX_ij * FX_ij``, a learned projection
    of the pooled K-vector instead of IFM's plain sum over K.

    Args:
        schema: the data's fields and sizes.
        **kwargs: ``InteractionAwareModel``'s arguments (attention_dim, field_factors, temperature, ...).
    """

    def __init__(self, schema: FieldSchema, **kwargs):
        super().__init__(schema, **kwargs)
        self.projection = nn.Linear(self.embedding_dim, 1, bias=False)  # p
        nn.init.ones_(self.projection.weight)  # starts as IFM's sum

    def interaction(self, batch: FieldBatch) -> Tensor:
        fused = self.batch_aspects(batch).fused()  # (B, P', K): the pairs a sampler drew, or all of them
        return self.projection(fused.sum(dim=1)).squeeze(-1)  # (B, K) -> (B,)
