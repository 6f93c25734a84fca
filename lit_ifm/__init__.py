"""lit_ifm: Interaction-aware Factorization Machines and their baselines for PyTorch Lightning.

What another package may build on is listed in ``__all__`` (models, the data module and its types, callbacks,
errors, and :func:`tune_allocator`, an opt-in for programs of one's own); the submodules ``lit_ifm.layers``,
``lit_ifm.models.interaction_aware``, ``lit_ifm.data.encoding``, ``lit_ifm.runs`` and ``lit_ifm.loggers`` hold the
pieces they are made of. Names that start with ``_`` are not part of it.
"""

from lit_ifm import callbacks, data, errors, models
from lit_ifm.callbacks import *  # noqa: F403  (checkpointing, early stopping, sampling, reports, predictions)
from lit_ifm.data import *  # noqa: F403  (the data module, its schema and batch types)
from lit_ifm.errors import *  # noqa: F403  (the mistakes reported as one line)
from lit_ifm.memory import tune_allocator  # noqa: F401  (an opt-in: glibc's malloc thresholds for training)
from lit_ifm.models import *  # noqa: F403  (every model and the bases to subclass)
from lit_ifm.serving.scoring import load as load  # the trained model of a checkpoint

__version__ = "0.1.0"
__all__ = sorted({*data.__all__, *models.__all__, *callbacks.__all__, *errors.__all__, "load", "tune_allocator"})
