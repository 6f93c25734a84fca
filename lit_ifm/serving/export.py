"""Exporting a trained model to a folder that serves without lit_ifm: ``torch.export`` (``model.pt2``) or ONNX
(``model.onnx``), with ``signature.json`` (what goes in and comes out, field by field) and a README that shows how to
load and call it.

``python -m lit_ifm export --ckpt_path <ckpt> --format torch|onnx --output <folder>`` runs :func:`export_checkpoint`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import yaml

import lit_ifm
from lit_ifm.callbacks import InteractionSampler
from lit_ifm.checkpoints import import_class
from lit_ifm.errors import ConfigError
from lit_ifm.models import FieldAwareModel
from lit_ifm.runs import checkpoint_run_folder
from lit_ifm.serving.module import ServingModel
from lit_ifm.serving.plain import write_plain_encoding
from lit_ifm.serving.readme import export_readme
from lit_ifm.serving.scoring import load

Format = Literal["torch", "onnx"]
FORMATS: tuple[str, ...] = ("torch", "onnx")
SIGNATURE_FILE = "signature.json"
README_FILE = "README.md"
ENCODER_FILE = "encoder.json"
MODEL_FILES = {"torch": "model.pt2", "onnx": "model.onnx"}
_ONNX_PACKAGES = ("onnx", "onnxscript")  # what torch.onnx.export(dynamo=True) imports
_ONNX_SINGLE_FILE_BYTES = 1 << 30  # weights beyond this go to model.onnx.data (a protobuf file holds at most 2 GiB)
# torch's ONNX exporter logs a warning for each torchvision operator it could register when torchvision is absent.
_ONNX_REGISTRATION_LOGGER = "torch.onnx._internal.exporter._registration"


@dataclass(frozen=True)
class ExportFile:
    """A file of an export folder besides the model, ``signature.json`` and the README: its name, what it holds (listed
    in ``signature.json`` and the README), and the function that writes it, given its path."""

    name: str
    description: str
    write: Callable[[Path], None]


def export(model: FieldAwareModel, folder: str | Path, format: Format = "torch", *,
           sampler: InteractionSampler | None = None, extra_files: Sequence[ExportFile] = ()) -> Path:
    """Writes ``model`` to ``folder`` for serving, as a :class:`ServingModel` (``ids (B, S) int64`` and ``values
    (B, S) float32`` in, predictions ``(B,)`` out, for any B), and returns the folder.

    Args:
        model: a trained model; it is copied, not changed.
        folder: a new or empty folder, or an earlier export, whose files are replaced.
        format: ``torch`` (``torch.export``, ``model.pt2``: ``torch.export.load(path).module()``) or ``onnx``
            (``model.onnx`` for ONNX Runtime; needs ``pip install 'lit-ifm[onnx]'``).
        sampler: the :class:`~lit_ifm.callbacks.InteractionSampler` the model was trained with: with
            ``evaluation="top"`` the export computes the top pairs, as evaluation does.
        extra_files: more files to write into the folder.
    """
    if format not in FORMATS:
        raise ConfigError(f"export: unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    if format == "onnx":
        _check_onnx_installed()
    serving = ServingModel(model, sampler)
    program = exported_program(serving)
    folder = _emptied_export_folder(Path(folder))
    try:
        files = _write_model(program, folder, format)
        for extra in extra_files:
            files[extra.name] = extra.description
            extra.write(folder / extra.name)
        files[SIGNATURE_FILE] = "this description: inputs, output, fields and their slots"
        files[README_FILE] = "how to load and call the model"
        signature = serving_signature(serving, format, files)
        (folder / SIGNATURE_FILE).write_text(json.dumps(signature, indent=2) + "\n")
        (folder / README_FILE).write_text(export_readme(signature))
    except BaseException:  # no half export left behind (the folder held nothing else), which the next would refuse
        for path in folder.iterdir():
            if path.is_file():
                path.unlink()
        raise
    return folder


def exported_program(serving: ServingModel) -> torch.export.ExportedProgram:
    """``serving`` through ``torch.export``, with a dynamic batch size."""
    schema = serving.model.schema
    example = (torch.full((2, schema.num_slots), schema.padding_id, dtype=torch.long), torch.zeros(2, schema.num_slots))
    rows = torch.export.Dim("batch")
    # strict: dynamo's tracing keeps the row count symbolic where a model asks len(batch) (the non-strict tracer
    # makes it a Python int and fixes the batch size), and looks rows up with nn.Embedding's own operator, not
    # the CPU training backward of lit_ifm.layers.embedding_rows.
    return torch.export.export(serving, example, dynamic_shapes=({0: rows}, {0: rows}), strict=True)


def _write_model(program: torch.export.ExportedProgram, folder: Path, format: Format) -> dict[str, str]:
    """Writes the model file(s); returns their names and what each holds."""
    path = folder / MODEL_FILES[format]
    if format == "torch":
        torch.export.save(program, path)
        return {path.name: "the model, for torch.export.load"}
    with _without_torchvision_notices():
        onnx_program = torch.onnx.export(program, dynamo=True, input_names=["ids", "values"],
                                         output_names=["scores"], verbose=False)
    weight_bytes = sum(tensor.nbytes for tensor in program.state_dict.values())
    external = weight_bytes > _ONNX_SINGLE_FILE_BYTES
    onnx_program.save(path, external_data=external)
    files = {path.name: "the model, for onnxruntime.InferenceSession"}
    if external:
        files[f"{path.name}.data"] = f"the weights of {path.name}, which loads them from beside it"
    return files


@contextlib.contextmanager
def _without_torchvision_notices() -> Iterator[None]:
    def not_torchvision(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("torchvision is not installed")

    logger = logging.getLogger(_ONNX_REGISTRATION_LOGGER)
    logger.addFilter(not_torchvision)
    try:
        yield
    finally:
        logger.removeFilter(not_torchvision)


def _check_onnx_installed() -> None:
    missing = [name for name in _ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"export --format onnx needs {' and '.join(missing)}: pip install 'lit-ifm[onnx]' "
                          "(or use --format torch)")


def _emptied_export_folder(folder: Path) -> Path:
    """``folder``, made if new; an earlier export's files (those its ``signature.json`` lists) are removed, and any
    other content is refused, so that no file of another export or another program is left among the new ones."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"export: {folder} is a file; give a folder to export to")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        earlier = json.loads((folder / SIGNATURE_FILE).read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):  # none, or not an export's
        earlier = {}
    others = sorted(path.name for path in folder.iterdir() if path.name not in earlier)
    if others:
        raise ConfigError(f"export: {folder} holds files that are not an export of lit_ifm ({', '.join(others[:5])}"
                          f"{', ...' if len(others) > 5 else ''}); give a new or empty folder")
    for name in earlier:
        (folder / name).unlink(missing_ok=True)
    return folder


