"""The LightningModule every lit_ifm model subclasses: it owns all but the interaction part."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
import torchmetrics
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics.utilities import dim_zero_cat

from lit_ifm.checkpoints import ENCODING_KEY, MODEL_KEY, SCHEMA_KEY, read_checkpoint
from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.schema import FieldSchema
from lit_ifm.errors import CheckpointError, ConfigError
from lit_ifm.layers import embedding_rows
from lit_ifm.metrics import Ranking
from lit_ifm.models.fitting import check_fits, check_schema
from lit_ifm.models.footprint import check_parameter_memory
from lit_ifm.models.recommend import recommend
from lit_ifm.models.scoring import score

Task = Literal["regression", "binary"]
OptimizerName = Literal["adam", "adamw", "adagrad", "sgd"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]  # torch.compile's
_OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "adagrad": torch.optim.Adagrad, "sgd": torch.optim.SGD}
_SPARSE_OPTIMIZERS = ("adagrad", "sgd")
_FUSED_OPTIMIZERS = ("adam", "adamw")


class FieldAwareModel(L.LightningModule):
    """Shared base: feature embeddings V, linear term w and bias w0, loss, metrics, optimizer,
    L2 regularisation and prediction. A model defines only :meth:`interaction`, the pair-wise part;
    the prediction is ``w0 + sum_i w_i x_i + interaction(batch)`` (the paper's Eq. 2 and 9).

    ``forward`` returns raw scores: values for ``regression``, logits for ``binary``.

    Args:
        schema: the data's fields and sizes, linked from ``FieldAwareDataModule.schema`` by the CLI.
        task: ``regression`` (MSE loss, RMSE) or ``binary`` (BCE loss; AUROC, log loss, RMSE).
        embedding_dim: K, the size of every feature's latent vector V_i.
        optimizer: ``adam``, ``adamw``, ``adagrad`` or ``sgd``.
        lr: learning rate.
        weight_decay: the optimizer's weight decay.
        sparse_embeddings: sparse gradients for V and w, so an optimizer step touches only the rows of a
            batch (``adagrad`` or ``sgd`` only; torch's Adam has no sparse update).
        l2_regularization: lambda per parameter-name prefix, e.g. ``{"field_aspect": 0.01}``: adds
            ``lambda * ||p||^2`` of every matching parameter to the training loss.
        interaction_dropout: dropout on the pair-wise interaction layer.
        clip_predictions: clip regression predictions to the training labels' range before the
            metrics (the reference code's protocol).
        init_from: an FM checkpoint whose feature embeddings, linear terms and bias initialise this
            model (the paper's FM pre-training).
        compile: ``torch.compile`` the forward pass in this mode (``reduce-overhead`` adds CUDA graphs on a
            GPU): fewer, fused kernels per step, after the first steps, and the first of each evaluation, have
            waited for the compiler. ``None``: eager. A checkpoint keeps the setting:
            ``load_from_checkpoint(path, compile=None)`` loads it eager.
        ranking: how test rows form ranked lists, linked from ``FieldAwareDataModule.ranking`` by the CLI
            (``--data.ranking_field``): ``test`` then also reports NDCG@K, HR@K, MRR and the grouped AUC
            (:mod:`lit_ifm.metrics`). A setting of the evaluation, not of the model: checkpoints do not keep it.
    """

    def __init__(
        self,
        schema: FieldSchema,
        task: Task = "regression",
        embedding_dim: int = 64,
        optimizer: OptimizerName = "adam",
        lr: float = 0.01,
        weight_decay: float = 0.0,
        sparse_embeddings: bool = False,
        l2_regularization: dict[str, float] | None = None,
        interaction_dropout: float = 0.0,
        clip_predictions: bool = True,
        init_from: str | None = None,
        compile: CompileMode | None = None,
        ranking: Ranking | None = None,
    ):
        super().__init__()
        if embedding_dim < 1:
            raise ConfigError(f"embedding_dim must be at least 1, got {embedding_dim}")
        if not lr > 0:
            raise ConfigError(f"lr must be above 0, got {lr}")
        if weight_decay < 0:
            raise ConfigError(f"weight_decay must be 0 or more, got {weight_decay}")
        if not 0 <= interaction_dropout < 1:
            raise ConfigError(f"interaction_dropout must be in [0, 1), got {interaction_dropout}")
        if sparse_embeddings and optimizer not in _SPARSE_OPTIMIZERS:
            raise ConfigError(f"sparse_embeddings needs optimizer in {_SPARSE_OPTIMIZERS}, got {optimizer!r}: torch's "
                              "Adam and AdamW have no sparse update; use --model.optimizer adagrad, or drop "
                              "sparse_embeddings")
        # The schema comes from the data (the CLI links it) and travels in checkpoints on its own key;
        # init_from is a one-off start, not part of the model (a checkpoint must load without that file).
        # The CLI logs the whole resolved config, so nothing goes to the logger from here.
        self.save_hyperparameters(ignore=["schema", "init_from", "ranking"], logger=False)
        self.schema = schema
        self.task = task
        self.embedding_dim = embedding_dim
        rows = schema.num_features + 1  # + the padding row
        width = self.feature_embedding_width(schema, embedding_dim)
        check_parameter_memory(type(self).__name__, rows, width + 1)  # V and w, before allocating them
        self.feature_embedding = nn.Embedding(rows, width, padding_idx=schema.padding_id, sparse=sparse_embeddings)
        self.linear = nn.Embedding(rows, 1, padding_idx=schema.padding_id, sparse=sparse_embeddings)
        self.bias = nn.Parameter(torch.zeros(1))
        nn.init.normal_(self.feature_embedding.weight, std=0.01)
        nn.init.zeros_(self.linear.weight)
        with torch.no_grad():
            self.feature_embedding.weight[schema.padding_id].zero_()
        self.interaction_dropout = nn.Dropout(interaction_dropout)
        self.register_buffer("slot_fields", torch.tensor(schema.slot_fields), persistent=False)
        self.val_metrics = self._make_metrics("val/")
        self.test_metrics = self._make_metrics("test/")
        self.ranking = ranking
        self.ranking_slot = ranking.slot(schema) if ranking is not None else None
        self.ranking_metrics = nn.ModuleDict(ranking.metrics() if ranking is not None else {})
        self._epoch_loss_sum: Tensor | None = None  # the training loss summed over the epoch's rows so far
        self._epoch_rows = 0
        self._undefined_auroc_said: set[str] = set()
        self._compiled_scores = None  # torch.compile(self.scores), made on the first forward
        self.pretrained_from = init_from  # not saved; defaults that follow it are (keep_resolved_hparams)
        if init_from is not None:
            self.load_pretrained(init_from)

    # --- what a model defines -----------------------------------------------------------------------

    def interaction(self, batch: FieldBatch) -> Tensor:
        """The pair-wise interaction part, ``(B,)``."""
        raise NotImplementedError(f"{type(self).__name__} must define interaction(batch)")

    @classmethod
    def feature_embedding_width(cls, schema: FieldSchema, embedding_dim: int) -> int:
        """Columns of the feature table V: K (FFM keeps one K-vector per field)."""
        return embedding_dim

    # --- shared building blocks ---------------------------------------------------------------------

    def embed(self, batch: FieldBatch) -> Tensor:
        """``V_i x_i`` for every slot, ``(B, S, K)``; empty slots are zero."""
        rows = embedding_rows(self.feature_embedding, batch.feature_ids)
        return rows if batch.unit_values else rows * batch.feature_values.unsqueeze(-1)

    def linear_term(self, batch: FieldBatch) -> Tensor:
        """``w0 + sum_i w_i x_i``, ``(B,)``."""
        weights = embedding_rows(self.linear, batch.feature_ids).squeeze(-1)
        return self.bias + (weights if batch.unit_values else weights * batch.feature_values).sum(dim=1)

    def scores(self, batch: FieldBatch) -> Tensor:
        """``w0 + sum_i w_i x_i + interaction(batch)``, ``(B,)``: what ``forward`` computes, compiled or not."""
        return self.linear_term(batch) + self.interaction(batch)

    def forward(self, batch: FieldBatch) -> Tensor:
        if self.hparams.get("compile") is None:
            return self.scores(batch)
        if self._compiled_scores is None:
            self._compiled_scores = torch.compile(self.scores, mode=self.hparams.compile)
        # a copy: with CUDA graphs (reduce-overhead) the output is a buffer the next call overwrites
        return self._compiled_scores(batch).clone()

    def __getstate__(self) -> dict:
        # a compiled function does not pickle (a spawned DDP rank, a deep copy): it is made again on first use
        return {**super().__getstate__(), "_compiled_scores": None}

    def _attached_trainer(self) -> L.Trainer | None:
        """The Trainer running this model, or None outside of one (``self.trainer`` raises there, and under Fabric
        gives a stand-in without the Trainer's settings)."""
        if self.fabric is not None:
            return None
        try:
            return self.trainer
        except RuntimeError:
            return None

    def num_parameters(self) -> int:
        """Trainable parameters, the padding rows of the embedding tables excluded (the paper's count)."""
        padding_rows = sum(table.embedding_dim for table in (self.feature_embedding, self.linear))
        return sum(p.numel() for p in self.parameters() if p.requires_grad) - padding_rows

    # --- loss, metrics, steps -----------------------------------------------------------------------

    def loss(self, scores: Tensor, labels: Tensor) -> Tensor:
        """The training loss of raw scores: binary cross-entropy on logits for ``binary``, MSE for ``regression``."""
        scores = scores.float()
        if self.task == "binary":
            return F.binary_cross_entropy_with_logits(scores, labels)
        return F.mse_loss(scores, labels)

    def regularization(self) -> Tensor:
        """``sum lambda * ||p||^2`` over the parameters ``l2_regularization`` names by prefix."""
        penalty = self.bias.new_zeros(())
        for prefix, strength in (self.hparams.l2_regularization or {}).items():
            for name, parameter in self.named_parameters():
                if name.startswith(prefix):
                    penalty = penalty + strength * parameter.float().pow(2).sum()
        return penalty

    def predictions(self, scores: Tensor) -> Tensor:
        """Scores as the metrics see them: probabilities for binary, clipped values for regression."""
        scores = scores.float()
        if self.task == "binary":
            return torch.sigmoid(scores)
        if self.hparams.clip_predictions:
            return scores.clamp(*self.schema.label_range)
        return scores

    def training_step(self, batch: FieldBatch, batch_idx: int) -> Tensor:
        loss = self.loss(self(batch), batch.labels)
        self._add_to_epoch_loss(loss, len(batch))
        self._log_training_loss(loss, len(batch), batch_idx)
        return loss + self.regularization() if self.hparams.l2_regularization else loss

    def _add_to_epoch_loss(self, loss: Tensor, rows: int) -> None:
        """Adds a step's loss times its rows to the epoch's sum, kept on the device."""
        weighted = loss.detach().float() * rows
        self._epoch_loss_sum = weighted if self._epoch_loss_sum is None else self._epoch_loss_sum + weighted
        self._epoch_rows += rows

    def _log_training_loss(self, loss: Tensor, rows: int, batch_idx: int) -> None:
        # self.log has a fixed cost per call that can exceed a small model's whole step, so the step's loss is
        # logged only on the steps the logger writes (every log_every_n_steps) and on an epoch's last (for the
        # progress line); the epoch's mean is summed on the device and logged once (on_train_epoch_end).
        trainer = self._attached_trainer()
        if trainer is None:
            return
        every = trainer.log_every_n_steps  # 0: the logger writes no step's metrics
        if (every and (trainer.global_step + 1) % every == 0) or trainer.should_stop \
                or batch_idx + 1 >= trainer.num_training_batches:
            self.log("train/loss", loss, prog_bar=True, batch_size=rows)

    def on_train_epoch_end(self) -> None:
        if self._epoch_rows:
            self.log("train/loss_epoch", self._epoch_loss_sum / self._epoch_rows, sync_dist=True)
        self._epoch_loss_sum, self._epoch_rows = None, 0

    def validation_step(self, batch: FieldBatch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val/")

    def test_step(self, batch: FieldBatch, batch_idx: int) -> None:
        scores = self._evaluate(batch, self.test_metrics, "test/")
        if self.ranking is not None:
            self._rank(batch, scores)

    def _rank(self, batch: FieldBatch, scores: Tensor) -> None:
        """Updates the ranking metrics with the batch's rows, grouped by the ranking field's id (or, in the sampled
        protocol, by their list); rows whose value was unseen in training (its out-of-vocabulary id) belong to no
        one list and are left out."""
        if self.ranking.negatives:
            groups = self.ranking.groups(batch.row_ids)
            known = torch.ones_like(groups, dtype=torch.bool)
        else:
            groups = batch.feature_ids[:, self.ranking_slot]
            known = groups != self.schema.fields[self.schema.field_names.index(self.ranking.field)].oov_id
        # ranked by a positive monotone map of the scores: torchmetrics' MRR counts no row scored <= 0 as retrieved
        scores, relevant, groups = torch.sigmoid(scores[known].double()), batch.labels[known] > 0, groups[known]
        for name, metric in self.ranking_metrics.items():
            metric.update(scores, relevant, indexes=groups)
            self.log(f"test/{name}", metric, batch_size=len(batch))

    def predict_step(self, batch: FieldBatch, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        return {"row_id": batch.row_ids, "prediction": self.predictions(self(batch))}

    def _evaluate(self, batch: FieldBatch, metrics: nn.ModuleDict, prefix: str) -> Tensor:
        scores = self(batch).float()
        self.log(f"{prefix}loss", self.loss(scores, batch.labels), batch_size=len(batch), sync_dist=True)
        predictions = self.predictions(scores)
        for name, metric in metrics.items():
            metric.update(scores if name == "logloss" else predictions, batch.labels)
            if name != "auroc":  # logged at the epoch's end, when defined
                self.log(f"{prefix}{name}", metric, batch_size=len(batch), prog_bar=name == "rmse")
        return scores

    def on_validation_epoch_end(self) -> None:
        self._log_auroc(self.val_metrics, "val/")

    def on_test_epoch_end(self) -> None:
        self._log_auroc(self.test_metrics, "test/")

    def _log_auroc(self, metrics: nn.ModuleDict, prefix: str) -> None:
        """Logs the epoch's AUROC (all ranks' rows), or, where the split's labels are all of one class and AUROC is
        undefined, leaves it out and says so once: the best checkpoint and early stopping then follow the loss."""
        if "auroc" not in metrics:
            return
        value = metrics["auroc"].compute()
        metrics["auroc"].reset()
        if not torch.isnan(value):
            self.log(f"{prefix}auroc", value, prog_bar=True, sync_dist=True)  # the same on every rank: all ranks' rows
        elif prefix not in self._undefined_auroc_said:
            self._undefined_auroc_said.add(prefix)
            rank_zero_info(f"{prefix}auroc is undefined: every {prefix[:-1]} label is of one class; it is not "
                           f"reported, and {prefix}loss stands in for it")

    # --- using a trained model ---------------------------------------------------------------------------

    def score(self, rows, batch_size: int = 4096):
        """Probabilities (binary) or values (regression) of raw ``rows``, encoded as the training data was: a file
        path, a pandas DataFrame, a list of dicts or a ``datasets.Dataset`` with the field spec's columns (a label
        column is not needed). Values unseen in training read as their field's out-of-vocabulary id. Returns a
        numpy array, one score per row, equal to what ``python -m lit_ifm predict`` writes for them.
        """
        return score(self, rows, batch_size)

    def recommend(self, context: dict, candidates: list | None = None, k: int = 10, with_attention: bool = False):
        """The ``k`` best items for one ``context`` (a row as a dict, without the item fields), best first, as a list
        of :class:`~lit_ifm.models.recommend.Recommendation` (item, score and, with ``with_attention`` for the IFM
        family, the attention per field pair). ``candidates``: item values to rank (default: every training
        item); each comes with its own item-side fields. All candidates are scored in one batched call.
        See :func:`lit_ifm.models.recommend.recommend`.
        """
        return recommend(self, context, candidates, k, with_attention)

    def default_monitor(self) -> str:
        """The validation metric that picks the best epoch and stops training early unless another is chosen:
        ``val/auroc`` for a binary task, ``val/rmse`` for regression."""
        return "val/auroc" if self.task == "binary" else "val/rmse"

    def validation_metrics(self) -> list[str]:
        """The names of the validation metrics this model logs, its loss included."""
        return ["val/loss", *(f"val/{name}" for name in self.val_metrics)]

    def metric_mode(self, name: str) -> Literal["min", "max"] | None:
        """``max`` when a higher value of the validation metric ``name`` is better, ``min`` when a lower one is
        (torchmetrics' ``higher_is_better``), ``None`` when the model does not log it.

        >>> from lit_ifm.data.synthetic import synthetic_schema
        >>> model = FieldAwareModel(synthetic_schema(), task="binary")
        >>> model.metric_mode("val/auroc"), model.metric_mode("val/logloss"), model.metric_mode("val/accuracy")
        ('max', 'min', None)
        """
        if name == "val/loss":
            return "min"
        metric = self.val_metrics[name[4:]] if name.startswith("val/") and name[4:] in self.val_metrics else None
        if metric is None or metric.higher_is_better is None:
            return None
        return "max" if metric.higher_is_better else "min"

    def _make_metrics(self, prefix: str) -> nn.ModuleDict:
        metrics = {"rmse": torchmetrics.MeanSquaredError(squared=False)}
        if self.task == "binary":
            metrics["auroc"] = DefinedAUROC()
            metrics["logloss"] = LogLoss()
        return nn.ModuleDict(metrics)

    # --- optimisation -------------------------------------------------------------------------------

    def configure_optimizers(self) -> torch.optim.Optimizer:
        self._check_regularization_names()
        if self.feature_embedding.weight.device.type == "cpu":  # the check reads the host's memory
            check_parameter_memory(type(self).__name__, self.feature_embedding.num_embeddings,
                                   self.feature_embedding.embedding_dim + 1, self.hparams.optimizer,
                                   self.hparams.sparse_embeddings)
        optimizer = _OPTIMIZERS[self.hparams.optimizer]
        parameters = [p for p in self.parameters() if p.requires_grad]
        if self.hparams.sparse_embeddings:
            # Explicitly keep torch's default (no invariant checks on sparse gradients), which it otherwise
            # announces with a warning on every run.
            torch.sparse.check_sparse_tensor_invariants.disable()
            # torch's sparse Adagrad/SGD reject weight decay on sparse gradients: decay the dense rest only.
            sparse = {id(self.feature_embedding.weight), id(self.linear.weight)}
            groups = [
                {"params": [p for p in parameters if id(p) in sparse], "weight_decay": 0.0},
                {"params": [p for p in parameters if id(p) not in sparse]},
            ]
            return optimizer(groups, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        # Adam's fused kernel makes one pass over each parameter (foreach, on a CPU, is a loop of one op per
        # parameter); foreach: one kernel per op for all parameters (torch's default on CUDA only).
        # Lightning refuses to clip the gradients of a fused optimizer under mixed precision (it unscales them
        # itself), so gradient clipping keeps foreach.
        trainer = self._attached_trainer()
        clipping = trainer is not None and bool(trainer.gradient_clip_val)
        if (self.hparams.optimizer in _FUSED_OPTIMIZERS and not clipping
                and all(p.device.type in ("cpu", "cuda") for p in parameters)):
            return optimizer(parameters, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, fused=True)
        return optimizer(parameters, lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, foreach=True)

    def _check_regularization_names(self) -> None:
        names = [name for name, _ in self.named_parameters()]
        for prefix in self.hparams.l2_regularization or {}:
            if not any(name.startswith(prefix) for name in names):
                raise ValueError(f"l2_regularization names {prefix!r}, which matches no parameter of "
                                 f"{type(self).__name__}; its parameters are {names}")

    # --- checkpoints ----------------------------------------------------------------------------------

    def keep_resolved_hparams(self, **settings) -> None:
        """Saves defaults that ``__init__`` resolved (``None`` made concrete) in place of what was given, so that a
        checkpoint rebuilds the same model: LightningCLI records its config's values as given, not ``__init__``'s
        locals, and ``init_from``, which some defaults follow, is not saved."""
        self.hparams.update(settings)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[SCHEMA_KEY] = self.schema.without_encoding()
        checkpoint[MODEL_KEY] = f"{type(self).__module__}.{type(self).__qualname__}"
        if self.schema.encoding is not None:  # how raw rows become this model's ids: scoring new rows needs it
            checkpoint[ENCODING_KEY] = self.schema.encoding

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # The trainer restores a checkpoint (test, predict, validate, resumed fit) into a model built for the data
        # at hand: refuse one of another class, task, data or size before its weights go in.
        trainer = self._attached_trainer()
        check_fits(checkpoint, (trainer.ckpt_path if trainer is not None else None) or "the checkpoint", self)
        if trainer is not None and trainer.state.fn != "fit":  # evaluating does not continue the run's callbacks
            checkpoint.pop("callbacks", None)  # (a ModelCheckpoint would warn that its folder changed)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             weights_only: bool = True, **kwargs):
        """Lightning's loader, with the schema (and the encoder) taken from the checkpoint unless given, and no code
        of the file run (``weights_only``)."""
        if "schema" not in kwargs:
            checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
            if SCHEMA_KEY in checkpoint:  # else an older checkpoint, with the schema in its hyper-parameters
                kwargs["schema"] = checkpoint[SCHEMA_KEY]
                kwargs["schema"].encoding = checkpoint.get(ENCODING_KEY)
        return super().load_from_checkpoint(checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs)

    # --- FM pre-training ----------------------------------------------------------------------------

    def load_pretrained(self, checkpoint_path: str | Path) -> None:
        """Copy the feature embeddings, linear terms and bias of a checkpoint (an FM's) into this model."""
        path = Path(checkpoint_path)
        checkpoint = read_checkpoint(path, "init_from")
        check_schema(checkpoint, path, self.schema, "init_from")
        state = checkpoint["state_dict"]
        for name in ("feature_embedding.weight", "linear.weight", "bias"):
            own = self.get_parameter(name)
            if name not in state:
                raise CheckpointError(f"init_from: {path} has no {name!r}; found {sorted(state)}")
            if state[name].shape != own.shape:
                raise CheckpointError(f"init_from: {name} in {path} has shape {tuple(state[name].shape)}, "
                                      f"this model expects {tuple(own.shape)} (same data, schema and embedding_dim?)")
            with torch.no_grad():
                own.copy_(state[name])


class LogLoss(torchmetrics.MeanMetric):
    """Mean binary cross-entropy of logits against 0/1 labels."""

    higher_is_better = False

    def update(self, logits: Tensor, labels: Tensor) -> None:  # type: ignore[override]
        super().update(F.binary_cross_entropy_with_logits(logits.float(), labels, reduction="none"))


class DefinedAUROC(torchmetrics.classification.BinaryAUROC):
    """AUROC of probabilities against 0/1 labels, NaN where it is undefined (labels of one class only), where
    torchmetrics answers 0 with a warning."""

    def compute(self) -> Tensor:
        # a list of batches' labels, or one tensor of every rank's once synced (DDP)
        target = self.target
        labels = dim_zero_cat(target) if isinstance(target, Tensor) or target else torch.empty(0)
        if labels.numel() == 0 or bool((labels == labels[0]).all()):
            return torch.tensor(float("nan"))
        return super().compute()
