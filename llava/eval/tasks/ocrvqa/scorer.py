"""OCR-VQA: exact match after lower-casing, with the authors' "Unanswerable" rule.

- ``official`` reproduces ``llava/eval/eval_ocrvqa.py`` of RobustMerge: answers in file order are
  looked up by ``question_id`` (JSON type); an answer containing the case-sensitive substring
  ``Unanswerable`` is counted wrong (even when the ground truth is "Unanswerable"); otherwise
  ``pred.lower() == answer.lower()``. The denominator is the number of answer lines, and the
  script prints ``Samples: 0`` because its sample list is never filled.
- ``strict``: id join, denominator = questions, missing/empty answers wrong, plain
  case-insensitive exact match (an answer containing "Unanswerable" can only be right when it
  equals the ground truth), and ``Samples`` is the real count.
"""

from __future__ import annotations

from llava.eval.scorers.common import Scored
from llava.eval.scorers.exact import (  # noqa: F401  (parse: the scorer interface)
    OFFICIAL_QUIRKS, accuracy_lines, parse_text as parse, question_file_scorer, result_text, score_exact_match,
)


def official_right(pred: str, answer: str) -> bool:
    """The original rule: 'Unanswerable' anywhere (case-sensitive) is wrong, else lower-case equality."""
    return "Unanswerable" not in pred and pred.lower() == answer.lower()


def strict_right(pred: str, answer: str) -> bool:
    """Case-insensitive exact match."""
    return pred.lower() == answer.lower()


def judge(parsed: str, gt: str) -> bool:
    """The strict rule (the official one is :func:`official_right`)."""
    return strict_right(parsed, gt)


def score_records(questions, answers, *, protocol: str, settings: dict | None = None) -> Scored:
    """Accuracy; the official printed ``Samples`` is 0 as in the original."""
    official = protocol == "official"
    quirks = OFFICIAL_QUIRKS + (
        "an answer containing 'Unanswerable' (case-sensitive) is wrong, even if the ground truth is 'Unanswerable'",
        "prints 'Samples: 0' (the original never fills its sample list)",
    )
    scored = score_exact_match("OCRVQA", questions, answers, protocol=protocol, settings=settings,
                               is_right=official_right if official else strict_right,
                               quirks=quirks, write_ans_gt=False)
    if official:
        acc = scored.result["metrics"]["accuracy"]
        scored.stdout = accuracy_lines(0, acc)
        scored.side_files = {"Result.text": result_text(0, acc)}
    return scored


#: the scorer interface: score(inputs, answers, protocol) -> Scored
score = question_file_scorer(score_records)
