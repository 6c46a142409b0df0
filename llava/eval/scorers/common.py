"""Shared pieces of every scorer: file readers, the id join, the result record and the CLI plumbing.

Public API (kept small on purpose; other scorer modules import only these):

- ``ScoreError``: the one exception a user can cause (bad path, malformed file, wrong
  answers file). Its message names the file. CLIs turn it into exit status 2.
- ``read_json(path)``: one JSON document.
- ``read_questions(path)``: a question file as a list of dicts (JSON list or JSONL).
- ``read_answers(path, skip_malformed=False)``: an answers JSONL file as a ``Records`` list;
  malformed or truncated lines raise ``ScoreError`` listing their line numbers, or, with
  ``skip_malformed=True``, are skipped and reported in ``Records.malformed``.
- ``join_by_id(questions, answers)``: a ``JoinReport`` pairing each question with its answer
  by ``str(question_id)``, with missing / duplicate / extra ids; raises when the answers
  evidently belong to another question file.
- ``make_result(...)``: the common result record (schema below); ``write_result(path, result)``
  validates and writes it atomically, refusing to overwrite an input file.
- ``add_common_args(parser)``, ``result_path(args)``, ``cli_main(fn)``: the shared CLI flags,
  the default result path and the exit-status-2 wrapper.
- ``Scored``: what every task's ``score(inputs, answers, protocol)`` returns (the result record, the familiar stdout
  text and the original scorer's side files); ``lookup_official(...)``: the original scorers'
  answer-order lookup of each answer's question (raises where the original would crash).

Result record (``result.json``), one JSON object::

    task            str    e.g. "ScienceQA"
    protocol        str    "official" | "strict"
    metrics         dict   name -> float; percentages as 0-100 numbers, like the printed lines
    headline        str    the key in ``metrics`` a results table shows
    counts          dict   at least questions, answers, scored, unparsed, missing, duplicates, extra
    unparsed_share  float  counts["unparsed"] / counts["scored"] (0.0 when nothing was scored)
    quirks          list   each official-protocol quirk that was applied, one string each
    notes           list   free-form remarks (chosen readings of open questions, warnings)
    settings        dict   paths of the input files and every option of the run
    scorer_version  str    "1"
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from robustmerge.errors import UserError, cli_main  # noqa: F401  (cli_main re-exported)
from robustmerge.atomic import write_text_atomic  # noqa: F401  (re-exported for the scorers)

logger = logging.getLogger(__name__)

SCORER_VERSION = "1"
PROTOCOLS = ("official", "strict")
REQUIRED_COUNTS = ("questions", "answers", "scored", "unparsed", "missing", "duplicates", "extra")
RESULT_KEYS = (
    "task", "protocol", "metrics", "headline", "counts", "unparsed_share",
    "quirks", "notes", "settings", "scorer_version",
)
#: Below this share of answer ids found in the question file, the answers are taken to come
#: from another question file and the join raises instead of scoring.
MIN_ID_OVERLAP = 0.5


class ScoreError(UserError):
    """A problem with the inputs a user can fix; the message names the file and the fix."""


# ----------------------------------------------------------------------------- readers


def read_json(path: str | os.PathLike) -> Any:
    """Load one JSON document, raising ``ScoreError`` (with the file name) if unreadable."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ScoreError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ScoreError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScoreError(f"{path}: cannot read ({e})") from None


def read_questions(path: str | os.PathLike) -> list[dict]:
    """Read a question file: a JSON list of objects or JSONL, one object per line.

    Every record must be a JSON object with a ``question_id``; duplicates are an error because
    no join can be trusted then.
    """
    path = Path(path)
    text = _read_text(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise ScoreError(
                f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg})") from None
        numbered = list(enumerate(records, start=1))
        where = "item"
    else:
        parsed = _parse_jsonl(path, text)
        if parsed.bad:
            raise ScoreError(f"{path}: malformed lines: {_describe_bad(parsed.bad)}")
        numbered = parsed.good
        where = "line"
    bad = [n for n, r in numbered if not isinstance(r, dict) or "question_id" not in r]
    if bad:
        raise ScoreError(f"{path}: {where}(s) {_short_list(bad)} are not objects with a question_id")
    records = [r for _, r in numbered]
    dups = _duplicates(str(r["question_id"]) for r in records)
    if dups:
        raise ScoreError(f"{path}: duplicate question_id(s) {_short_list(dups)}; fix the question file")
    return records


