"""Training on the synthetic source: the models find what was planted."""

from __future__ import annotations

import lightning as L

from lit_ifm import FM, FieldAwareDataModule, LinearModel, SyntheticConfig


def validation_rmse(model_class, data: FieldAwareDataModule, epochs: int = 8) -> float:
    L.seed_everything(0, verbose=False)
    model = model_class(data.schema, embedding_dim=8, lr=0.02)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    return trainer.callback_metrics["val/rmse"].item()


def test_fm_beats_a_linear_model_on_planted_interactions():
    data = FieldAwareDataModule(synthetic=SyntheticConfig(rows=8000), batch_size=256)
    linear, fm = validation_rmse(LinearModel, data), validation_rmse(FM, data)
    assert fm < 0.8 * linear, (fm, linear)
