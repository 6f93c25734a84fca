"""Where rows come from: finding a source's files (:mod:`.files`), reading them in chunks (:mod:`.readers`) and
cutting them into splits (:mod:`.splits`)."""

from lit_ifm.data.rows.files import SourceFiles, find_source_files, is_hub_id, store_root
from lit_ifm.data.rows.readers import CsvRows, DatasetRows, ParquetRows, RowSource
from lit_ifm.data.rows.splits import SPLITS, SplitOrigin, SplitRows, line_of, split_rows

__all__ = ["SPLITS", "CsvRows", "DatasetRows", "ParquetRows", "RowSource", "SourceFiles", "SplitOrigin", "SplitRows",
           "find_source_files", "is_hub_id", "line_of", "split_rows", "store_root"]
