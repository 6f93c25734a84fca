"""Pieces that several models share: embedding lookups, pair enumeration and the MLP."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def embedding_rows(table: nn.Embedding, ids: Tensor) -> Tensor:
    """``table(ids)``, the same rows and the same gradient, which a dense table on a CPU sums with ``index_add``:
    torch's CPU embedding backward reads every id once per block of 1,000 table rows (its unit of parallel work),
    which made it 3x slower for K = 64 and 20x for K = 1 (Frappe's batch of 1024 x 10 ids, 5,315 rows), a quarter
    of FM's whole training step. Compiled, the compiler writes its own backward."""
    if (table.sparse or table.weight.device.type != "cpu" or torch.compiler.is_compiling()
            or table.max_norm is not None or table.scale_grad_by_freq):  # options only nn.Embedding applies
        return table(ids)
    return _EmbeddingRows.apply(table.weight, ids, table.padding_idx)


class _EmbeddingRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: Tensor, ids: Tensor, padding_idx: int | None) -> Tensor:
        ctx.save_for_backward(ids)
        ctx.rows, ctx.dtype, ctx.padding_idx = weight.shape[0], weight.dtype, padding_idx
        return F.embedding(ids, weight)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (ids,) = ctx.saved_tensors
        width = grad.shape[-1]
        grad_weight = grad.new_zeros((ctx.rows, width), dtype=ctx.dtype)
        grad_weight.index_add_(0, ids.reshape(-1), grad.reshape(-1, width).to(ctx.dtype))
        if ctx.padding_idx is not None:
            grad_weight[ctx.padding_idx] = 0  # as nn.Embedding: the padding row never learns
        return grad_weight, None, None


def slot_pairs(slot_fields: Sequence[int], same_field: bool = True) -> tuple[Tensor, Tensor]:
    """Index tensors ``(left, right)`` of every slot pair ``i < j`` (the paper's Eq. 1 over slots).

    Args:
        slot_fields: the field of each slot (``FieldSchema.slot_fields``).
        same_field: keep pairs whose two slots belong to the same field (a multi-valued field's values).

    >>> slot_pairs([0, 1, 1])
    (tensor([0, 0, 1]), tensor([1, 2, 2]))
    >>> slot_pairs([0, 1, 1], same_field=False)
    (tensor([0, 0]), tensor([1, 2]))
    """
    left, right = torch.triu_indices(len(slot_fields), len(slot_fields), offset=1)
    if not same_field:
        fields = torch.as_tensor(slot_fields)
        keep = fields[left] != fields[right]
        left, right = left[keep], right[keep]
    return left, right


class BatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` that also takes a training batch of one row (a split's last batch can be one): it is
    normalised with the running statistics, which it leaves as they are, instead of raising.

    >>> BatchNorm(3).train()(torch.ones(1, 3)).shape
    torch.Size([1, 3])
    """

    def forward(self, input: Tensor) -> Tensor:
        if self.training and input.shape[0] == 1:
            return nn.functional.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                                            training=False, eps=self.eps)
        return super().forward(input)


class MLP(nn.Sequential):
    """Linear layers with ReLU (and optional batch norm and dropout) between them; the last is linear.

    >>> MLP(8, [4, 1])(torch.ones(2, 8)).shape
    torch.Size([2, 1])
    """

    def __init__(self, input_dim: int, layer_sizes: Sequence[int], dropout: float = 0.0, batch_norm: bool = False):
        layers: list[nn.Module] = []
        for index, size in enumerate(layer_sizes):
            layers.append(nn.Linear(input_dim, size))
            if index < len(layer_sizes) - 1:
                if batch_norm:
                    layers.append(BatchNorm(size))
                layers.append(nn.ReLU())
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
            input_dim = size
        super().__init__(*layers)


def pair_products(embeddings: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """``(V_i x_i) * (V_j x_j)`` for every slot pair, ``(B, P, K)``, from ``V_i x_i`` of shape ``(B, S, K)``.

    >>> pair_products(torch.ones(2, 3, 4), *slot_pairs([0, 1, 2])).shape
    torch.Size([2, 3, 4])
    """
    return embeddings[:, left] * embeddings[:, right]


def bi_interaction(embeddings: Tensor, slot_fields: Tensor, same_field: bool = True) -> Tensor:
    """``sum_{i<j} e_i * e_j`` over slot pairs, ``(B, K)``, in O(S K) by the sum-square identity.

    Without ``same_field`` the pairs within a field drop out: ``sum_f (sum_{i in f} e_i)^2`` (each field's
    squares and its within-field pairs) is subtracted instead of ``sum_i e_i^2``.

    >>> e = torch.ones(1, 3, 2)
    >>> bi_interaction(e, torch.tensor([0, 1, 1])), bi_interaction(e, torch.tensor([0, 1, 1]), same_field=False)
    (tensor([[3., 3.]]), tensor([[2., 2.]]))
    """
    if same_field:
        within = embeddings.pow(2).sum(dim=1)  # (B, K)
    else:
        num_fields = len(slot_fields)  # an upper bound (fields <= slots) that needs no device sync
        field_sums = embeddings.new_zeros(embeddings.shape[0], num_fields, embeddings.shape[2])
        field_sums = field_sums.index_add(1, slot_fields, embeddings)  # (B, F, K)
        within = field_sums.pow(2).sum(dim=1)  # (B, K)
    return 0.5 * (embeddings.sum(dim=1).pow(2) - within)


class PairAttention(nn.Module):
    """Attention over an instance's pair vectors (AFM's Eq. 5, IFM's feature aspect, Eq. 5):
    ``a_p = h^T ReLU(W e_p + b)``, ``T = softmax(a / temperature)`` over the real pairs only.

    Padded pairs get exactly 0; a row without any real pair gets all zeros (never NaN). The softmax runs in
    at least float32 whatever the input dtype. Parameters: ``W`` (``attention_dim x K``) with bias ``b`` in
    ``hidden``, ``h`` in ``projection``: ``attention_dim * (K + 2)`` in all.

    >>> weights = PairAttention(4, 3)(torch.randn(2, 5, 4), torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]).bool())
    >>> weights.sum(dim=1).round(decimals=4).tolist(), weights[0, 2:].tolist()
    ([1.0, 0.0], [0.0, 0.0, 0.0])
    """

    def __init__(self, embedding_dim: int, attention_dim: int, temperature: float = 1.0):
        super().__init__()
        self.hidden = nn.Linear(embedding_dim, attention_dim)
        self.projection = nn.Linear(attention_dim, 1, bias=False)
        self.temperature = temperature

    def forward(self, pair_vectors: Tensor, pair_mask: Tensor, log_weights: Tensor | None = None) -> Tensor:
        """Weights ``(B, P)`` (float32) from pair vectors ``(B, P, K)`` and the real-pair mask ``(B, P)``;
        ``log_weights`` ``(P,)`` are added to the scaled logits (importance weights of sampled pairs)."""
        logits = self.projection(torch.relu(self.hidden(pair_vectors))).squeeze(-1)  # (B, P)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32)) / self.temperature
        if log_weights is not None:
            logits = logits + log_weights
        logits = logits.masked_fill(~pair_mask, float("-inf"))
        logits = logits.masked_fill(~pair_mask.any(dim=1, keepdim=True), 0.0)  # no real pair: uniform, zeroed below
        return torch.softmax(logits, dim=1) * pair_mask
