"""AOKVQA (multiple choice, unseen task): exact match with the option letter.

The answer is a letter; the prediction must be exactly that letter up to case ("a" is right,
"A." or "The answer is A." are wrong). Both protocols keep this rule (it is the benchmark's
metric); ``official`` reproduces ``llava/eval/eval_aokvqa.py`` of RobustMerge (lookup by
``question_id`` with its JSON type, denominator = answer lines, ``ans_gt.json`` written),
``strict`` joins by id and counts missing/empty answers wrong (see
:mod:`llava.eval.scorers.exact`). ``unparsed`` counts predictions that are not a single
letter after stripping spaces.
"""

from __future__ import annotations

import re

from llava.eval.scorers.common import Scored
from llava.eval.scorers.exact import (  # noqa: F401  (parse, judge: the scorer interface)
    OFFICIAL_QUIRKS, exact_match as judge, parse_text as parse, question_file_scorer, score_exact_match,
)

_LETTER = re.compile(r"[A-Za-z]")


def is_not_a_letter(pred: str) -> bool:
    """True when the prediction is not one option letter (spaces aside)."""
    return _LETTER.fullmatch(pred.strip()) is None


def score_records(questions, answers, *, protocol: str, settings: dict | None = None) -> Scored:
    """Exact-match accuracy with the option letter."""
    return score_exact_match("AOKVQA", questions, answers, protocol=protocol, settings=settings,
                             is_unparsed=is_not_a_letter, quirks=OFFICIAL_QUIRKS,
                             notes=["a prediction is right only if it is exactly the letter "
                                    "(case-insensitive); 'A.' is wrong in both protocols"])


#: the scorer interface: score(inputs, answers, protocol) -> Scored
score = question_file_scorer(score_records)
