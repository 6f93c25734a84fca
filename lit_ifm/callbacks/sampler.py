"""Per-batch interaction sampling by field-aspect importance (the paper's "Sampling" paragraph)."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import Tensor


def draw_without_replacement(weights: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` distinct indices, drawn one after another with probability proportional to ``weights``
    among those not yet drawn (Gumbel-top-k: the ``count`` largest ``log w + Gumbel noise``), sorted.

    >>> draw_without_replacement(torch.tensor([0.0, 1.0, 0.0, 2.0]), 2, torch.Generator().manual_seed(0))
    tensor([1, 3])
    """
    uniform = torch.rand(weights.shape, generator=generator, dtype=torch.float64)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
    keys = weights.double().log() + gumbel
    return keys.topk(count).indices.sort().values


def inclusion_probabilities(probabilities: Tensor, count: int, iterations: int = 60) -> Tensor:
    """P(pair drawn) when ``count`` pairs are drawn one after another without replacement with one-draw
    ``probabilities``: Rosen's approximation ``1 - exp(-t p_i)``, with t found by bisection so that the
    inclusion probabilities sum to ``count``.

    >>> inclusion_probabilities(torch.tensor([0.25, 0.25, 0.5]), 3)
    tensor([1., 1., 1.], dtype=torch.float64)
    """
    p = probabilities.double()
    if count >= int((p > 0).sum()):
        return (p > 0).double()
    low, high = 0.0, 1.0
    while (1 - torch.exp(-high * p)).sum() < count:
        high *= 2
    for _ in range(iterations):
        middle = (low + high) / 2
        low, high = (middle, high) if (1 - torch.exp(-middle * p)).sum() < count else (low, middle)
    return 1 - torch.exp(-high * p)


class InteractionSampler(L.Callback):
    """Before every training batch, draws ``pairs`` of an IFM-family model's P feature interactions with
    probability proportional to ``||F_{f_i,f_j}||^exponent`` (without replacement) and has the model
    compute pair products, attention (softmax over the drawn pairs) and field aspect for those only.

    The norms cost O(n^2 K_F K) once per batch, as in the paper. Every DDP rank draws the same pairs at
    the same step: the draw depends on ``seed``, the step and the (synchronised) weights only.

    Args:
        pairs: how many pairs to compute: a count (int) or a fraction of all pairs (float, e.g. 0.1).
        exponent: 1 draws by the norm (the paper), 2 by the squared norm (the authors' code).
        floor: share of probability spread evenly over all pairs, so that no pair starves.
        warmup_steps: training steps on all pairs before sampling starts.
        evaluation: ``all`` pairs for validation, test and predict, or the ``top`` ``pairs`` by norm.
        correction: weigh each drawn pair in the softmax by 1 / P(drawn), so that the training step's
            weighted sum estimates the one over all pairs that evaluation computes (self-normalised
            importance sampling). Without it (the paper and the authors' code) training averages over
            the frequently drawn pairs while evaluation averages over all.
        seed: seed of the draws.
    """

    def __init__(self, pairs: int | float = 0.1, exponent: float = 1.0, floor: float = 0.0, warmup_steps: int = 0,
                 evaluation: Literal["all", "top"] = "all", correction: bool = True, seed: int = 0):
        if isinstance(pairs, float) and not 0 < pairs <= 1:
            raise ValueError(f"InteractionSampler: a fraction of pairs must be in (0, 1], got {pairs}")
        if isinstance(pairs, int) and pairs < 1:
            raise ValueError(f"InteractionSampler: a count of pairs must be at least 1, got {pairs}")
        if not 0 <= floor <= 1:
            raise ValueError(f"InteractionSampler: floor must be in [0, 1], got {floor}")
        self.pairs, self.exponent, self.floor = pairs, exponent, floor
        self.warmup_steps, self.evaluation, self.correction, self.seed = warmup_steps, evaluation, correction, seed
        self.selection_counts: Tensor | None = None
        self.steps = 0

    def count(self, total: int) -> int:
        """The number of pairs drawn out of ``total``.

        >>> InteractionSampler(pairs=0.1).count(741), InteractionSampler(pairs=5).count(3)
        (74, 3)
        """
        if isinstance(self.pairs, float):
            return max(1, round(self.pairs * total))
        return min(self.pairs, total)

    def probabilities(self, weights: Tensor) -> Tensor:
        """The one-draw probabilities: normalised weights mixed with ``floor`` of the uniform."""
        uniform = torch.full_like(weights, 1.0 / len(weights))
        normalised = weights / weights.sum() if weights.sum() > 0 else uniform
        return (1.0 - self.floor) * normalised + self.floor * uniform

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "field_aspect", None) is None or not hasattr(pl_module, "pair_weights"):
            raise ValueError(f"InteractionSampler draws pairs by their field-aspect norms, but "
                             f"{type(pl_module).__name__} has no field aspect; use IFM, INN or DeepIFM "
                             "(with a variant that keeps the field aspect)")
        self.selection_counts = torch.zeros(pl_module.num_pairs, dtype=torch.long)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step < self.warmup_steps:
            self._use_all_pairs(pl_module)
            return
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + trainer.global_step)
        probabilities = self.probabilities(pl_module.pair_weights(self.exponent).cpu())
        count = self.count(pl_module.num_pairs)
        selected = draw_without_replacement(probabilities, count, generator)
        self.selection_counts[selected] += 1
        self.steps += 1
        pl_module.active_pairs = selected.to(pl_module.device)
        if self.correction:
            inclusion = inclusion_probabilities(probabilities, count)[selected]
            pl_module.active_pair_log_weights = (-inclusion.log()).float().to(pl_module.device)

    @staticmethod
    def _use_all_pairs(pl_module) -> None:
        pl_module.active_pairs = pl_module.active_pair_log_weights = None

    def _evaluation_pairs(self, pl_module) -> None:
        self._use_all_pairs(pl_module)
        if self.evaluation == "top":
            weights = pl_module.pair_weights(self.exponent)
            pl_module.active_pairs = weights.topk(self.count(pl_module.num_pairs)).indices.sort().values

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        self._evaluation_pairs(pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module) -> None:
        self._evaluation_pairs(pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module) -> None:
        self._evaluation_pairs(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        self._use_all_pairs(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        """Logs, per field pair, how often its interactions were drawn (share of steps) and its norm."""
        if not self.steps:
            return
        field_index = pl_module.pair_field_index.cpu()  # (P,) -> field pair of each slot pair
        pairs_per_field_pair = torch.bincount(field_index).double()  # (Q,)
        drawn = torch.zeros_like(pairs_per_field_pair).index_add_(0, field_index, self.selection_counts.double())
        frequency = drawn / pairs_per_field_pair / self.steps
        with torch.no_grad():
            norms = pl_module.field_aspect().float().norm(dim=1).cpu()  # (Q,)
        names, metrics = pl_module.schema.field_names, {}
        for index, (first, second) in enumerate(pl_module.field_aspect.field_pairs.tolist()):
            metrics[f"sampler/frequency/{names[first]}-{names[second]}"] = frequency[index].item()
            metrics[f"sampler/norm/{names[first]}-{names[second]}"] = norms[index].item()
        pl_module.log_dict(metrics, on_epoch=True, sync_dist=True)

    def state_dict(self) -> dict:
        return {"selection_counts": self.selection_counts, "steps": self.steps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.selection_counts, self.steps = state_dict["selection_counts"], state_dict["steps"]
