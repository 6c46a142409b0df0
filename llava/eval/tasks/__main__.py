"""``python -m llava.eval.tasks list [--group seen|unseen|general]`` / ``folder NAME`` / ``show NAME``

For shell scripts: ``list`` prints the canonical task names (one per line, in order), ``folder``
prints a task's folder under ``instructions/`` (where its training data lives), ``show`` its
spec as JSON. Plug-in tasks from ``$LLAVA_TASKS_PATH`` are included. Unknown task: exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from llava.eval.tasks import GROUPS, get_task, task_names
from robustmerge.errors import UserError, cli_main

PROG = "python -m llava.eval.tasks"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1])
    sub = p.add_subparsers(dest="command", required=True)
    listing = sub.add_parser("list", help="task names, one per line")
    listing.add_argument("--group", choices=GROUPS, action="append", help="only these groups (repeatable)")
    for name, what in (("folder", "the task's folder under instructions/"), ("show", "the task's spec as JSON")):
        sub.add_parser(name, help=what).add_argument("task")
    return p


def _run(args: argparse.Namespace) -> int:
    if args.command == "list":
        print("\n".join(task_names(args.group)))
        return 0
    try:
        spec = get_task(args.task)
    except KeyError as e:
        raise UserError(e.args[0]) from None
    if args.command == "folder":
        print(spec.instructions_folder)
    else:
        fields = {k: v for k, v in vars(spec).items() if k != "folder"}
        print(json.dumps({**fields, "folder": str(spec.folder)}, indent=2, default=dict))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return cli_main(lambda: _run(args), prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
