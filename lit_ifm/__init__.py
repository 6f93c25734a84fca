"""lit_ifm: Interaction-aware Factorization Machines and their baselines for PyTorch Lightning."""

from lit_ifm import data, models
from lit_ifm.data import *  # noqa: F403  (the data module, its schema and batch types)
from lit_ifm.models import *  # noqa: F403  (every model)

__version__ = "0.1.0"
__all__ = [*data.__all__, *models.__all__]
