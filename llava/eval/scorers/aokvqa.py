"""AOKVQA (multiple choice, unseen task): exact match with the option letter.

The answer is a letter; the prediction must be exactly that letter up to case ("a" is right,
"A." or "The answer is A." are wrong). Both protocols keep this rule (it is the benchmark's
metric); ``official`` reproduces ``llava/eval/eval_aokvqa.py`` of RobustMerge (lookup by
``question_id`` with its JSON type, denominator = answer lines, ``ans_gt.json`` written),
``strict`` joins by id and counts missing/empty answers wrong (see
:mod:`llava.eval.scorers.iconqa`). ``unparsed`` counts predictions that are not a single
letter after stripping spaces.
"""

from __future__ import annotations

import argparse
import re

from llava.eval.scorers.common import Scored
from llava.eval.scorers.iconqa import (
    OFFICIAL_QUIRKS, add_args, check_answer_field, read_inputs, score_exact_match,
)

TASKS = ("AOKVQA",)
QUESTION_FILE_REQUIRED = True
__all__ = ["TASKS", "add_args", "run", "score", "is_not_a_letter"]

_LETTER = re.compile(r"[A-Za-z]")


def is_not_a_letter(pred: str) -> bool:
    """True when the prediction is not one option letter (spaces aside)."""
    return _LETTER.fullmatch(pred.strip()) is None


def score(questions, answers, *, protocol: str, settings: dict | None = None) -> Scored:
    """Exact-match accuracy with the option letter."""
    return score_exact_match("AOKVQA", questions, answers, protocol=protocol, settings=settings,
                             is_unparsed=is_not_a_letter, quirks=OFFICIAL_QUIRKS,
                             notes=["a prediction is right only if it is exactly the letter "
                                    "(case-insensitive); 'A.' is wrong in both protocols"])


def run(args: argparse.Namespace, task: str) -> Scored:
    """CLI entry."""
    questions, answers, settings = read_inputs(args)
    check_answer_field(questions, args.question_file)
    return score(questions, answers, protocol=args.protocol, settings=settings)
