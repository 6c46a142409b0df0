"""The exact-match family (IconQA, TabMWP, VQAv2, AOKVQA, OCRVQA) and the accuracy tail every
per-answer scorer shares (:func:`accuracy_scored`).

Rule (both protocols): an answer is right iff ``pred.upper() == answer.upper()`` (whole string;
no stripping, no number or punctuation normalisation).

- ``official`` reproduces ``llava/eval/eval_iconqa.py`` of RobustMerge (TabMWP's script calls the
  same file): every answer line is looked up in the question file by ``question_id`` with its
  JSON type, in answers-file order; the denominator is the number of answer lines, so missing
  answers are simply left out and duplicated answers count twice. An answer whose question is
  not in the question file makes the original fail; here that is a clear error.
- ``strict`` joins by ``str(question_id)``; the denominator is the number of questions; a
  missing or empty answer is wrong; duplicated answers are counted once (the first line) and
  reported; answers to unknown questions are reported and ignored.

Printed lines: ``Samples: N`` / ``Accuracy: xx.xx%`` and an empty line, as the original.
``unparsed`` counts empty (whitespace-only) answers.
"""

from __future__ import annotations

import functools
import json
from typing import Callable, Sequence

from llava.eval.scorers.common import (
    JoinReport, ScoreError, Scored, join_by_id, join_counts, lookup_official, make_result, read_questions,
)

OFFICIAL_QUIRKS = (
    "denominator = number of answer lines: missing answers are left out of the accuracy",
    "duplicated answer lines are each counted",
    "question_id looked up with its JSON type (1 does not match '1')",
)


def exact_match(pred: str, answer: str) -> bool:
    """The original rule: whole strings equal after ``str.upper()``."""
    return pred.upper() == answer.upper()


def parse_text(text: str) -> str:
    """The exact-match family reads the prediction as is."""
    return text


def is_empty(text: str) -> bool:
    """An answer with no visible text."""
    return not text.strip()


def accuracy_lines(samples: int, accuracy: float) -> str:
    """The original's ``print('Samples: {}\\nAccuracy: {:.2f}%\\n'.format(...))`` output."""
    return result_text(samples, accuracy) + "\n"


def result_text(samples: int, accuracy: float) -> str:
    """The original's ``Result.text`` content."""
    return "Samples: {}\nAccuracy: {:.2f}%\n".format(samples, accuracy)


def ans_gt_json(rows: list[dict]) -> str:
    """The original's ``ans_gt.json`` (indent 4, non-ASCII kept)."""
    return json.dumps(rows, ensure_ascii=False, indent=4)


def score_exact_match(
    task: str, questions: Sequence[dict], answers: Sequence[dict], *, protocol: str,
    settings: dict | None = None, by_str: bool = False,
    is_right: Callable[[str, str], bool] = exact_match,
    is_unparsed: Callable[[str], bool] = is_empty,
    quirks: Sequence[str] = OFFICIAL_QUIRKS, notes: Sequence[str] = (),
    write_ans_gt: bool = True,
) -> Scored:
    """Accuracy of ``answers`` against ``questions[i]["answer"]`` (see the module docstring).

    Args:
        task: task name for the result record.
        questions: question records with ``question_id`` and ``answer``.
        answers: answer records with ``question_id`` and ``text`` (file order).
        protocol: "official" or "strict".
        settings: input paths and options, copied into the result.
        by_str: official lookup by ``str(question_id)`` (VQAv2) instead of the JSON value.
        is_right: ``(pred, answer) -> bool``.
        is_unparsed: ``pred -> bool``, the answers counted as not parsed.
        quirks, notes: written into the result (quirks only for official).
        write_ans_gt: the original also writes ``ans_gt.json``.

    Returns:
        ``Scored`` with metric ``accuracy`` (0-100).
    """
    settings = dict(settings or {})
    qf, af = settings.get("question_file", ""), settings.get("answers_file", "")
    report = join_by_id(questions, answers, question_file=qf, answers_file=af)
    if protocol == "official":
        pairs = lookup_official(questions, answers, by_str=by_str, question_file=qf, answers_file=af)
        if not pairs:
            raise ScoreError(f"{af or 'answers'}: no answers to score (the original divides by zero)")
        flags = [is_right(a["text"], q["answer"]) for q, a in pairs]
        unparsed = sum(is_unparsed(a["text"]) for _, a in pairs)
        ans_gt = [{"pred": a["text"], "ground_truth": q["answer"]} for q, a in pairs]
    else:
        pairs = report.pairs
        if not pairs:
            raise ScoreError(f"{qf or 'questions'}: no questions")
        flags = [a is not None and not is_empty(a["text"]) and is_right(a["text"], q["answer"])
                 for q, a in pairs]
        unparsed = sum(is_unparsed(a["text"]) for _, a in report.answered)
        ans_gt = []
    scored = accuracy_scored(task, protocol, flags, unparsed, report, questions, answers, quirks=quirks,
                             notes=notes, settings=settings)
    if protocol == "official" and write_ans_gt:
        scored.side_files["ans_gt.json"] = ans_gt_json(ans_gt)
    return scored