class Records(list):
    """A list of answer dicts that also remembers its file and the skipped malformed lines.

    Attributes:
        path: the file it was read from.
        malformed: ``[(line_number, reason), ...]`` for lines skipped with ``skip_malformed``.
    """

    def __init__(self, items: Iterable[dict] = (), path: str = "", malformed=None):
        super().__init__(items)
        self.path = path
        self.malformed: list[tuple[int, str]] = list(malformed or [])


def read_answers(path: str | os.PathLike, skip_malformed: bool = False,
                 require: Sequence[str] = ("question_id", "text")) -> Records:
    """Read an answers JSONL file (one ``{question_id, prompt, text, ...}`` object per line).

    A line is malformed when it is not JSON (e.g. truncated by an interrupted run), not an
    object, lacks one of ``require`` or has a non-string ``text``. Blank lines are ignored.

    Args:
        path: the answers file.
        skip_malformed: False (default) raises ``ScoreError`` listing every bad line number;
            True skips them and records them in ``Records.malformed`` for the counts.
        require: keys every line must have.

    Returns:
        ``Records`` in file order.
    """
    path = Path(path)
    parsed = _parse_jsonl(path, _read_text(path))
    good, bad = [], list(parsed.bad)
    for n, rec in parsed.good:
        reason = _answer_problem(rec, require)
        if reason:
            bad.append((n, reason))
        else:
            good.append(rec)
    bad.sort()
    if bad and not skip_malformed:
        raise ScoreError(f"{path}: malformed answer lines: {_describe_bad(bad)}; "
                         "re-run the missing answers or pass --skip-malformed to count them as unanswered")
    if bad:
        logger.warning("%s: skipped %d malformed line(s): %s", path, len(bad), _describe_bad(bad))
    return Records(good, path=str(path), malformed=bad)


def _answer_problem(rec: Any, require: Sequence[str]) -> str:
    if not isinstance(rec, dict):
        return "not a JSON object"
    missing = [k for k in require if k not in rec]
    if missing:
        return "missing " + ", ".join(missing)
    if "text" in require and not isinstance(rec["text"], str):
        return "text is not a string"
    return ""


@dataclass
class _Parsed:
    good: list = field(default_factory=list)   # [(line_number, value)]
    bad: list = field(default_factory=list)    # [(line_number, reason)]


