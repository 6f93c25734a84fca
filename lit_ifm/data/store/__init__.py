"""How encoded splits are stored: a folder of flat files per data set and setting (:mod:`.folder`), read as
memory-mapped arrays (:mod:`.mapped`)."""

from lit_ifm.data.store.folder import META, STORE_VERSION, LabelFile, SplitWriter, Store, build_once
from lit_ifm.data.store.mapped import RESIDENT_BUDGET, EncodedSplit, MappedArray, record_type

__all__ = ["META", "RESIDENT_BUDGET", "STORE_VERSION", "EncodedSplit", "LabelFile", "MappedArray", "SplitWriter",
           "Store", "build_once", "record_type"]
