"""``python -m llava.eval.scorers.pope``: the POPE scorer's own entry point, flags as before
(the task lives in ``llava/eval/tasks/pope/``; this is ``--task POPE`` of :mod:`llava.eval.scorers.__main__`)."""

import sys

from llava.eval.scorers.__main__ import task_main


def main(argv: list[str] | None = None) -> int:
    return task_main("POPE", argv, prog="python -m llava.eval.scorers.pope")


if __name__ == "__main__":
    sys.exit(main())