def _parse_jsonl(path: Path, text: str) -> _Parsed:
    out = _Parsed()
    lines = text.split("\n")
    last = max((i for i, l in enumerate(lines) if l.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.good.append((i + 1, json.loads(line)))
        except json.JSONDecodeError as e:
            truncated = i == last and not text.endswith("\n")
            out.bad.append((i + 1, "truncated last line (interrupted run?)" if truncated
                            else f"not JSON ({e.msg})"))
    return out


def _read_text(path: Path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise ScoreError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ScoreError(f"{path}: cannot read ({e})") from None


def _describe_bad(bad: list[tuple[int, str]], limit: int = 10) -> str:
    shown = ", ".join(f"line {n} ({why})" for n, why in bad[:limit])
    return shown + (f" and {len(bad) - limit} more" if len(bad) > limit else "")


def _short_list(items: Sequence, limit: int = 10) -> str:
    shown = ", ".join(repr(x) for x in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _duplicates(keys: Iterable[str]) -> list[str]:
    seen, dups = set(), []
    for k in keys:
        if k in seen and k not in dups:
            dups.append(k)
        seen.add(k)
    return dups


# ----------------------------------------------------------------------------- id join


@dataclass
class JoinReport:
    """Questions paired with their answers by ``str(question_id)``.

    Attributes:
        pairs: ``[(question, answer_or_None), ...]`` in question-file order.
        missing: ids of questions without an answer.
        duplicates: ids answered more than once (the first answer in the file is used).
        extra: ids of answers whose question is not in the question file.
    """

    pairs: list[tuple[dict, dict | None]]
    missing: list[str]
    duplicates: list[str]
    extra: list[str]

    @property
    def answered(self) -> list[tuple[dict, dict]]:
        """The pairs that have an answer."""
        return [(q, a) for q, a in self.pairs if a is not None]


def join_by_id(questions: Sequence[dict], answers: Sequence[dict], *,
               question_file: str = "", answers_file: str = "",
               min_overlap: float = MIN_ID_OVERLAP) -> JoinReport:
    """Pair questions and answers by ``str(question_id)``.

    Raises ``ScoreError`` when fewer than ``min_overlap`` of the answer ids occur in the
    question file (the answers were produced from another question file).
    """
    by_id: dict[str, dict] = {}
    duplicates, extra = [], []
    qids = {str(q["question_id"]) for q in questions}
    for a in answers:
        key = str(a["question_id"])
        if key not in qids:
            extra.append(key)
        elif key in by_id:
            if key not in duplicates:
                duplicates.append(key)
        else:
            by_id[key] = a
    if answers and len(answers) - len(extra) < min_overlap * len(answers):
        raise ScoreError(
            f"{answers_file or 'answers'}: only {len(answers) - len(extra)} of {len(answers)} answer ids "
            f"occur in {question_file or 'the question file'} (e.g. {extra[0]!r}); "
            "the answers seem to come from another question file")
    if duplicates:
        logger.warning("%s: %d question id(s) answered more than once; the first answer is used",
                       answers_file or "answers", len(duplicates))
    pairs = [(q, by_id.get(str(q["question_id"]))) for q in questions]
    missing = [str(q["question_id"]) for q, a in pairs if a is None]
    return JoinReport(pairs=pairs, missing=missing, duplicates=duplicates, extra=extra)


def check_same_questions(questions: Sequence[dict], answers: Sequence[dict], *,
                         question_file: str = "", answers_file: str = "") -> JoinReport:
    """For scorers that pair by position (official protocol): run the id join only as a guard.

    It raises when the answers come from another question file, and returns the report so the
    counts can say how many ids are missing / duplicated / extra even though the official
    score ignores ids.
    """
    return join_by_id(questions, answers, question_file=question_file, answers_file=answers_file)


def join_counts(report: JoinReport, n_questions: int, n_answers: int, *, scored: int,
                unparsed: int, malformed: int = 0) -> dict[str, int]:
    """The ``counts`` dict of a result from a join report."""
    return {
        "questions": n_questions, "answers": n_answers, "scored": scored, "unparsed": unparsed,
        "missing": len(report.missing), "duplicates": len(report.duplicates),
        "extra": len(report.extra), "malformed_lines": malformed,
    }


def lookup_official(questions: Sequence[dict], answers: Sequence[dict], *, by_str: bool = False,
                    question_file: str = "", answers_file: str = "") -> list[tuple[dict, dict]]:
    """The original scorers' join: for each answer in file order, its question by ``question_id``.

    Duplicated answers are kept (each counts, as in the original). ``by_str`` compares
    ``str(question_id)`` (VQAv2's scorer); otherwise the JSON values must be equal, type included
    (``1`` does not find ``"1"``), as in a Python dict lookup. An answer whose question is not
    found makes the original fail with ``KeyError``; here it raises ``ScoreError``.
    """
    key = (lambda x: str(x)) if by_str else (lambda x: x)
    lookup = {key(q["question_id"]): q for q in questions}
    pairs, unknown = [], []
    for a in answers:
        q = lookup.get(key(a["question_id"]))
        if q is None:
            unknown.append(a["question_id"])
        else:
            pairs.append((q, a))
    if unknown:
        raise ScoreError(
            f"{answers_file or 'answers'}: {len(unknown)} answer(s) whose question_id is not in "
            f"{question_file or 'the question file'} (with its JSON type), e.g. {_short_list(unknown, 3)}; "
            "the original scorer fails on them (KeyError). Remove them or use --protocol strict")
    return pairs


@dataclass
class Scored:
    """The output of a scorer's pure function.

    Attributes:
        result: the result record (see the module docstring); None when there is nothing to
            score locally (MMBench's test split: the submission file is all there is).
        stdout: the familiar lines, exactly as the original scorer printed them.
        side_files: ``{file name: text}`` the original scorer wrote into its output folder
            (official protocol only; empty for strict).
        written: files the scorer itself wrote (e.g. MMBench's submission spreadsheet).
    """

    result: dict[str, Any] | None
    stdout: str
    side_files: dict[str, str] = field(default_factory=dict)
    written: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- result record


def make_result(task: str, protocol: str, metrics: dict[str, float], headline: str,
                counts: dict[str, int], *, quirks: Sequence[str] = (), notes: Sequence[str] = (),
                settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build a result record in the common schema (see the module docstring)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if headline not in metrics:
        raise ValueError(f"headline {headline!r} is not among the metrics {sorted(metrics)}")
    missing = [k for k in REQUIRED_COUNTS if k not in counts]
    if missing:
        raise ValueError(f"counts lack {missing}")
    scored = counts["scored"]
    return {
        "task": task,
        "protocol": protocol,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "headline": headline,
        "counts": {k: int(v) for k, v in counts.items()},
        "unparsed_share": counts["unparsed"] / scored if scored else 0.0,
        "quirks": list(quirks) if protocol == "official" else [],
        "notes": list(notes),
        "settings": dict(settings or {}),
        "scorer_version": SCORER_VERSION,
    }


def validate_result(result: dict[str, Any]) -> None:
    """Raise ``ValueError`` if ``result`` does not follow the common schema."""
    missing = [k for k in RESULT_KEYS if k not in result]
    if missing:
        raise ValueError(f"result lacks keys {missing}")
    if result["protocol"] not in PROTOCOLS:
        raise ValueError(f"bad protocol {result['protocol']!r}")
    if result["headline"] not in result["metrics"]:
        raise ValueError(f"headline {result['headline']!r} not in metrics")
    lacking = [k for k in REQUIRED_COUNTS if k not in result["counts"]]
    if lacking:
        raise ValueError(f"counts lack {lacking}")
    if not 0.0 <= result["unparsed_share"] <= 1.0:
        raise ValueError("unparsed_share must lie in [0, 1]")


def write_result(path: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Validate ``result`` and write it as JSON atomically (temp file + rename).

    Refuses (``ScoreError``) to overwrite any file named in ``result["settings"]`` (an input).
    """
    validate_result(result)
    path = Path(path)
    for value in result["settings"].values():
        if isinstance(value, str) and value and _same_file(path, value):
            raise ScoreError(f"{path}: refusing to overwrite an input file; choose another --result-file")
    write_json_atomic(path, result, indent=2)
    logger.info("wrote %s", path)
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, **dump_kwargs: Any) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder."""
    write_text_atomic(path, json.dumps(obj, **dump_kwargs))


def _same_file(a: Path, b: str) -> bool:
    try:
        return a.resolve() == Path(b).resolve()
    except OSError:
        return False


# ----------------------------------------------------------------------------- CLI


def add_common_args(parser: argparse.ArgumentParser,
                    question_file_required: bool = True) -> argparse.ArgumentParser:
    """Add the flags every scorer CLI shares.

    ``--question-file``, ``--answers-file`` (the runner's JSONL; note that ``--result-file`` is
    the OUTPUT here, unlike the original LLaVA scorers), ``--protocol`` (default ``official``),
    ``--result-file`` (default ``result.json`` next to the answers file), ``--skip-malformed``
    and ``--log-level``.
    """
    parser.add_argument("--question-file", required=question_file_required, default=None,
                        help="question file (JSON list or JSONL)")
    parser.add_argument("--answers-file", required=True, help="answers JSONL written by the runner")
    parser.add_argument("--protocol", choices=PROTOCOLS, default="official",
                        help="official: the authors' scoring, quirks included (paper tables); "
                             "strict: id joins, empty answers wrong, full parsing (default: official)")
    parser.add_argument("--result-file", default=None,
                        help="where to write result.json (default: result.json next to the answers file)")
    parser.add_argument("--skip-malformed", action="store_true",
                        help="skip malformed answer lines (counted in the result) instead of failing")
    parser.add_argument("--log-level", default="WARNING", help="logging level (default: WARNING)")
    return parser


def result_path(args: argparse.Namespace) -> Path:
    """The result file of a CLI run: ``--result-file`` or ``result.json`` beside the answers."""
    if args.result_file:
        return Path(args.result_file)
    return Path(args.answers_file).parent / "result.json"
