"""Error types. Every error a user can cause names the file or value at fault and what is wrong, in one line."""


def reason(e: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none), for a one-line error."""
    return str(e).splitlines()[0] if str(e) else type(e).__name__


class BnnclError(Exception):
    """Base class: the CLI prints these as one line and exits with status 2."""


class DataError(BnnclError):
    """A dataset file is missing, truncated or inconsistent, or a dataset option is invalid."""


class CheckpointError(BnnclError):
    """A checkpoint is unreadable, corrupt, or was made for another architecture."""


class ConfigError(BnnclError):
    """An option or configuration value is invalid (unknown name, out of range)."""


class ModelFileError(BnnclError):
    """A device model file is missing, truncated, corrupt, altered, or from a newer bnncl."""


class LearnerStateError(BnnclError):
    """A device learner's state file is missing, truncated, corrupt, or belongs to another model or settings."""


class OutputError(BnnclError):
    """An output cannot be written there (a directory, a parent that is a file, a read-only file system), or writing
    it would overwrite an input or a file of another kind."""
