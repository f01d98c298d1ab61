"""The exceptions that NeuAvatar raises on purpose.

Every message is written for the person who ran the command: it names the input, says what is
wrong with it and, where there is one, what to do instead. The CLI prints them without a
traceback; anything else that escapes is a bug.
"""

from __future__ import annotations

__all__ = ["NeuAvatarError", "InputError", "ConfigError", "DatasetError", "CheckpointError", "OutputExistsError"]


class NeuAvatarError(Exception):
    """Base class of the errors that NeuAvatar reports to its user."""


class InputError(NeuAvatarError, ValueError):
    """An input file cannot be used: missing, corrupt, truncated, unsupported or unsuitable."""


class ConfigError(NeuAvatarError, ValueError):
    """A configuration value, file or environment variable is invalid."""


class DatasetError(NeuAvatarError, ValueError):
    """A dataset directory is missing, incomplete, or of a version this code cannot read."""


class CheckpointError(NeuAvatarError, ValueError):
    """An avatar checkpoint is missing, damaged, or of a format or version this code cannot read."""


class OutputExistsError(NeuAvatarError, FileExistsError):
    """The output location already holds something that must not be overwritten."""
