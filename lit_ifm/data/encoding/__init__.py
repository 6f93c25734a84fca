"""How values become ids: one :class:`~lit_ifm.data.encoding.encoder.Encoder` protocol, followed by the libFM
encoder (:mod:`.libfm`) and the table encoder (:mod:`.tables`), with their pieces: text to positions
(:mod:`.words`), numbers (:mod:`.numbers`), the labels' mapping (:mod:`.labels`), negative sampling
(:mod:`.negatives`) and the report of what encoding changed (:mod:`.report`)."""

from __future__ import annotations

from dataclasses import asdict

from lit_ifm.data.encoding.encoder import Encoder, fingerprint, vocabulary_fingerprint
from lit_ifm.data.encoding.labels import LabelRule
from lit_ifm.data.encoding.libfm import LibFMEncoder
from lit_ifm.data.encoding.negatives import ItemTable
from lit_ifm.data.encoding.report import EncodingReport
from lit_ifm.data.encoding.tables import TableEncoder

__all__ = ["Encoder", "EncodingReport", "ItemTable", "LabelRule", "LibFMEncoder", "TableEncoder", "encoder_from_state",
           "encoding_state", "fingerprint", "vocabulary_fingerprint"]
_ENCODERS = {"table": TableEncoder, "libfm": LibFMEncoder}


def encoding_state(encoder: Encoder, labels: LabelRule, items: ItemTable | None = None) -> dict:
    """Everything that turns raw rows into a model's ids and labels, as a checkpoint keeps it: the encoder's
    vocabularies and rules (``encoder``), the labels' mapping (``labels``) and, when the data names its item
    fields, every training item with its attributes (``items``, for recommending)."""
    state = {"encoder": encoder.state_dict(), "labels": asdict(labels)}
    if items is not None:
        state["items"] = items.state_dict()
    return state


def encoder_from_state(state: dict, report: EncodingReport | None = None,
                       columns: list[str] | tuple[str, ...] | None = None) -> Encoder:
    """The encoder an :func:`encoding_state` describes, ready to encode new rows. With ``columns`` (those of the new
    rows), a table's label column is read only where they hold it: rows to predict need none."""
    encoder = _ENCODERS[state["encoder"]["kind"]].from_state_dict(state["encoder"], report)
    if columns is not None and isinstance(encoder, TableEncoder) and encoder.label not in columns:
        encoder.label = None
    return encoder
