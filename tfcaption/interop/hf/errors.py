"""The two ways reading a Hub checkpoint fails, each a one-line message a user can act on."""

__all__ = ["HubCheckpointError", "HubFilesNotFoundError"]


class HubCheckpointError(ValueError):
    """A checkpoint's files are there but do not say what tfcaption needs (an unknown architecture, a missing
    tensor, a malformed JSON file); the message is one line naming the file and what is wrong."""


class HubFilesNotFoundError(FileNotFoundError):
    """A checkpoint's files are neither in the directory nor in the Hugging Face cache and cannot be fetched;
    the message is one line saying which files to put where."""
