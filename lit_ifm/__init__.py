"""lit_ifm: Interaction-aware Factorization Machines and their baselines for PyTorch Lightning."""

from lit_ifm.data import DataError, Field, FieldAwareDataModule, FieldBatch, FieldSchema, SyntheticConfig
from lit_ifm.models import (
    AFM,
    FFM,
    FM,
    IFM,
    INN,
    NFM,
    DeepFM,
    DeepIFM,
    FieldAwareModel,
    FieldPairImportance,
    InteractionDetails,
    LinearModel,
)

__version__ = "0.1.0"
__all__ = [
    "AFM",
    "FFM",
    "FM",
    "IFM",
    "INN",
    "NFM",
    "DataError",
    "DeepFM",
    "DeepIFM",
    "Field",
    "FieldAwareDataModule",
    "FieldAwareModel",
    "FieldBatch",
    "FieldPairImportance",
    "FieldSchema",
    "InteractionDetails",
    "LinearModel",
    "SyntheticConfig",
]
