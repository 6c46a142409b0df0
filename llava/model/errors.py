"""The one exception type for problems a user can fix (bad paths, mismatched files)."""


class LlavaLoadError(Exception):
    """A checkpoint folder, adapter or vision tower cannot be loaded; the message says why and how to fix it."""
