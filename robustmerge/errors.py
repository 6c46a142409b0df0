"""User errors: one exception hierarchy and one CLI wrapper for every command of the project.

A *user error* is a problem the person running a command can fix (a wrong path, a corrupt or
mismatched file, a bad parameter). Its message names the file (or flag) and the fix. Every
such exception derives from :class:`UserError`; :func:`cli_main` turns one into a single
``error: ...`` line on stderr and exit status 2, without a traceback. Anything else is a bug
and keeps its traceback.

Every ``main()`` of the project is written as ``return cli_main(lambda: _run(argv), prog=...)``
so a new command cannot forget the rule.
"""
from __future__ import annotations

import sys
from typing import Callable

#: the exit status of a command stopped by a user error
USER_ERROR_EXIT = 2


class UserError(Exception):
    """A problem the user can fix; the message names the file (or flag) and the fix."""


class MergeInputError(UserError):
    """Bad input to a merge: names the file (or folder) and says what to do about it."""


def cli_main(run: Callable[[], object], prog: str | None = None) -> int:
    """Call ``run()`` and return its exit status: its return value when that is an ``int``, else 0.

    A :class:`UserError` becomes one line on stderr, ``"<prog>: error: <message>"`` (or
    ``"error: <message>"`` without ``prog``), and exit status 2.
    """
    try:
        status = run()
        return status if isinstance(status, int) else 0
    except UserError as exc:
        prefix = f"{prog}: error: " if prog else "error: "
        print(prefix + " ".join(str(exc).split("\n")), file=sys.stderr)
        return USER_ERROR_EXIT


class OutputError(UserError):
    """The output cannot be written as asked: another run holds it, it appeared meanwhile,
    it is a symbolic link, or its folder is not writable / full. Names the path and the fix."""
