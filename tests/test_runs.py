"""Training as users run it: resume, DDP on CPU, mixed precision, W&B modes, predictions."""

from __future__ import annotations

import math

import lightning as L
import pandas as pd
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import Logger

from helpers import MODELS

from lit_ifm import FM, NFM, FieldAwareDataModule, SyntheticConfig
from lit_ifm.callbacks import PredictionWriter, TrainingThroughput
from lit_ifm.errors import CheckpointError
from lit_ifm.loggers import resolve_wandb_mode



def small_data(**options) -> FieldAwareDataModule:
    return FieldAwareDataModule(synthetic=SyntheticConfig(rows=1500), **{"batch_size": 128, **options})


def trainer(tmp_path, **options) -> L.Trainer:
    defaults = dict(logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                    default_root_dir=tmp_path, enable_checkpointing=False)
    return L.Trainer(**{**defaults, **options})


def fresh_fm(data) -> FM:
    L.seed_everything(7, verbose=False)
    return FM(data.schema, embedding_dim=8, lr=0.02)


def test_resumed_run_equals_the_uninterrupted_run(tmp_path):
    data = small_data()
    straight = fresh_fm(data)
    trainer(tmp_path, max_epochs=2, deterministic=True).fit(straight, datamodule=data)

    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    interrupted = fresh_fm(data)
    trainer(tmp_path, max_epochs=1, deterministic=True, enable_checkpointing=True,
            callbacks=[checkpoint]).fit(interrupted, datamodule=data)
    L.seed_everything(7, verbose=False)  # a resumed CLI run seeds as its config says, then
    torch.rand(1000)  # its RNG state moves on differently; the batch order must not care
    resumed = FM(data.schema, embedding_dim=8, lr=0.02)
    trainer(tmp_path, max_epochs=2, deterministic=True, enable_checkpointing=True,
            callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)],
            ).fit(resumed, datamodule=data, ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    for (name, expected), actual in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(actual, expected, msg=name, rtol=0, atol=0)


@pytest.mark.slow
def test_two_ddp_processes_score_every_validation_row_once(tmp_path):
    data = small_data(eval_batch_size=64)  # 300 validation rows: uneven last batches on 2 ranks
    single = trainer(tmp_path).validate(fresh_fm(data), datamodule=data, verbose=False)[0]
    double = trainer(tmp_path, devices=2, strategy="ddp_fork").validate(fresh_fm(data), datamodule=data,
                                                                        verbose=False)[0]
    assert double["val/rmse"] == pytest.approx(single["val/rmse"], rel=1e-6)


@pytest.mark.slow
def test_two_ddp_processes_train_like_one(tmp_path):
    data_one, data_two = small_data(), small_data(batch_size=64)  # global batch 128
    one, two = fresh_fm(data_one), fresh_fm(data_two)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ddp", monitor="val/rmse", save_last=True)
    trainer(tmp_path, max_epochs=3).fit(one, datamodule=data_one)
    ddp = trainer(tmp_path, max_epochs=3, devices=2, strategy="ddp_fork", enable_checkpointing=True,
                  callbacks=[checkpoint])
    ddp.fit(two, datamodule=data_two)
    rmse_one = trainer(tmp_path).validate(one, datamodule=data_one, verbose=False)[0]["val/rmse"]  # after fit
    rmse_two = ddp.callback_metrics["val/rmse"].item()
    assert rmse_two == pytest.approx(rmse_one, rel=0.05)
    written = sorted(p.name for p in (tmp_path / "ddp").iterdir())
    assert len(written) == 2 and written[1] == "last.ckpt" and written[0].startswith("epoch="), written


@pytest.mark.parametrize("model_class", MODELS, ids=lambda c: c.__name__)
def test_bf16_mixed_precision_trains_without_nan(tmp_path, model_class):
    data = small_data()
    L.seed_everything(0, verbose=False)
    model = model_class(data.schema, embedding_dim=8)
    run = trainer(tmp_path, precision="bf16-mixed", max_epochs=1, limit_train_batches=3, limit_val_batches=2,
                  callbacks=[TrainingThroughput()])
    run.fit(model, datamodule=data)
    assert math.isfinite(run.callback_metrics["train/loss"].item())
    assert math.isfinite(run.callback_metrics["val/rmse"].item())


def test_gradient_clipping_under_mixed_precision_keeps_an_optimizer_lightning_can_clip(tmp_path):
    data = small_data()
    model = fresh_fm(data)
    run = trainer(tmp_path, precision="bf16-mixed", gradient_clip_val=1.0, max_epochs=1, limit_train_batches=2,
                  limit_val_batches=0)
    run.fit(model, datamodule=data)  # a fused Adam: "does not allow for gradient clipping"
    assert run.optimizers[0].defaults["foreach"] is True and not run.optimizers[0].defaults["fused"]


def test_a_model_trains_in_a_loop_of_ones_own_on_fabric():
    data = small_data()
    fabric = L.Fabric(accelerator="cpu", devices=1)
    model = fresh_fm(data)
    model, optimizer = fabric.setup(model, model.configure_optimizers())
    losses = []
    for index, batch in enumerate(data.train_dataloader()):
        loss = model.training_step(batch, index)  # no Trainer: nothing of one is looked up
        fabric.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert len(losses) == 9 and losses[-1] < losses[0]


def test_throughput_is_logged_per_epoch(tmp_path):
    data = small_data()
    run = trainer(tmp_path, max_epochs=1, callbacks=[TrainingThroughput()])
    run.fit(fresh_fm(data), datamodule=data)
    assert run.callback_metrics["train/samples_per_sec"].item() > 0


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "adagrad", "sgd"])
def test_the_optimizer_steps_all_parameters_at_once_with_the_numbers_of_one_by_one(optimizer):
    """Adam and AdamW run fused (one pass over each parameter: the same update, rounded in another order, so one
    step is compared: Adam makes rounding-sized gradients into steps of the learning rate); the others foreach
    (one op for all parameters: the same numbers, bit for bit, step after step)."""
    data = small_data()
    fused = optimizer in ("adam", "adamw")
    batches = list(data.train_dataloader())[: 1 if fused else 4]
    weights = []
    for at_once in (True, False):
        L.seed_everything(7, verbose=False)
        model = NFM(data.schema, embedding_dim=8, optimizer=optimizer, lr=0.05, weight_decay=1e-4)
        step = model.configure_optimizers()
        assert step.defaults["fused" if fused else "foreach"] is True
        if not at_once:
            step = type(step)(model.parameters(), lr=0.05, weight_decay=1e-4, foreach=False)
        for batch in batches:
            step.zero_grad()
            model.loss(model(batch), batch.labels).backward()
            step.step()
        weights.append(torch.cat([parameter.detach().flatten() for parameter in model.parameters()]))
    if fused:
        torch.testing.assert_close(*weights)
    else:
        assert torch.equal(*weights)


