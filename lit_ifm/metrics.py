"""Ranking metrics over lists of rows (a user's test rows, say): torchmetrics' retrieval metrics and the grouped
AUC of FuxiCTR. Every metric keeps its rows until ``compute``, so under DDP the ranks' rows are gathered first
and a list split across ranks is ranked whole."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torchmetrics
from torch import Tensor
from torchmetrics.retrieval import RetrievalHitRate, RetrievalMRR, RetrievalNormalizedDCG

from lit_ifm.errors import ConfigError


class Fields(Protocol):
    """What a ranking asks of a schema (:class:`~lit_ifm.data.schema.FieldSchema`): its fields and their slots."""

    field_names: tuple[str, ...]
    fields: tuple
    slot_fields: tuple[int, ...]


@dataclass(frozen=True)
class Ranking:
    """How test rows form ranked lists: the rows of one value of ``field`` (a single-valued field, e.g. ``user``)
    are one list; ``k`` is the cut-off of NDCG@K and HR@K. A row is relevant when its label is above 0.

    In the sampled protocol (``negatives`` > 0) the lists are the test split's instead: its first ``positives``
    rows are one list each, and the rows after them hold each list's ``negatives`` drawn items, list after list.
    """

    field: str | None = None
    k: int = 10
    negatives: int = 0
    positives: int = 0

    def groups(self, row_ids: Tensor) -> Tensor:
        """The list of each test row of the sampled protocol, by its row in the split."""
        return torch.where(row_ids < self.positives, row_ids, (row_ids - self.positives) // max(self.negatives, 1))

    def slot(self, schema: Fields) -> int | None:
        """The slot of :attr:`field` in ``schema``'s rows (``None`` without a field); a field that is not one
        single-valued categorical field is refused."""
        if self.field is None:
            return None
        names = schema.field_names
        if self.field not in names:
            raise ConfigError(f"ranking_field {self.field!r} is not a field; the fields are {list(names)}")
        field = schema.fields[names.index(self.field)]
        if field.kind != "categorical":
            raise ConfigError(f"ranking_field {self.field!r} is {field.kind}: lists are grouped by a single-valued "
                              "categorical field, e.g. the user")
        return schema.slot_fields.index(names.index(self.field))

    def metrics(self) -> dict[str, torchmetrics.Metric]:
        """The metrics ``test`` reports, by name: ``ndcg@K``, ``hr@K``, ``mrr`` and ``gauc``. Lists without a
        relevant row are skipped by the first three; ``gauc`` skips lists without both classes."""
        return {f"ndcg@{self.k}": RetrievalNormalizedDCG(top_k=self.k, empty_target_action="skip"),
                f"hr@{self.k}": RetrievalHitRate(top_k=self.k, empty_target_action="skip"),
                "mrr": RetrievalMRR(empty_target_action="skip"),
                "gauc": GroupAUC()}


class GroupAUC(torchmetrics.Metric):
    """FuxiCTR's gAUC: the AUC of each group (list) that holds both classes, averaged with the group's rows as
    weights, ``sum_g n_g AUC_g / sum_g n_g``. Ties count one half, as in the AUC's pair definition.

    >>> metric = GroupAUC()
    >>> metric.update(torch.tensor([0.9, 0.1, 0.4, 0.8, 0.3, 0.2]), torch.tensor([1, 0, 1, 0, 1, 1]),
    ...               torch.tensor([0, 0, 1, 1, 1, 2]))
    >>> round(float(metric.compute()), 4)  # group 0: AUC 1 (2 rows), group 1: 0 (3 rows), group 2: one class
    0.4
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self):
        super().__init__()
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("indexes", default=[], dist_reduce_fx="cat")

    def update(self, preds: Tensor, target: Tensor, indexes: Tensor) -> None:  # type: ignore[override]
        self.preds.append(preds.detach().float().flatten())
        self.target.append((target.flatten() > 0).long())
        self.indexes.append(indexes.flatten().long())

    def compute(self) -> Tensor:
        preds, target, groups = (torchmetrics.utilities.dim_zero_cat(state)
                                 for state in (self.preds, self.target, self.indexes))
        # rank every row within its group by score: sort by score, then (stably) by group
        order = torch.argsort(preds, stable=True)
        order = order[torch.argsort(groups[order], stable=True)]
        preds, target, groups = preds[order], target[order], groups[order]
        _, group, sizes = torch.unique_consecutive(groups, return_inverse=True, return_counts=True)
        starts = torch.cumsum(sizes, 0) - sizes
        # tied scores within a group share the mean of their ranks
        key = torch.stack([groups.double(), preds.double()], dim=1)
        _, tie, tie_sizes = torch.unique_consecutive(key, dim=0, return_inverse=True, return_counts=True)
        tie_starts = torch.cumsum(tie_sizes, 0) - tie_sizes
        rank = (tie_starts[tie] - starts[group]).double() + (tie_sizes[tie].double() + 1) / 2  # 1-based
        positives = torch.zeros(len(sizes), dtype=torch.double, device=preds.device).index_add_(0, group,
                                                                                                target.double())
        rank_sums = torch.zeros_like(positives).index_add_(0, group, rank * target)
        negatives = sizes.double() - positives
        both = (positives > 0) & (negatives > 0)
        auc = (rank_sums - positives * (positives + 1) / 2) / (positives * negatives)  # Mann-Whitney U / (n+ n-)
        weights = sizes.double() * both
        if not both.any():
            return preds.new_tensor(float("nan"))
        return (torch.where(both, auc, 0.0) * weights).sum().float() / weights.sum().float()
