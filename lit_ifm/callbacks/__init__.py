"""Callbacks that python -m lit_ifm uses and that any Lightning Trainer can take."""

from lit_ifm.callbacks.divergence import DivergenceGuard
from lit_ifm.callbacks.field_importance import FieldImportanceReport
from lit_ifm.callbacks.monitor import BestCheckpoint, BestValidationValues, EarlyStopping
from lit_ifm.callbacks.predictions import PredictionWriter
from lit_ifm.callbacks.preemption import PreemptionNotice
from lit_ifm.callbacks.progress import LineProgress, TerminalProgress
from lit_ifm.callbacks.sampler import InteractionSampler
from lit_ifm.callbacks.throughput import TrainingThroughput

__all__ = [
    "BestCheckpoint",
    "BestValidationValues",
    "DivergenceGuard",
    "EarlyStopping",
    "FieldImportanceReport",
    "InteractionSampler",
    "LineProgress",
    "PredictionWriter",
    "PreemptionNotice",
    "TerminalProgress",
    "TrainingThroughput",
]
