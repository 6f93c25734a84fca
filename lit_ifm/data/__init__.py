"""From rows (libFM, tables, the Hub, synthetic, a source of your own) to typed batches."""

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.datamodule import FieldAwareDataModule
from lit_ifm.data.schema import Field, FieldSchema
from lit_ifm.data.synthetic import SyntheticConfig
from lit_ifm.errors import DataError

__all__ = ["DataError", "Field", "FieldAwareDataModule", "FieldBatch", "FieldSchema", "SyntheticConfig"]
