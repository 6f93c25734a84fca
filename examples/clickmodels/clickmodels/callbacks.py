"""A callback reading an IFM-family model's field-pair importance as it trains."""

from __future__ import annotations

import lightning as L

from lit_ifm import FieldPairImportance


class ImportanceHistory(L.Callback):
    """After every validation, reads ``field_pair_importance()`` (the paper's Table 3) and logs the share of the
    ``top`` field pairs as ``importance/<field>-<field>``; :attr:`history` keeps every epoch's ranking."""

    def __init__(self, top: int = 3):
        self.top = top
        self.history: list[list[FieldPairImportance]] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not hasattr(pl_module, "field_pair_importance"):
            return
        ranking = pl_module.field_pair_importance()  # largest norm first
        self.history.append(ranking)
        pl_module.log_dict({f"importance/{row.first}-{row.second}": row.share for row in ranking[: self.top]})
