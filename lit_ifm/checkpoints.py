"""Reading lit_ifm checkpoints safely (``weights_only``), and the model class they name.

A checkpoint carries its model class (``lit_ifm_model``), the schema of the data it was trained on
(``field_schema``: field names, kinds, slots, vocabulary sizes and fingerprints) and the encoder of that data
(``lit_ifm_encoding``); :mod:`lit_ifm.models.fitting` compares them with the model and the data at hand.
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import torch

from lit_ifm.errors import CheckpointError

MODEL_KEY = "lit_ifm_model"  # the model's class path, written next to the state dict
SCHEMA_KEY = "field_schema"
ENCODING_KEY = "lit_ifm_encoding"  # how raw rows become the model's ids (lit_ifm.data.encoding.encoding_state)


def read_checkpoint(path: str | Path, option: str = "--ckpt_path") -> dict:
    """The checkpoint at ``path``, loaded with ``weights_only`` (no code runs while loading), or a
    :class:`CheckpointError` that says why it is not a lit_ifm checkpoint. ``option`` names the setting the
    path came from, for the message."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{option}: no checkpoint at {path}" + (" (that is a folder)" if path.is_dir() else ""))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # never pass torch's own message on: it advises the unsafe weights_only=False
        raise CheckpointError(f"{option}: {path} is not a lit_ifm checkpoint ({_unreadable(path, error)})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or SCHEMA_KEY not in checkpoint:
        raise CheckpointError(f"{option}: {path} is not a lit_ifm checkpoint (it holds no model state with a field "
                              "schema)")
    return checkpoint


def _unreadable(path: Path, error: Exception) -> str:
    if path.stat().st_size == 0:
        return "the file is empty"
    # torch names a class outside its allowed list "Unsupported global", one of a blocked module (os, subprocess, ...)
    # "unsupported GLOBAL"
    if isinstance(error, pickle.UnpicklingError) and "unsupported global" in str(error).lower():
        return "it holds Python objects that lit_ifm does not load"
    return "the file is truncated or not a torch checkpoint"


def model_class_path(checkpoint: dict) -> str | None:
    """The class path of the checkpoint's model: lit_ifm's own key, else LightningCLI's hyper-parameter."""
    return checkpoint.get(MODEL_KEY) or checkpoint.get("hyper_parameters", {}).get("_class_path")


def import_class(class_path: str) -> type | None:
    """The class a dotted path names (``lit_ifm.FM``), or None when it cannot be imported."""
    module, _, name = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def check_model_class(checkpoint: dict, path: str | Path, model_class: type) -> None:
    """Refuses a checkpoint of another model class than ``model_class`` (the recipe's), naming both."""
    saved = model_class_path(checkpoint)
    if saved is None or import_class(saved) is model_class:
        return
    saved_name = saved.rpartition(".")[2]
    short = f"lit_ifm.{saved_name}"  # lit_ifm's own models by their short path, any other class by its own
    option = short if import_class(short) is not None and import_class(short) is import_class(saved) else saved
    raise CheckpointError(f"{path} holds a model of class {saved_name}, but the configuration asks for "
                          f"{model_class.__name__}: use the recipe it was trained with (or --model {option})")
