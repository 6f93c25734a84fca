"""Messages from the libraries under lit_ifm that are known to be harmless, silenced one by one at their source.

Each filter matches one message of one library, so anything else they say still shows.
"""

from __future__ import annotations

import logging
import warnings

# Lightning 2.6 advertises its own logging service on every run, through its rank-zero logger.
_LITLOGGER_TIP = "💡 Tip: For seamless cloud logging and experiment tracking"


def _not_the_litlogger_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_LITLOGGER_TIP)


def silence_known_noise() -> None:
    """Silences, for this process: Lightning's litlogger tip, and the ``FutureWarning`` that torch >= 2.9 raises
    for Lightning 2.6's ``isinstance(treespec, LeafSpec)`` (twice a run, inside Lightning; nothing a user can
    change). W&B's "anonymous setting" warning is avoided in :class:`lit_ifm.loggers.WandbLogger` itself, and
    "dirpath has changed" by :class:`~lit_ifm.models.FieldAwareModel` not restoring callbacks when it evaluates.
    Calling it again adds nothing."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _not_the_litlogger_tip not in logger.filters:
        logger.addFilter(_not_the_litlogger_tip)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