def serving_signature(serving: ServingModel, format: Format, files: dict[str, str]) -> dict:
    """What ``signature.json`` holds: the files, the model, its inputs and output, and every field's slots."""
    model, schema = serving.model, serving.model.schema
    slots = schema.num_slots
    if model.task == "binary":
        meaning = "the probability that the label is positive (the sigmoid of the model's score)"
    elif model.hparams.get("clip_predictions", False):
        low, high = schema.label_range
        meaning = f"the predicted label, clipped to the training labels' range [{low:g}, {high:g}]"
    else:
        meaning = "the predicted label"
    fields, first_slot = [], 0
    for field in schema.fields:
        fields.append({"name": field.name, "kind": field.kind, "first_slot": first_slot, "slots": field.slots,
                       "vocabulary_size": field.vocabulary_size, "oov_id": field.oov_id,
                       "fingerprint": field.fingerprint})
        first_slot += field.slots
    signature = {
        "format": format,
        "files": files,
        "model": f"{type(model).__module__}.{type(model).__qualname__}",
        "task": model.task,
        "inputs": {
            "ids": {"dtype": "int64", "shape": ["batch", slots],
                    "description": "the feature id of each slot; padding_id where a slot is empty"},
            "values": {"dtype": "float32", "shape": ["batch", slots],
                       "description": "each slot's value x_i: 1 for a categorical or multi-valued field's feature, "
                                      "the number for a numeric field, 0 where a slot is empty"},
        },
        "output": {"name": "scores", "dtype": "float32", "shape": ["batch"], "description": meaning},
        "padding_id": schema.padding_id,
        "num_features": schema.num_features,
        "fields": fields,
    }
    if model.task == "regression":
        signature["label_range"] = list(schema.label_range)
    if hasattr(model, "num_pairs"):
        computed = serving.computed_pairs()
        signature["pairs"] = {"total": model.num_pairs,
                              "computed": "all" if computed is None else computed.tolist()}
    signature["versions"] = {"torch": torch.__version__, "lit_ifm": lit_ifm.__version__}
    return signature


