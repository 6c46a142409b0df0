"""``python -m llava.eval.scorers --task NAME --question-file ... --answers-file ... [--protocol ...]``

Prints the original scorer's familiar lines on stdout, writes ``result.json`` (default: next to
the answers file) and, with ``--output-dir``, the original's side files (``Result.text``,
``ans_gt.json``, ...; official protocol only). Bad input: one ``error: ...`` line on stderr and
exit status 2.

The parser is generated from the task's spec (``llava/eval/tasks/<folder>/task.toml``): the
common flags, plus the task's own ``[[flags]]`` (e.g. ``--gt-file``, ``--annotation-dir``),
whose values reach the scorer as ``ScoreInputs.options``. :func:`run_task` is the same CLI for
one task without ``--task`` (``python -m llava.eval.scorers.pope`` and friends).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from llava.eval.scorers.common import (
    Scored, ScoreError, add_common_args, cli_main, result_path, write_result, write_text_atomic,
)
from llava.eval.tasks import ScoreInputs, TaskSpec, get_task, task_names

PROG = "python -m llava.eval.scorers"


def build_parser(spec: TaskSpec | None, prog: str = PROG, with_task: bool = True) -> argparse.ArgumentParser:
    """The full parser for ``spec`` (its own flags included), or the bare one when None."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[1])
    if with_task:
        parser.add_argument("--task", required=True, help="one of: " + ", ".join(task_names()))
    if spec is None:
        return parser
    for flag in spec.flags:
        kwargs = {k: flag[k] for k in ("help", "default", "action") if k in flag}
        if flag.get("required"):
            kwargs["required"] = True
        parser.add_argument(flag["flag"], **kwargs)
    add_common_args(parser, question_file_required=spec.question_file_required)
    parser.add_argument("--output-dir", default=None,
                        help="also write the original scorer's output files here (official protocol)")
    return parser


def score_inputs(spec: TaskSpec, args: argparse.Namespace) -> ScoreInputs:
    """The scorer inputs named on the command line."""
    options = {f["flag"].lstrip("-").replace("-", "_"): None for f in spec.flags}
    return ScoreInputs(answers_file=args.answers_file, question_file=args.question_file,
                       options={k: getattr(args, k) for k in options}, skip_malformed=args.skip_malformed,
                       result_file=str(result_path(args)))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--task")
    known, _ = pre.parse_known_args(argv)

    def run() -> int:
        spec = _task_or_error(known.task) if known.task else None
        return _run(spec, build_parser(spec).parse_args(argv))

    return cli_main(run)


def run_task(task: str, argv: list[str] | None = None, prog: str = PROG) -> int:
    """The CLI of one task, without ``--task`` (the per-task entry points wrap it in ``cli_main``)."""
    spec = get_task(task)
    return _run(spec, build_parser(spec, prog, with_task=False).parse_args(argv))


def _task_or_error(name: str) -> TaskSpec:
    try:
        return get_task(name)
    except KeyError as e:
        raise ScoreError(e.args[0]) from None


def _run(spec: TaskSpec, args: argparse.Namespace) -> int:
    logging.basicConfig(level=str(args.log_level).upper(), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    scored: Scored = spec.score(score_inputs(spec, args), args.protocol)
    if spec.cli_prints_written:      # POPE / MME / MMBench: the lines first, then "wrote ..."
        sys.stdout.write(scored.stdout + "".join(f"wrote {p}\n" for p in scored.written))
        if scored.result is not None:
            sys.stdout.write(f"wrote {write_result(result_path(args), scored.result)}\n")
    else:
        write_result(result_path(args), scored.result)
    if args.output_dir:
        _write_side_files(Path(args.output_dir), scored, args.protocol)
    if not spec.cli_prints_written:
        sys.stdout.write(scored.stdout)
    sys.stdout.flush()
    return 0


def _write_side_files(folder: Path, scored: Scored, protocol: str) -> None:
    if protocol != "official":
        logging.getLogger(__name__).warning("--output-dir: the original's files exist only for the "
                                            "official protocol; nothing written")
        return
    settings = scored.result["settings"] if scored.result else {}
    inputs = {Path(v).resolve() for v in settings.values() if isinstance(v, str) and v}
    for name, text in scored.side_files.items():
        target = folder / name
        if target.resolve() in inputs:
            raise ScoreError(f"{target}: refusing to overwrite an input file; choose another --output-dir")
        write_text_atomic(target, text)


if __name__ == "__main__":
    sys.exit(main())
