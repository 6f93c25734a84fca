"""The interaction-aware mechanism (IAM) of Hong et al., AAAI 2019, that IFM, INN and DeepIFM build on: the
feature aspect T (Eq. 5), the field aspect F (Eq. 6), their embedding sets (Eq. 11), the pooling G_IFM (Eq. 13)
and the interpretability outputs (the paper's Table 3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.schema import FieldSchema
from lit_ifm.layers import BatchNorm, PairAttention, bi_interaction, pair_products, slot_pairs
from lit_ifm.models.base import FieldAwareModel

Variant = Literal["ifm", "unfactorized", "feature_aspect_only", "field_aspect_only"]
AttentionSum = Literal["pairs", "one"]


@dataclass(frozen=True)
class FieldPairImportance:
    """One row of the paper's Table 3: the norm of the field aspect ``F_{f,g}`` and its share of all norms."""

    first: str
    second: str
    norm: float
    share: float


@dataclass
class InteractionDetails:
    """The feature aspect of a batch: attention ``T`` ``(B, P)`` and, per pair, its slots and field names."""

    attention: Tensor
    slot_pairs: Tensor  # (P, 2)
    field_pairs: list[tuple[str, str]]


@dataclass
class InteractionAspects:
    """The generalized model's two embedding sets (Eq. 11) for the computed pairs::

        feature    (B, P, K)   FX_ij = T_ij (V_i * V_j) x_i x_j, after the pair-layer dropout
        field      (P, K)      IX_ij = F_{f_i, f_j}
        attention  (B, P)      T_ij, 0 on pairs with an empty slot
    """

    feature: Tensor
    field: Tensor
    attention: Tensor

    def fused(self) -> Tensor:
        """``IX_ij * FX_ij`` per pair, ``(B, P, K)``: summed it is G_IFM (Eq. 13), concatenated INN's h0 (Eq. 14)."""
        return self.feature * self.field


class FieldAspect(nn.Module):
    """The field-aware factor importance ``F_{f,g}`` of every field pair, ``(Q, K)``.

    Factorized (Eq. 6): ``F_{f,g} = D^T (U_f * U_g)`` with ``U`` (``field_embedding``, stored ``F x K_F``)
    and ``D`` (``factor_weights``, ``K_F x K``). Unfactorized (the paper's IFM-): one free K-vector per field
    pair that the model enumerates: ``n(n-1)/2`` for single-valued fields, plus ``(f, f)`` for each
    multi-valued field when same-field pairs are kept, so no row goes unused.

    Args:
        num_fields: n.
        embedding_dim: K.
        field_factors: K_F (factorized only).
        field_pairs: ``(Q, 2)`` the field pairs to give a vector.
        factorized: Eq. 6, or a free table.
    """

    def __init__(self, num_fields: int, embedding_dim: int, field_factors: int, field_pairs: Tensor, factorized: bool):
        super().__init__()
        self.register_buffer("field_pairs", field_pairs, persistent=False)
        if factorized:
            # D ~ N(0, 1/K_F) keeps F's entries near unit variance at the start.
            self.field_embedding = nn.Parameter(torch.randn(num_fields, field_factors))
            self.factor_weights = nn.Parameter(torch.randn(field_factors, embedding_dim) / math.sqrt(field_factors))
        else:
            self.prototypes = nn.Parameter(torch.randn(len(field_pairs), embedding_dim))

    def forward(self) -> Tensor:
        if not hasattr(self, "field_embedding"):
            return self.prototypes
        left, right = self.field_embedding[self.field_pairs[:, 0]], self.field_embedding[self.field_pairs[:, 1]]
        return (left * right) @ self.factor_weights  # (Q, K_F) @ (K_F, K) -> (Q, K)


