"""``python -m llava.eval.scorers.pope``: the POPE scorer's own entry point, flags as before
(the task lives in ``llava/eval/tasks/pope/``; this is ``--task POPE`` of :mod:`llava.eval.scorers.__main__`)."""

import sys

from llava.eval.scorers.__main__ import run_task
from robustmerge.errors import cli_main


def main(argv: list[str] | None = None) -> int:
    return cli_main(lambda: run_task("POPE", argv, prog="python -m llava.eval.scorers.pope"))


if __name__ == "__main__":
    sys.exit(main())
