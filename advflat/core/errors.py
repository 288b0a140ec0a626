"""The one exception type that user-facing entry points turn into a one-line message."""


class ConfigError(ValueError):
    """A configuration value (or a file it names) is unusable; the message says which and why."""


def first_line(error: BaseException) -> str:
    """The message of ``error`` as one line for a one-line report: an import error's lines
    joined (Hydra's put the reason on the next lines), otherwise the first line (the type's
    name for an empty message)."""
    text = str(error).strip()
    if isinstance(error, ImportError):
        return " ".join(line.strip() for line in text.splitlines() if line.strip())
    return text.splitlines()[0] if text else type(error).__name__
