"""The class-name family (ImageNet and ImageNet-R): containment match of the class name.

Rule (both protocols): right iff ``answer.upper() in pred.upper()`` or ``pred.upper() in
answer.upper()``.

- ``official`` reproduces ``llava/eval/eval_ImagetNet.py`` of RobustMerge (used for both tasks):
  the i-th answer line is paired with the i-th question BY POSITION, ids ignored; the
  denominator is the number of answer lines; an empty prediction is a substring of every
  answer, so it counts as right. Writes ``ans_gt.json`` and ``Result.text`` (the two summary
  lines, then the wrong predictions as a JSON list with ``ground_truth`` added).
  The id join still runs as a guard: answers from another question file are an error, and
  ``counts.position_mismatches`` says how many lines sit at another position than their
  question (each such pair was scored against the wrong class).
- ``strict``: id join, denominator = questions, missing or empty answers are wrong.

``unparsed`` counts empty (whitespace-only) answers.
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Sequence

from llava.eval.scorers.common import ScoreError, Scored, join_by_id
from llava.eval.scorers.exact import accuracy_scored, ans_gt_json, is_empty, read_task_questions, result_text

logger = logging.getLogger(__name__)

OFFICIAL_QUIRKS = (
    "answers paired with questions by position (line i with question i), ids ignored",
    "an empty prediction counts as right (it is a substring of every class name)",
    "denominator = number of answer lines",
)


def contains_match(pred: str, answer: str) -> bool:
    """The original rule: one upper-cased string contains the other."""
    p, a = pred.upper(), answer.upper()
    return a in p or p in a


def score_records(questions: Sequence[dict], answers: Sequence[dict], *, protocol: str, task: str = "ImageNet",
                  settings: dict | None = None) -> Scored:
    """Accuracy of class-name answers (see the module docstring)."""
    settings = dict(settings or {})
    qf, af = settings.get("question_file", ""), settings.get("answers_file", "")
    report = join_by_id(questions, answers, question_file=qf, answers_file=af)
    if protocol == "official":
        if len(answers) > len(questions):
            raise ScoreError(f"{af}: {len(answers)} answer lines for {len(questions)} questions; the "
                             "original pairs them by position and fails (IndexError). Use --protocol strict")
        if not answers:
            raise ScoreError(f"{af}: no answers to score (the original divides by zero)")
        pairs = list(zip(questions, answers))
        flags = [contains_match(a["text"], q["answer"]) for q, a in pairs]
        unparsed = sum(is_empty(a["text"]) for a in answers)
        mismatches = sum(str(q["question_id"]) != str(a["question_id"]) for q, a in pairs)
    else:
        pairs = report.pairs
        flags = [a is not None and not is_empty(a["text"]) and contains_match(a["text"], q["answer"])
                 for q, a in pairs]
        unparsed = sum(is_empty(a["text"]) for _, a in report.answered)
        mismatches = 0
    if not flags:
        raise ScoreError(f"{qf}: no questions")
    notes = []
    if mismatches:
        logger.warning("%s: %d answer line(s) are not at their question's position; the official "
                       "score pairs by position and is wrong for them", af, mismatches)
        notes.append(f"{mismatches} answer line(s) not at their question's position: the official "
                     "protocol scored them against another question's class")
    scored = accuracy_scored(task, protocol, flags, unparsed, report, questions, answers, quirks=OFFICIAL_QUIRKS,
                             trailing_notes=notes, settings=settings,
                             extra_counts={"position_mismatches": mismatches})
    if protocol == "official":
        scored.side_files = _side_files(pairs, flags, len(flags), scored.result["metrics"]["accuracy"])
    return scored


def _side_files(pairs, flags, total: int, accuracy: float) -> dict[str, str]:
    ans_gt = [{"pred": a["text"], "ground_truth": q["answer"]} for q, a in pairs]
    wrong = [dict(a, ground_truth=q["answer"]) for (q, a), ok in zip(pairs, flags) if not ok]
    return {"ans_gt.json": ans_gt_json(ans_gt),
            "Result.text": result_text(total, accuracy) + json.dumps(wrong, indent=4)}


def task_scorer(task: str) -> Callable:
    """``score(inputs, answers, protocol)`` of a class-name task."""
    def score(inputs, answers, protocol: str) -> Scored:
        questions, settings = read_task_questions(inputs)
        return score_records(questions, answers, protocol=protocol, task=task, settings=settings)
    return score
