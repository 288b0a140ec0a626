"""The one exception type that user-facing entry points turn into a one-line message."""


class ConfigError(ValueError):
    """A configuration value (or a file it names) is unusable; the message says which and why."""
