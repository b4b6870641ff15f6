"""Errors that carry a message meant for the user: the CLI prints them without a traceback."""


class SaescopeError(Exception):
    """A problem with the user's input or files, described in one line with how to fix it."""


class ConfigError(SaescopeError, ValueError):
    """An impossible configuration (k > d_sae, negative learning rate, ...)."""


class FormatError(SaescopeError):
    """A file that is missing, corrupt, of an unknown format or of an unknown schema version."""


class DataError(SaescopeError):
    """Activations that cannot be used: wrong width, NaN/inf values, an empty store."""
