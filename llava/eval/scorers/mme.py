"""``python -m llava.eval.scorers.mme``: the MME scorer's own entry point, flags as before
(the task lives in ``llava/eval/tasks/mme/``; this is ``--task MME`` of :mod:`llava.eval.scorers.__main__`)."""

import sys

from llava.eval.scorers.__main__ import task_main


def main(argv: list[str] | None = None) -> int:
    return task_main("MME", argv, prog="python -m llava.eval.scorers.mme")


if __name__ == "__main__":
    sys.exit(main())
