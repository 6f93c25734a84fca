"""Loading a trained model with the encoder its checkpoint carries, ready to score raw rows."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch

from lit_ifm.checkpoints import import_class, model_class_path, read_checkpoint
from lit_ifm.errors import CheckpointError
from lit_ifm.models.scoring import encoded_rows, encoder_of, score, scores_of_ids

__all__ = ["encoded_rows", "encoder_of", "load", "score", "scores_of_ids"]


def load(checkpoint_path: str | Path, map_location: str | torch.device = "cpu"):
    """The model of a lit_ifm checkpoint, of the class it was trained as, in evaluation mode and ready to
    :meth:`~lit_ifm.models.FieldAwareModel.score` raw rows with the encoder the checkpoint carries.

    Loading runs no code from the file (``weights_only``).
    """
    checkpoint = read_checkpoint(checkpoint_path)
    class_path = model_class_path(checkpoint)
    model_class = import_class(class_path) if class_path else None
    if model_class is None or not (isinstance(model_class, type) and issubclass(model_class, L.LightningModule)):
        raise CheckpointError(f"--ckpt_path: {checkpoint_path} holds a model of class {class_path}, which cannot be "
                              "imported as a lit_ifm model here: install the package that defines it")
    return model_class.load_from_checkpoint(checkpoint_path, map_location=map_location).eval()
