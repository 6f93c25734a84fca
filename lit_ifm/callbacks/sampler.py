"""Per-batch interaction sampling by field-aspect importance (the paper's "Sampling" paragraph)."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from torch import Tensor

from lit_ifm.errors import ConfigError


def draw_without_replacement(weights: Tensor, count: int, generator: torch.Generator) -> Tensor:
    """``count`` distinct indices, drawn one after another with probability proportional to ``weights``
    among those not yet drawn (Gumbel-top-k: the ``count`` largest ``log w + Gumbel noise``), sorted.

    >>> draw_without_replacement(torch.tensor([0.0, 1.0, 0.0, 2.0]), 2, torch.Generator().manual_seed(0))
    tensor([1, 3])
    """
    uniform = torch.rand(weights.shape, generator=generator, dtype=torch.float64, device=weights.device)
    gumbel = -torch.log(-torch.log(uniform.clamp_min(1e-300)))
    keys = weights.double().log() + gumbel
    return keys.topk(count).indices.sort().values


def inclusion_probabilities(probabilities: Tensor, count: int, iterations: int = 40) -> Tensor:
    """P(pair drawn) when ``count`` pairs are drawn one after another without replacement with one-draw
    ``probabilities``: Rosen's approximation ``1 - exp(-t p_i)``, with t found by bisection (on log t, in
    tensor operations only, so a GPU never waits for the host) so that they sum to ``count``.

    >>> inclusion = inclusion_probabilities(torch.tensor([0.1, 0.2, 0.7]), 2)
    >>> round(inclusion.sum().item(), 6), inclusion.argsort().tolist()
    (2.0, [0, 1, 2])
    """
    p = probabilities.double()
    low, high = p.new_tensor(-20.0), p.new_tensor(60.0)  # log t; e^60 p = 1 for any p in use
    for _ in range(iterations):
        middle = (low + high) / 2
        too_few = (1 - torch.exp(-middle.exp() * p)).sum() < count
        low, high = torch.where(too_few, middle, low), torch.where(too_few, high, middle)
    # A pair of probability 0 is drawn only once every other pair is: then it is drawn for sure.
    return torch.where(p > 0, 1 - torch.exp(-high.exp() * p), torch.ones_like(p))


class InteractionSampler(L.Callback):
    """Before every training batch, draws ``pairs`` of an IFM-family model's P feature interactions with
    probability proportional to ``||F_{f_i,f_j}||^exponent`` (without replacement) and has the model
    compute pair products, attention (softmax over the drawn pairs) and field aspect for those only.

    The norms cost O(n^2 K_F K) once per batch, as in the paper. Every DDP rank draws the same pairs at
    the same step: the draw depends on ``seed``, the step and rank 0's weights only.

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
            raise ConfigError(f"InteractionSampler: a fraction of pairs must be in (0, 1], got {pairs}")
        if isinstance(pairs, int) and pairs < 1:
            raise ConfigError(f"InteractionSampler: a count of pairs must be at least 1, got {pairs}")
        if not 0 <= floor <= 1:
            raise ConfigError(f"InteractionSampler: floor must be in [0, 1], got {floor}")
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
        total = weights.sum()
        normalised = torch.where(total > 0, weights / total.clamp_min(torch.finfo(weights.dtype).tiny), uniform)
        return (1.0 - self.floor) * normalised + self.floor * uniform

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "field_aspect", None) is None or not hasattr(pl_module, "pair_weights"):
            raise ConfigError(f"InteractionSampler draws pairs by their field-aspect norms, but "
                             f"{type(pl_module).__name__} has no field aspect; use IFM, INN or DeepIFM "
                             "(with a variant that keeps the field aspect)")
        if stage == "fit":
            self.selection_counts, self.steps = torch.zeros(pl_module.num_pairs, dtype=torch.long), 0

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        self.draw(trainer, pl_module)

    def draw(self, trainer: L.Trainer, pl_module) -> None:
        """Has ``pl_module`` compute the pairs drawn for the coming training step (all pairs during warm-up)."""
        if trainer.global_step < self.warmup_steps:
            self._use_all_pairs(pl_module)
            return
        weights = pl_module.pair_weights(self.exponent)
        if trainer.world_size > 1 and torch.distributed.is_initialized():
            # rank 0's: a rank's batch-norm statistics, which pair weights may scale by, are its own between
            # DDP's broadcasts, and every rank must draw the same pairs
            torch.distributed.broadcast(weights, src=0)
        # Everything stays on the model's device: a GPU never waits for this host code.
        probabilities = self.probabilities(weights)
        generator = torch.Generator(probabilities.device).manual_seed(self.seed * 1_000_003 + trainer.global_step)
        count = self.count(pl_module.num_pairs)
        selected = draw_without_replacement(probabilities, count, generator)
        self.selection_counts = self.selection_counts.to(selected.device).index_add_(
            0, selected, torch.ones_like(selected))
        self.steps += 1
        pl_module.active_pairs = selected
        if self.correction:
            inclusion = inclusion_probabilities(probabilities, count)[selected]
            pl_module.active_pair_log_weights = (-inclusion.log()).float()

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

    def field_pair_statistics(self, pl_module) -> dict[str, float]:
        """Per field pair, the share of training steps its interactions were drawn in (averaged over its
        slot pairs) and its current norm: ``sampler/frequency/<f>-<g>`` and ``sampler/norm/<f>-<g>``."""
        field_index = pl_module.pair_field_index.cpu()  # (P,) -> field pair of each slot pair
        pairs_per_field_pair = torch.bincount(field_index).double()  # (Q,)
        drawn = torch.zeros_like(pairs_per_field_pair).index_add_(0, field_index, self.selection_counts.cpu().double())
        frequency = drawn / pairs_per_field_pair / max(self.steps, 1)
        with torch.no_grad():
            norms = pl_module.field_aspect_as_used().float().norm(dim=1).cpu()  # (Q,)
        names, statistics = pl_module.schema.field_names, {}
        for index, (first, second) in enumerate(pl_module.field_aspect.field_pairs.tolist()):
            statistics[f"sampler/frequency/{names[first]}-{names[second]}"] = frequency[index].item()
            statistics[f"sampler/norm/{names[first]}-{names[second]}"] = norms[index].item()
        return statistics

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        """Sends :meth:`field_pair_statistics` to the loggers, from rank zero (every rank draws alike).
        Straight to the loggers: 2 Q values through ``self.log`` cost more than a short epoch."""
        if self.steps and trainer.is_global_zero:
            statistics = self.field_pair_statistics(pl_module)
            for logger in trainer.loggers:
                logger.log_metrics(statistics, step=trainer.global_step)

    def state_dict(self) -> dict:
        return {"selection_counts": self.selection_counts, "steps": self.steps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.selection_counts, self.steps = state_dict["selection_counts"], state_dict["steps"]