class PooledInteraction(nn.Module):
    """G_IFM (Eq. 13): ``sum_k sum_(i,j) (IX_ij * FX_ij)_k`` from the fused aspects ``(B, P, K)``.

    With ``batch_norm`` (lit_ifm's default, beyond the paper), the pooled K-vector is batch-normalised before
    its sum, as NFM does with its bi-interaction vector: the interaction then learns at the pace of the
    linear term whatever the embeddings' scale, instead of growing from V's small initial values. At
    inference the normalisation is a fixed affine map, so it folds into the field aspect
    (``F * gamma / sigma``, :meth:`factor_scale`) and the bias: the model is still the paper's Eq. 9.
    ``gamma`` starts at ``1 / sqrt(K)``, so that the K normalised factors sum to unit variance.

    >>> pooling = PooledInteraction(4, batch_norm=True).eval()
    >>> pooling(torch.ones(2, 3, 4)).shape, pooling.factor_scale().shape
    (torch.Size([2]), torch.Size([4]))
    """

    def __init__(self, embedding_dim: int, batch_norm: bool):
        super().__init__()
        self.norm = BatchNorm(embedding_dim) if batch_norm else None
        if self.norm is not None:
            nn.init.constant_(self.norm.weight, embedding_dim ** -0.5)

    def forward(self, fused: Tensor) -> Tensor:
        pooled = fused.sum(dim=1)  # (B, P, K) -> (B, K)
        return (pooled if self.norm is None else self.norm(pooled)).sum(dim=1)

    def factor_scale(self) -> Tensor | None:
        """``gamma / sqrt(running variance + eps)`` ``(K,)``, the factor each F_k is multiplied by at inference;
        None without batch norm."""
        if self.norm is None:
            return None
        return self.norm.weight / (self.norm.running_var + self.norm.eps).sqrt()


def pooled_batch_norm_default(pooled_batch_norm: bool | None, init_from: str | None) -> bool:
    """``pooled_batch_norm`` as given, or by default on when training from scratch and off from FM's embeddings
    (``init_from``): the normalisation lifts the interaction from V's small initial values, which pre-trained
    embeddings are already past; from them it only hastens overfitting (benchmarks/RESULTS.md).

    >>> [pooled_batch_norm_default(*setting) for setting in ((None, None), (None, "fm.ckpt"), (True, "fm.ckpt"))]
    [True, False, True]
    """
    return init_from is None if pooled_batch_norm is None else pooled_batch_norm


EMBEDDING_L2 = 1e-4


def l2_regularization_default(l2_regularization: dict[str, float] | None) -> dict[str, float]:
    """``l2_regularization`` as given, or by default ``{"feature_embedding": 1e-4}``: an L2 penalty on V.

    From scratch, IFM soon memorises its training rows through the pair vectors, while its validation quality
    stalls; the penalty holds V's rare rows near zero (the value: benchmarks/RESULTS.md). A dict of one's own
    replaces it, ``{}`` included.

    >>> l2_regularization_default(None), l2_regularization_default({"field_aspect": 8e-5})
    ({'feature_embedding': 0.0001}, {'field_aspect': 8e-05})
    """
    return {"feature_embedding": EMBEDDING_L2} if l2_regularization is None else l2_regularization


