"""Errors the command line reports as a message (no traceback): each says what happened and what was kept."""


class TrainingError(RuntimeError):
    """Training stopped; the message says why and what was kept."""


class EmbeddingIndexError(ValueError):
    """A missing, corrupt or mismatched search index; the message names the file and the problem."""


class CaptionerError(ValueError):
    """A captioner that cannot be used as asked; the message says why."""