# --- from a checkpoint ---------------------------------------------------------------------------------


def export_checkpoint(checkpoint_path: str | Path, folder: str | Path, format: Format = "torch") -> Path:
    """:func:`export` of the model a checkpoint holds (read with ``weights_only``), rebuilt with its class's
    ``load_from_checkpoint``. The sampler it was trained with is taken from its run's ``config.yaml``
    (:func:`trained_sampler`)."""
    model = load(checkpoint_path)
    encoding = model.schema.encoding
    extra = [] if encoding is None or encoding["encoder"]["kind"] != "table" else [ExportFile(
        ENCODER_FILE, "the encoder: every field's rules and vocabulary, to turn raw rows into ids (see lit_ifm's "
        "serving.plain)", lambda path: write_plain_encoding(encoding, path))]
    return export(model, folder, format, sampler=trained_sampler(checkpoint_path), extra_files=extra)


def trained_sampler(checkpoint_path: str | Path) -> InteractionSampler | None:
    """The :class:`~lit_ifm.callbacks.InteractionSampler` of the run a checkpoint belongs to, as ``config.yaml`` in
    the run's folder (``<run>/checkpoints/<name>.ckpt`` -> ``<run>/config.yaml``) configures it; None when the run
    has none, or the checkpoint lies outside a run folder."""
    run = checkpoint_run_folder(checkpoint_path)
    config_path = run / "config.yaml" if run is not None else None
    if config_path is None or not config_path.is_file():
        return None
    callbacks = ((yaml.safe_load(config_path.read_text()) or {}).get("trainer") or {}).get("callbacks") or []
    for callback in callbacks if isinstance(callbacks, list) else [callbacks]:
        callback_class = import_class(callback.get("class_path", "")) if isinstance(callback, dict) else None
        if isinstance(callback_class, type) and issubclass(callback_class, InteractionSampler):
            return callback_class(**(callback.get("init_args") or {}))
    return None


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as every other mistake (python -m lit_ifm prints it)
        raise ConfigError(f"export: {message}")


def export_command(args: Sequence[str]) -> Path:
    """``python -m lit_ifm export``: parses its flags, runs :func:`export_checkpoint` and says what it wrote."""
    parser = _ArgumentParser(prog="lit-ifm export", description="Export a trained model for serving, to a folder "
                             "that needs torch or onnxruntime, not lit_ifm.")
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint of lit_ifm's fit")
    parser.add_argument("--format", choices=FORMATS, default="torch",
                        help="torch: torch.export (model.pt2); onnx: ONNX (model.onnx), for ONNX Runtime "
                             "(default: %(default)s)")
    parser.add_argument("--output", required=True, help="the folder to write: new, empty, or an earlier export")
    options = parser.parse_args(list(args))
    folder = export_checkpoint(options.ckpt_path, options.output, options.format)
    signature = json.loads((folder / SIGNATURE_FILE).read_text())
    pairs, computed = signature.get("pairs"), ""
    if pairs is not None:
        subset = "all" if pairs["computed"] == "all" else f"the top {len(pairs['computed'])} of"
        computed = f" ({subset} {pairs['total']} pairs)"
    print(f"{signature['model'].rpartition('.')[2]}{computed} exported to {folder}: {', '.join(signature['files'])}")
    return folder
