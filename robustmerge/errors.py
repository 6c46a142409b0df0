"""The one exception type a user can cause; CLIs turn it into exit status 2."""


class MergeInputError(Exception):
    """Bad input to a merge: names the file (or folder) and says what to do about it."""
