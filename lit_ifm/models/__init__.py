from lit_ifm.models.base import FieldAwareModel
from lit_ifm.models.fm import FM
from lit_ifm.models.linear import LinearModel

__all__ = ["FM", "FieldAwareModel", "LinearModel"]
