"""A trained model as a module of plain tensors: what an export holds."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from lit_ifm.callbacks import InteractionSampler
from lit_ifm.data import FieldBatch
from lit_ifm.models import FieldAwareModel


class ServingModel(nn.Module):
    """``ids (B, S) int64`` and ``values (B, S) float32`` in, ``(B,) float32`` out: the model's predictions as
    ``predict`` gives them (:meth:`~lit_ifm.models.FieldAwareModel.predictions`: probabilities for binary, values
    clipped to the labels' range for regression), from the rows of a :class:`~lit_ifm.data.FieldBatch` without
    the batch object, which ``torch.export`` and ONNX cannot take.

    It holds its own copy of the model, on the CPU, in float32 and in evaluation mode, so the model it was made
    from is left as it was. An IFM-family copy computes all its pairs (not those a sampler drew for the last
    training step), or, given the :class:`~lit_ifm.callbacks.InteractionSampler` it was trained with, the pairs that
    sampler evaluates with (the top pairs by field-aspect norm for ``evaluation="top"``), as ``predict`` with that
    callback does.

    Args:
        model: a trained model.
        sampler: the interaction sampler it was trained with, if any.

    >>> from lit_ifm.data.synthetic import synthetic_schema
    >>> from lit_ifm.models import IFM
    >>> serving = ServingModel(IFM(synthetic_schema(), task="binary"), InteractionSampler(pairs=5, evaluation="top"))
    >>> ids, values = torch.zeros(3, 10, dtype=torch.long), torch.ones(3, 10)
    >>> serving(ids, values).shape, len(serving.computed_pairs())
    (torch.Size([3]), 5)
    """

    def __init__(self, model: FieldAwareModel, sampler: InteractionSampler | None = None):
        super().__init__()
        self.model = copy.deepcopy(model).cpu().float().eval().requires_grad_(False)
        for module in self.model.modules():
            # Each buffer in a storage of its own: torch.export.save warns of tensors that are views of one storage
            # without any of them whole (lit_ifm.layers.slot_pairs' left and right halves of one index tensor).
            for name, buffer in module.named_buffers(recurse=False):
                setattr(module, name, buffer.clone())
        if hasattr(self.model, "active_pairs"):  # all pairs, not those a sampler drew for a training step
            self.model.active_pairs = self.model.active_pair_log_weights = None
        if sampler is not None:
            # The calls Lightning makes on a sampler before predicting: its check of the model, then its choice
            # of the evaluation pairs.
            sampler.setup(None, self.model, "predict")
            sampler.on_predict_start(None, self.model)

    def forward(self, ids: Tensor, values: Tensor) -> Tensor:
        rows = ids.shape[0]
        batch = FieldBatch(ids, values, values.new_zeros(rows), torch.arange(rows))  # labels and row ids unused
        # scores(), not forward(): a model trained with torch.compile is exported from its eager code
        return self.model.predictions(self.model.scores(batch))

    def computed_pairs(self) -> Tensor | None:
        """The slot pairs ``(P', 2)`` the interaction sums over, when the model computes a subset of them (the top
        pairs of a sampler); None when it computes all it has."""
        pairs = getattr(self.model, "active_pairs", None)
        if pairs is None:
            return None
        return torch.stack([self.model.pair_left[pairs], self.model.pair_right[pairs]], dim=1)
