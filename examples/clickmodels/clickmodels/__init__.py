"""Models, data and a callback built on lit_ifm's public API, as another project would build them.

    python -m lit_ifm fit --model.class_path clickmodels.FwFM           # lit_ifm's CLI, lit_ifm's data
    python -m clickmodels fit --model.class_path clickmodels.LinearAttentionIFM --data.rows 5000   # with ClickLog
"""

from clickmodels.callbacks import ImportanceHistory
from clickmodels.data import ClickLog
from clickmodels.models import FwFM, LinearAttentionIFM, LinearPairAttention, ProjectedIFM

__all__ = ["ClickLog", "FwFM", "ImportanceHistory", "LinearAttentionIFM", "LinearPairAttention", "ProjectedIFM"]