def test_training_leaves_every_callback_as_it_was_made(tmp_path):
    class CountsBackward(TrainingThroughput):  # a user's subclass that calls its parent's idle hook
        calls = 0

        def on_after_backward(self, trainer, pl_module):
            super().on_after_backward(trainer, pl_module)
            CountsBackward.calls += 1

    data, counter = small_data(), CountsBackward()
    run = trainer(tmp_path, max_epochs=1, callbacks=[ModelCheckpoint(dirpath=tmp_path), counter],
                  enable_checkpointing=True, enable_model_summary=True)
    run.fit(fresh_fm(data), datamodule=data)
    assert CountsBackward.calls == 9  # 1,050 rows in batches of 128
    for callback in run.callbacks:  # Lightning's own and the user's: no hook replaced on the instance
        assert not [name for name in vars(callback) if name.startswith("on_")], type(callback).__name__


@pytest.mark.filterwarnings("ignore:You requested to overfit")  # Lightning turns shuffling off, and says so
def test_overfit_batches_keeps_the_batch_size(tmp_path):
    data = small_data()
    sizes = StepLosses()
    trainer(tmp_path, max_epochs=1, overfit_batches=2, callbacks=[sizes]).fit(fresh_fm(data), datamodule=data)
    assert sizes.rows == [128, 128]  # Lightning's sequential sampler, batches as configured


class RecordingLogger(Logger):
    name, version = "recording", 0

    def __init__(self):
        super().__init__()
        self.logged: list[tuple[int, dict]] = []

    def log_metrics(self, metrics, step=None):
        self.logged.append((step, metrics))

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class StepLosses(L.Callback):
    def __init__(self):
        self.losses, self.rows = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())
        self.rows.append(len(batch))