def accuracy_scored(task: str, protocol: str, flags: Sequence[bool], unparsed: int, report: JoinReport,
                    questions: Sequence[dict], answers: Sequence[dict], *, quirks: Sequence[str] = (),
                    notes: Sequence[str] = (), settings: dict | None = None,
                    extra_counts: dict | None = None, trailing_notes: Sequence[str] = ()) -> Scored:
    """The shared tail of the per-answer scorers: accuracy over ``flags`` (one per scored item),
    the counts, the result record, the ``Samples/Accuracy`` lines and the official ``Result.text``."""
    total = len(flags)
    accuracy = 100.0 * sum(flags) / total
    counts = join_counts(report, len(questions), len(answers), scored=total, unparsed=unparsed,
                         malformed=len(getattr(answers, "malformed", [])))
    counts["correct"] = sum(flags)
    counts.update(extra_counts or {})
    result = make_result(task, protocol, {"accuracy": accuracy}, "accuracy", counts, quirks=quirks,
                         notes=[*notes, *join_notes(report, protocol), *trailing_notes], settings=settings)
    side = {"Result.text": result_text(total, accuracy)} if protocol == "official" else {}
    return Scored(result, accuracy_lines(total, accuracy), side)


def join_notes(report: JoinReport, protocol: str) -> list[str]:
    """Human-readable remarks about missing / duplicated / extra answers."""
    notes = []
    if report.missing:
        notes.append(f"{len(report.missing)} question(s) without an answer"
                     + (" (left out of the official denominator)" if protocol == "official"
                        else " (counted wrong)"))
    if report.duplicates:
        notes.append(f"{len(report.duplicates)} question id(s) answered more than once"
                     + (" (each line counted, as in the original)" if protocol == "official"
                        else " (first answer used)"))
    if report.extra:
        notes.append(f"{len(report.extra)} answer(s) to questions not in the question file (ignored)")
    return notes


def base_settings(inputs) -> dict:
    """The settings every question-file scorer records: its two files and ``skip_malformed``."""
    return {"question_file": str(inputs.question_file), "answers_file": str(inputs.answers_file),
            "skip_malformed": bool(inputs.skip_malformed)}


def read_task_questions(inputs, check_field: str | None = "answer") -> tuple[list[dict], dict]:
    """The question file named in ``inputs`` (each question with a string ``check_field``) and
    the base settings."""
    if not inputs.question_file:
        raise ScoreError("this task needs --question-file")
    questions = read_questions(inputs.question_file)
    if check_field:
        check_answer_field(questions, inputs.question_file, check_field)
    return questions, base_settings(inputs)


def check_answer_field(questions: Sequence[dict], path: str, field: str = "answer") -> None:
    """Every question must carry a string ``field``."""
    bad = [q["question_id"] for q in questions if not isinstance(q.get(field), str)]
    if bad:
        raise ScoreError(f"{path}: {len(bad)} question(s) without a string '{field}', e.g. {bad[:3]}")


def question_file_scorer(score_records: Callable, check_field: str | None = "answer", **options) -> Callable:
    """``score(inputs, answers, protocol)`` from a scorer of in-memory records
    ``score_records(questions, answers, *, protocol, settings, **options)``: reads the question
    file named in ``inputs`` (each question with a string ``check_field``) first."""
    def score(inputs, answers, protocol: str) -> Scored:
        questions, settings = read_task_questions(inputs, check_field)
        return score_records(questions, answers, protocol=protocol, settings=settings, **options)
    return score


def exact_task_scorer(task: str, **options) -> Callable:
    """``score(inputs, answers, protocol)`` of a plain exact-match task (``options`` go to
    :func:`score_exact_match`)."""
    return question_file_scorer(functools.partial(score_exact_match, task), **options)
