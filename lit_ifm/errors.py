"""The mistakes lit_ifm reports to a user as one line: ``python -m lit_ifm`` prints ``lit-ifm: error: <message>``
and exits with code 2 for any of them, so each message says what was wrong, where, and what to do instead."""

from __future__ import annotations

__all__ = ["CheckpointError", "ConfigError", "DataError", "TrainingDiverged", "UserError"]


class UserError(ValueError):
    """A mistake in what the user gave (data, checkpoint, configuration), or a run that cannot go on."""


class DataError(UserError):
    """Bad input data: the message names the file, line or column and what was expected."""


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, or does not fit the model or the data it is used with."""


class ConfigError(UserError):
    """Settings that contradict each other, or ask for more than the machine has."""


class TrainingDiverged(UserError):
    """The training loss or a validation metric became NaN or infinite."""
