"""Scoring raw rows with a model: encoded as its training data was (the encoder its schema carries), then run in
batches. ``FieldAwareModel.score`` calls :func:`score`."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch

from lit_ifm.data.batch import FieldBatch
from lit_ifm.data.encoding import Encoder, EncodingReport, encoder_from_state
from lit_ifm.data.rows.readers import rows_of
from lit_ifm.data.rows.splits import SCORED, SplitOrigin
from lit_ifm.errors import CheckpointError

log = logging.getLogger("lit_ifm")
CHUNK_ROWS = 1 << 16  # rows encoded at once when scoring


def encoder_of(model, report: EncodingReport | None = None, columns: tuple[str, ...] | None = None) -> Encoder:
    """The encoder the model's data was encoded with (from its checkpoint or its data module); see
    :func:`~lit_ifm.data.encoding.encoder_from_state` for ``columns``."""
    if model.schema.encoding is None:
        raise CheckpointError(f"{type(model).__name__} has no encoder: its checkpoint was written before checkpoints "
                              "carried one, or its schema was built by hand; retrain it, or score a data module's "
                              "split with `python -m lit_ifm predict`")
    return encoder_from_state(model.schema.encoding, report, columns)


def encoded_rows(model, rows, report: EncodingReport | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Ids ``(n, S)`` and values ``(n, S)`` of ``rows`` (see :func:`~lit_ifm.data.rows.readers.rows_of`), chunk by
    chunk, encoded as the model's training data was: values unseen in training map to their field's
    out-of-vocabulary id and are counted in ``report``. A label column is not needed."""
    source, name = rows_of(rows)
    encoder = encoder_of(model, report, columns=())  # scoring reads no labels
    encoder.check_columns(source.column_names, name)
    origin = SplitOrigin(name)
    first_row = 0
    for chunk in source.chunks(CHUNK_ROWS, encoder.encoded_columns):
        ids, values, _ = encoder.encode(chunk, origin, first_row, SCORED)
        first_row += len(ids)
        yield ids, values


def score(model, rows, batch_size: int = 4096) -> np.ndarray:
    """Probabilities (binary) or values (regression) of ``rows``, one per row, as ``predict`` gives them."""
    report = EncodingReport()
    scores = [scores_of_ids(model, ids, values, batch_size) for ids, values in encoded_rows(model, rows, report)]
    unseen = {name: count for (split, name), count in report.unseen_values.items() if count}
    if unseen:
        log.info("lit_ifm: values unseen in training, read as out-of-vocabulary ids: %s",
                 ", ".join(f"{name} {count}" for name, count in unseen.items()))
    return np.concatenate(scores) if scores else np.empty(0, dtype=np.float32)


@torch.no_grad()
def scores_of_ids(model, ids: np.ndarray, values: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The model's predictions of encoded rows, ``batch_size`` rows a forward pass."""
    if model.training:
        raise RuntimeError("score a model in evaluation mode (model.eval()): dropout and batch norm train otherwise")
    device = next(model.parameters()).device
    ids, values = torch.from_numpy(np.ascontiguousarray(ids, dtype=np.int64)), torch.from_numpy(values)
    unit = not values.numel() or bool((values == 1).all())
    out = []
    for start in range(0, len(ids), batch_size):
        batch_ids = ids[start: start + batch_size].to(device)
        batch = FieldBatch(batch_ids, values[start: start + batch_size].to(device),
                           torch.zeros(len(batch_ids), device=device), torch.arange(len(batch_ids), device=device), unit)
        out.append(model.predictions(model(batch)).cpu().numpy())
    return np.concatenate(out) if out else np.empty(0, dtype=np.float32)

