"""VQAv2 (MM-MergeBench's val split with one answer string per question): exact match.

This is NOT the VQA soft accuracy: the benchmark's scorer compares the whole prediction with the
single ground-truth string after ``str.upper()`` (see :mod:`llava.eval.scorers.iconqa`).

- ``official`` reproduces ``llava/eval/eval_vqav2.py`` of RobustMerge, which looks answers up by
  ``str(question_id)``; denominator = number of answer lines. It also prints the first line of
  ``scripts/convert_vqav2_for_submission.py`` (which ``4_eval_vqav2.sh`` runs first):
  ``total results: <distinct answer ids>, total split: <questions>, error_line: <malformed>``.
  The converter's ``answers_upload.json`` (EvalAI answer normalisation, for the test server) is
  not produced here.
- ``strict``: id join, denominator = questions, missing/empty answers wrong.
"""

from __future__ import annotations

import argparse

from llava.eval.scorers.common import Scored
from llava.eval.scorers.iconqa import (
    OFFICIAL_QUIRKS, add_args, check_answer_field, read_inputs, score_exact_match,
)

TASKS = ("VQAv2",)
QUESTION_FILE_REQUIRED = True
__all__ = ["TASKS", "add_args", "run", "score"]


def converter_line(questions, answers) -> str:
    """The line ``convert_vqav2_for_submission.py`` prints (ids deduplicated by a dict)."""
    distinct = len({a["question_id"] for a in answers})
    malformed = len(getattr(answers, "malformed", []))
    return f"total results: {distinct}, total split: {len(questions)}, error_line: {malformed}\n"


def score(questions, answers, *, protocol: str, settings: dict | None = None) -> Scored:
    """Exact-match accuracy; official output starts with the converter's line."""
    quirks = ("question_id looked up as str(question_id)",) + OFFICIAL_QUIRKS[:2]
    scored = score_exact_match("VQAv2", questions, answers, protocol=protocol, settings=settings,
                               by_str=True, quirks=quirks, write_ans_gt=False,
                               notes=["exact match against a single answer string, not VQA soft accuracy"])
    if protocol == "official":
        scored.stdout = converter_line(questions, answers) + scored.stdout
    return scored


def run(args: argparse.Namespace, task: str) -> Scored:
    """CLI entry."""
    questions, answers, settings = read_inputs(args)
    check_answer_field(questions, args.question_file)
    return score(questions, answers, protocol=args.protocol, settings=settings)
