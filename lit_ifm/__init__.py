"""lit_ifm: Interaction-aware Factorization Machines and their baselines for PyTorch Lightning."""

from lit_ifm.data import DataError, Field, FieldAwareDataModule, FieldBatch, FieldSchema, SyntheticConfig
from lit_ifm.models import FM, FieldAwareModel, LinearModel

__version__ = "0.1.0"
__all__ = [
    "DataError",
    "FM",
    "Field",
    "FieldAwareDataModule",
    "FieldAwareModel",
    "FieldBatch",
    "FieldSchema",
    "LinearModel",
    "SyntheticConfig",
]