def test_the_epoch_loss_is_the_row_weighted_mean_and_step_losses_reach_the_logger_on_its_steps(tmp_path):
    data = small_data(batch_size=256)  # 1,050 training rows: 4 batches of 256 and one of 26
    logger, steps = RecordingLogger(), StepLosses()
    trainer(tmp_path, max_epochs=2, logger=logger, log_every_n_steps=2, callbacks=[steps]).fit(
        fresh_fm(data), datamodule=data)
    epoch_means = [metrics["train/loss_epoch"] for _, metrics in logger.logged if "train/loss_epoch" in metrics]
    for epoch, mean in enumerate(epoch_means):
        losses, rows = steps.losses[5 * epoch: 5 * epoch + 5], steps.rows[5 * epoch: 5 * epoch + 5]
        assert mean == pytest.approx(sum(loss * n for loss, n in zip(losses, rows)) / sum(rows), rel=1e-6)
    assert len(epoch_means) == 2 and steps.rows[:5] == [256, 256, 256, 256, 26]
    logged_steps = {step: metrics["train/loss"] for step, metrics in logger.logged if "train/loss" in metrics}
    assert sorted(logged_steps) == [1, 3, 5, 7, 9]  # every second step (Lightning counts from 0)
    for step, loss in logged_steps.items():
        assert loss == pytest.approx(steps.losses[step], rel=1e-6)


def test_no_step_logging_still_shows_each_epochs_last_loss(tmp_path):
    data, logger = small_data(), RecordingLogger()
    run = trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=0)
    run.fit(fresh_fm(data), datamodule=data)
    assert "train/loss" in run.callback_metrics  # for the progress line
    assert not [metrics for _, metrics in logger.logged if "train/loss" in metrics]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_predictions_are_written_with_row_ids(tmp_path, suffix):
    data = small_data(predict_split="validation")
    model = fresh_fm(data)
    output = tmp_path / f"predictions{suffix}"
    trainer(tmp_path, callbacks=[PredictionWriter(str(output))]).predict(model, datamodule=data,
                                                                          return_predictions=False)
    frame = pd.read_parquet(output) if suffix == ".parquet" else pd.read_csv(output)
    assert sorted(frame.row_id) == list(range(300))
    assert frame.prediction.between(*data.schema.label_range).all()


def test_wandb_mode_never_prompts(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc from `wandb login`
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode() == ("disabled", "from WANDB_MODE")
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_wandb_mode()[0] == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.invalid")
    mode, reason = resolve_wandb_mode(timeout=2)
    assert mode == "offline" and "did not answer" in reason
    (tmp_path / ".netrc").write_text("machine wandb.invalid login user password " + "y" * 40 + "\n")
    (tmp_path / ".netrc").chmod(0o600)
    monkeypatch.delenv("WANDB_API_KEY")
    assert "did not answer" in resolve_wandb_mode(timeout=2)[1]  # the netrc key counts as a login


def test_ifm_predictions_carry_the_attention_of_every_pair(tmp_path):
    from lit_ifm import IFM

    data = small_data(predict_split="validation")
    output = tmp_path / "attention.parquet"
    trainer(tmp_path, callbacks=[PredictionWriter(str(output), with_attention=True)]).predict(
        IFM(data.schema, embedding_dim=8), datamodule=data, return_predictions=False)
    frame = pd.read_parquet(output)
    attention = frame[[name for name in frame.columns if name.startswith("attention:")]]
    assert attention.shape == (300, 45) and "attention:f0-f1" in attention.columns
    assert (attention.sum(axis=1) - 45).abs().max() < 1e-4  # T sums to the row's 45 real pairs


@pytest.mark.slow
def test_field_importance_is_reported_as_csv_and_on_wandb(tmp_path):
    from lit_ifm import IFM
    from lit_ifm.callbacks import FieldImportanceReport
    from lit_ifm.loggers import WandbLogger

    data = small_data()
    logger = WandbLogger(save_dir=str(tmp_path), mode="offline")
    run = trainer(tmp_path, logger=logger, max_epochs=1, callbacks=[FieldImportanceReport()])
    run.fit(IFM(data.schema, embedding_dim=8), datamodule=data)
    logger.experiment.finish()
    table = pd.read_csv(tmp_path / "lit_ifm" / logger.version / "field_pair_importance.csv")  # the run's folder
    assert len(table) == 45 and abs(table.share.sum() - 1) < 1e-6
    assert table.norm.is_monotonic_decreasing
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/images/field_pair_importance_heatmap*.png"))
    assert list(tmp_path.glob("wandb/offline-run-*/files/media/table/field_pair_importance*.json"))


def test_a_checkpoint_loads_without_the_data(tmp_path):
    from lit_ifm import IFM

    data = small_data()
    model = IFM(data.schema, embedding_dim=8)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="ifm")
    trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint]).fit(model, datamodule=data)
    loaded = IFM.load_from_checkpoint(tmp_path / "ifm.ckpt")
    assert loaded.schema == data.schema and loaded.hparams.embedding_dim == 8
    batch = next(iter(data.val_dataloader()))
    torch.testing.assert_close(loaded.eval()(batch), model.eval()(batch))


