from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.datamodule import FieldAwareDataModule
from lit_ifm.data.schema import Field, FieldSchema
from lit_ifm.data.sources import DataError
from lit_ifm.data.synthetic import SyntheticConfig

__all__ = ["DataError", "Field", "FieldAwareDataModule", "FieldBatch", "FieldSchema", "SyntheticConfig"]
