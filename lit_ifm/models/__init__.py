"""Every model, and the bases to subclass: ``FieldAwareModel`` (a new interaction part) and
``InteractionAwareModel`` (a new G over IFM's feature and field aspects)."""

from lit_ifm.models.afm import AFM
from lit_ifm.models.base import FieldAwareModel
from lit_ifm.models.deepfm import DeepFM
from lit_ifm.models.deepifm import DeepIFM
from lit_ifm.models.ffm import FFM
from lit_ifm.models.fm import FM
from lit_ifm.models.ifm import IFM
from lit_ifm.models.inn import INN
from lit_ifm.models.interaction_aware import (
    FieldPairImportance,
    InteractionAspects,
    InteractionAwareModel,
    InteractionDetails,
)
from lit_ifm.models.linear import LinearModel
from lit_ifm.models.nfm import NFM

__all__ = [
    "AFM",
    "FFM",
    "FM",
    "IFM",
    "INN",
    "NFM",
    "DeepFM",
    "DeepIFM",
    "FieldAwareModel",
    "FieldPairImportance",
    "InteractionAspects",
    "InteractionAwareModel",
    "InteractionDetails",
    "LinearModel",
]