def test_sparse_embeddings_train_with_adagrad_and_refuse_adam(tmp_path):
    data = small_data()
    def sparse_fm() -> FM:
        L.seed_everything(3, verbose=False)
        return FM(data.schema, embedding_dim=8, optimizer="adagrad", lr=0.05, sparse_embeddings=True, weight_decay=1e-5)

    untrained = trainer(tmp_path).validate(sparse_fm(), datamodule=data, verbose=False)[0]["val/rmse"]
    model = sparse_fm()
    run = trainer(tmp_path, max_epochs=3)
    run.fit(model, datamodule=data)
    assert run.callback_metrics["val/rmse"].item() < untrained - 0.02
    batch = next(iter(data.train_dataloader()))
    model.loss(model(batch), batch.labels).backward()
    assert model.feature_embedding.weight.grad.is_sparse and model.linear.weight.grad.is_sparse
    with pytest.raises(ValueError, match="sparse_embeddings needs optimizer in"):
        FM(data.schema, optimizer="adam", sparse_embeddings=True)


def test_fm_pretraining_initialises_embeddings_and_names_mismatched_shapes(tmp_path):
    from lit_ifm import FFM, IFM

    data = small_data()
    fm = fresh_fm(data)
    checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="fm")
    trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint]).fit(fm, datamodule=data)
    ifm = IFM(data.schema, embedding_dim=8, init_from=str(tmp_path / "fm.ckpt"))
    for name in ("feature_embedding.weight", "linear.weight", "bias"):
        torch.testing.assert_close(ifm.get_parameter(name), fm.get_parameter(name))
    with pytest.raises(ValueError, match=r"feature_embedding.weight in .*fm.ckpt has shape \(211, 8\), this model "
                                         r"expects \(211, 16\)"):
        IFM(data.schema, embedding_dim=16, init_from=str(tmp_path / "fm.ckpt"))
    with pytest.raises(ValueError, match=r"has shape \(211, 8\), this model expects \(211, 80\)"):
        FFM(data.schema, embedding_dim=8, init_from=str(tmp_path / "fm.ckpt"))
    with pytest.raises(CheckpointError, match="init_from: no checkpoint at"):
        IFM(data.schema, init_from=str(tmp_path / "missing.ckpt"))


@pytest.mark.parametrize("name", ["IFM", "INN", "DeepIFM"])
def test_pooled_batch_norm_is_on_from_scratch_and_off_from_fm_and_a_checkpoint_rebuilds_either(tmp_path, name):
    import lit_ifm

    data = small_data()
    model_class = getattr(lit_ifm, name)
    fm_checkpoint = ModelCheckpoint(dirpath=tmp_path, filename="fm")
    trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[fm_checkpoint]).fit(fresh_fm(data),
                                                                                            datamodule=data)
    for init_from, normalised in ((None, True), (str(tmp_path / "fm.ckpt"), False)):
        model = model_class(data.schema, embedding_dim=8, init_from=init_from)
        pooling = model.shortcut if name == "INN" else model.pooling
        assert (pooling.norm is not None) == normalised and model.hparams.pooled_batch_norm == normalised
        checkpoint = ModelCheckpoint(dirpath=tmp_path, filename=f"{name}-{normalised}")
        trainer(tmp_path, max_epochs=1, enable_checkpointing=True, callbacks=[checkpoint]).fit(model, datamodule=data)
        reloaded = model_class.load_from_checkpoint(tmp_path / f"{name}-{normalised}.ckpt")
        assert reloaded.state_dict().keys() == model.state_dict().keys()
    assert model_class(data.schema, embedding_dim=8, init_from=str(tmp_path / "fm.ckpt"),
                       pooled_batch_norm=True).hparams.pooled_batch_norm


def test_attention_columns_need_a_feature_aspect(tmp_path):
    from lit_ifm import IFM

    data = small_data()
    model = IFM(data.schema, embedding_dim=8, variant="field_aspect_only")
    writer = PredictionWriter(str(tmp_path / "p.parquet"), with_attention=True)
    with pytest.raises(ValueError, match="has no per-instance attention"):
        trainer(tmp_path, callbacks=[writer]).predict(model, datamodule=data, return_predictions=False)
