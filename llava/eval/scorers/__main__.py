"""``python -m llava.eval.scorers --task NAME --question-file ... --answers-file ... [--protocol ...]``

Prints the original scorer's familiar lines on stdout, writes ``result.json`` (default: next to
the answers file) and, with ``--output-dir``, the original's side files (``Result.text``,
``ans_gt.json``, ...; official protocol only). Bad input: one ``error: ...`` line on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from llava.eval.scorers.common import (
    Scored, ScoreError, add_common_args, cli_main, result_path, write_result, write_text_atomic,
)
from llava.eval.scorers.registry import canonical_task, get_scorer, task_names

PROG = "python -m llava.eval.scorers"


def build_parser(task: str | None) -> argparse.ArgumentParser:
    """The full parser for ``task`` (its own flags included), or the bare one when unknown."""
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1])
    parser.add_argument("--task", required=True, help="one of: " + ", ".join(task_names()))
    if task is None:
        return parser
    module = get_scorer(task)
    add_common_args(parser, question_file_required=module.QUESTION_FILE_REQUIRED)
    parser.add_argument("--output-dir", default=None,
                        help="also write the original scorer's output files here (official protocol)")
    module.add_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task")
    known, _ = pre.parse_known_args(argv)

    def run() -> int:
        task = _task_or_error(known.task) if known.task else None
        args = build_parser(task).parse_args(argv)
        logging.basicConfig(level=str(args.log_level).upper(), stream=sys.stderr,
                            format="%(levelname)s %(name)s: %(message)s")
        return _run(args, task)

    return cli_main(run)


def _task_or_error(name: str) -> str:
    try:
        return canonical_task(name)
    except KeyError as e:
        raise ScoreError(e.args[0]) from None


def _run(args: argparse.Namespace, task: str) -> int:
    scored: Scored = get_scorer(task).run(args, task)
    write_result(result_path(args), scored.result)
    if args.output_dir:
        _write_side_files(Path(args.output_dir), scored, args.protocol)
    sys.stdout.write(scored.stdout)
    sys.stdout.flush()
    return 0


def _write_side_files(folder: Path, scored: Scored, protocol: str) -> None:
    if protocol != "official":
        logging.getLogger(__name__).warning("--output-dir: the original's files exist only for the "
                                            "official protocol; nothing written")
        return
    inputs = {Path(v).resolve() for v in scored.result["settings"].values() if isinstance(v, str) and v}
    for name, text in scored.side_files.items():
        target = folder / name
        if target.resolve() in inputs:
            raise ScoreError(f"{target}: refusing to overwrite an input file; choose another --output-dir")
        write_text_atomic(target, text)


if __name__ == "__main__":
    sys.exit(main())
