"""The loader's user error (bad paths, mismatched files); see :mod:`robustmerge.errors`."""
from robustmerge.errors import UserError


class LlavaLoadError(UserError):
    """A checkpoint folder, adapter or vision tower cannot be loaded; the message says why and how to fix it."""
