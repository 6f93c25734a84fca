"""Serving a trained model without lit_ifm: a module of plain tensors (:class:`ServingModel`), and an export of it to
``torch.export`` or ONNX in a folder with its signature and a README (:func:`export`, :func:`export_checkpoint`;
``python -m lit_ifm export``)."""

from lit_ifm.serving.export import (
    FORMATS,
    ExportFile,
    export,
    export_checkpoint,
    exported_program,
    serving_signature,
    trained_sampler,
)
from lit_ifm.serving.module import ServingModel

__all__ = ["FORMATS", "ExportFile", "ServingModel", "export", "export_checkpoint", "exported_program",
           "serving_signature", "trained_sampler"]