class InteractionAwareModel(FieldAwareModel):
    """What IFM, INN and DeepIFM share: the slot pairs, the feature aspect ``T`` (Eq. 5), the field aspect
    ``F`` (Eq. 6), :meth:`aspects` (Eq. 11) and the interpretability outputs. Not a model by itself: a
    subclass defines ``interaction`` from the aspects (a function G, Eq. 12).

    Args:
        schema: the data's fields and sizes (see :class:`FieldAwareModel`).
        attention_dim: K_a, the attention network's hidden size.
        field_factors: K_F, the rank of the field aspect's factorization (Eq. 6).
        temperature: tau of Eq. 5; large values make T uniform over an instance's pairs.
        variant: ``ifm`` (both aspects, factorized F), ``unfactorized`` (IFM-, a free F per field pair),
            ``feature_aspect_only`` (FA-IFM, F = 1) or ``field_aspect_only`` (IA-IFM, T = 1 on real pairs).
        same_field_pairs: keep pairs of two slots of one multi-valued field (Eq. 1 enumerates all
            non-zero pairs); False drops them, the paper's Tencent setting.
        attention_sum: what the feature aspect T of an instance sums to. ``pairs`` (lit_ifm's default, beyond
            the paper): the number of its real pairs |X|, so uniform attention and F = 1 give FM's plain sum
            and the interaction starts at FM's scale, not at 1/|X| of it, which a small learning rate is slow to
            make up. ``one``: the paper's softmax (Eq. 5).
        l2_regularization: :class:`FieldAwareModel`'s, with a default of its own here: ``{"feature_embedding":
            1e-4}`` (:func:`l2_regularization_default`); ``{}`` for none.
        **kwargs: :class:`FieldAwareModel`'s arguments; ``interaction_dropout`` acts on the weighted pair
            vectors FX (the pair-wise interaction layer).
    """

    def __init__(
        self,
        schema: FieldSchema,
        *,
        attention_dim: int = 16,
        field_factors: int = 16,
        temperature: float = 10.0,
        variant: Variant = "ifm",
        same_field_pairs: bool = True,
        attention_sum: AttentionSum = "pairs",
        l2_regularization: dict[str, float] | None = None,
        **kwargs,
    ):
        l2_regularization = l2_regularization_default(l2_regularization)
        super().__init__(schema, l2_regularization=l2_regularization, **kwargs)
        self.keep_resolved_hparams(l2_regularization=l2_regularization)
        self.same_field_pairs = same_field_pairs
        self.attention_sum = attention_sum
        left, right = slot_pairs(self.schema.slot_fields, same_field=same_field_pairs)
        if len(left) == 0:
            raise ValueError(f"{type(self).__name__} needs at least one slot pair; the schema has "
                             f"{self.schema.num_slots} slots (same_field_pairs={same_field_pairs})")
        pair_fields = torch.stack([self.slot_fields[left], self.slot_fields[right]], dim=1)  # (P, 2)
        field_pairs, pair_field_index = torch.unique(pair_fields, dim=0, return_inverse=True)  # (Q, 2), (P,)
        self.register_buffer("pair_left", left, persistent=False)
        self.register_buffer("pair_right", right, persistent=False)
        self.register_buffer("pair_field_index", pair_field_index, persistent=False)
        self.feature_aspect = None if variant == "field_aspect_only" else \
            PairAttention(self.embedding_dim, attention_dim, temperature)
        self.field_aspect = None if variant == "feature_aspect_only" else FieldAspect(
            self.schema.num_fields, self.embedding_dim, field_factors, field_pairs, factorized=variant != "unfactorized")
        self.pooling: PooledInteraction | None = None  # IFM and DeepIFM pool the pairs (G_IFM); INN does not
        # What a training step computes, set by InteractionSampler: indices into the P pairs (None: all)
        # and, per drawn pair, the log of its importance weight 1 / P(drawn) (None: no correction).
        self.active_pairs: Tensor | None = None
        self.active_pair_log_weights: Tensor | None = None

    @property
    def num_pairs(self) -> int:
        """P, the slot pairs the model enumerates."""
        return len(self.pair_left)

    def aspects(self, embeddings: Tensor, mask: Tensor, pairs: Tensor | None = None,
                pair_log_weights: Tensor | None = None) -> InteractionAspects:
        """FX, IX and T (Eq. 5, 6, 11) from ``V_i x_i`` ``(B, S, K)`` and the slot mask ``(B, S)``.

        ``pairs`` (indices into the model's P pairs) computes only those, e.g. a sampled subset; the
        softmax then runs over them alone. Default: all pairs. ``pair_log_weights`` (one per computed pair)
        weigh them in the softmax: ``T_ij ~ exp(a_ij / tau) w_ij`` (importance weights of a sample).
        """
        left, right, field_index = self.pair_left, self.pair_right, self.pair_field_index
        if pairs is not None:
            left, right, field_index = left[pairs], right[pairs], field_index[pairs]
        products = pair_products(embeddings, left, right)  # (B, P, K)
        pair_mask = mask[:, left] & mask[:, right]  # (B, P)
        if self.feature_aspect is None:
            attention = pair_mask.to(products.dtype)
            if pair_log_weights is not None:
                attention = attention * pair_log_weights.exp().to(products.dtype)
        else:
            attention = self.feature_aspect(products, pair_mask, pair_log_weights)  # (B, P), float32 or wider
            if self.attention_sum == "pairs":  # |X| counts the real pairs among all P, drawn or not
                attention = attention * bi_interaction(mask.to(attention.dtype).unsqueeze(-1), self.slot_fields,
                                                       self.same_field_pairs)  # (B, P) * (B, 1)
        feature = self.interaction_dropout(attention.to(products.dtype).unsqueeze(-1) * products)  # (B, P, K)
        field = products.new_ones(len(left), self.embedding_dim) if self.field_aspect is None else \
            self.field_aspect()[field_index]  # (P, K)
        return InteractionAspects(feature, field, attention)

    def pooled_interaction(self, pooled_batch_norm: bool | None) -> PooledInteraction:
        """G_IFM's pooling, its batch norm resolved by :func:`pooled_batch_norm_default` and saved as resolved."""
        pooled_batch_norm = pooled_batch_norm_default(pooled_batch_norm, self.pretrained_from)
        self.keep_resolved_hparams(pooled_batch_norm=pooled_batch_norm)
        return PooledInteraction(self.embedding_dim, pooled_batch_norm)

    def batch_aspects(self, batch: FieldBatch) -> InteractionAspects:
        """The aspects of the active pairs (all, or those an InteractionSampler selected)."""
        return self.aspects(self.embed(batch), batch.mask, self.active_pairs, self.active_pair_log_weights)

    def field_aspect_as_used(self) -> Tensor:
        """``F_{f,g}`` ``(Q, K)`` as inference uses it: the pooled batch norm's per-factor scale folded in."""
        aspect = self.field_aspect()
        scale = None if self.pooling is None else self.pooling.factor_scale()
        return aspect if scale is None else aspect * scale

    def pair_weights(self, exponent: float = 1.0) -> Tensor:
        """``||F_{f_i, f_j}||^exponent`` of every slot pair ``(P,)``: what sampling draws pairs by."""
        if self.field_aspect is None:
            raise ValueError(f"{type(self).__name__} (variant without a field aspect) has no field-aspect norms "
                             "to sample interactions by")
        with torch.no_grad():
            return self.field_aspect_as_used().float().norm(dim=1)[self.pair_field_index].pow(exponent)

    # --- interpretability ---------------------------------------------------------------------------

    def field_pair_importance(self) -> list[FieldPairImportance]:
        """Per field pair, ``||F_{f,g}||`` and its share of the sum (the paper's Table 3), largest first."""
        if self.field_aspect is None:
            raise ValueError("field_pair_importance needs the field aspect; variant='feature_aspect_only' has none")
        with torch.no_grad():
            norms = self.field_aspect_as_used().float().norm(dim=1)  # (Q,)
            shares = norms / norms.sum()
        names = self.schema.field_names
        rows = [FieldPairImportance(names[f], names[g], norm, share) for (f, g), norm, share
                in zip(self.field_aspect.field_pairs.tolist(), norms.tolist(), shares.tolist())]
        return sorted(rows, key=lambda row: row.norm, reverse=True)

    @torch.no_grad()
    def interaction_details(self, batch: FieldBatch) -> InteractionDetails:
        """The attention ``T`` ``(B, P)`` of every instance and what each of the P pairs is."""
        names, fields = self.schema.field_names, self.schema.slot_fields
        field_pairs = [(names[fields[i]], names[fields[j]]) for i, j in zip(self.pair_left.tolist(),
                                                                            self.pair_right.tolist())]
        attention = self.aspects(self.embed(batch), batch.mask).attention  # every pair, sampled or not
        return InteractionDetails(attention, torch.stack([self.pair_left, self.pair_right], dim=1), field_pairs)
