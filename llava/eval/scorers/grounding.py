"""The box family (REC / grounding): a predicted box is right iff its IoU with the ground-truth box is > 0.5.

Boxes are ``[x1, y1, x2, y2]`` normalised to the padded square image; the ground truth is the
question's ``answer_bbox`` string and ``size`` ``[w, h]``. Both boxes are multiplied by
``max(size)`` before the IoU (as the original; it only changes float rounding). IoU: intersection
clipped at 0 per axis; 0 when the union is not positive.

- ``official`` reproduces ``llava/eval/eval_grounding.py`` of RobustMerge: answers looked up by
  ``question_id`` (JSON type) in file order; the prediction loses every ``[``/``]``, then its
  FIRST AND LAST CHARACTERS (so ``[0.1, 0.2, 0.3, 0.45]`` is read as ``.1, 0.2, 0.3, 0.4``), and
  must split on commas into exactly 4 floats, else it is wrong; denominator = answer lines.
- ``strict``: id join, denominator = questions, missing answers wrong; the box parser keeps all
  digits: the first ``[a, b, c, d]`` group of four numbers anywhere in the text, or a text that
  is just four comma-separated numbers (a trailing "." allowed); anything else is unparsed
  (wrong). The model should also be run with pad preprocessing (see ``llava.eval.tasks``).
"""

from __future__ import annotations

import re
from typing import Sequence

from llava.eval.scorers.common import ScoreError, Scored, join_by_id, lookup_official
from llava.eval.scorers.exact import accuracy_scored, read_task_questions

Box = list[float]
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_BRACKETED = re.compile(r"\[\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*,\s*("
                        + _NUM + r")\s*\]")
_BARE = re.compile(r"\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*,\s*(" + _NUM + r")\s*,\s*(" + _NUM
                   + r")\s*\.?\s*")

OFFICIAL_QUIRKS = (
    "predicted box: brackets removed, then the first and last characters dropped (the last digit of y2 is lost)",
    "unparsable prediction counted wrong; denominator = number of answer lines",
    "missing answers left out of the denominator; duplicated answer lines each counted",
    "question_id looked up with its JSON type",
    "boxes normalised to the padded square although the original runner centre-crops the image",
)


def parse_box_official(text: str) -> Box | None:
    """The original parser (quirk included); ``None`` when it would skip the item."""
    body = text.replace("[", "").replace("]", "")[1:-1]
    try:
        box = [float(x) for x in body.split(",")]
    except ValueError:
        return None
    return box if len(box) == 4 else None


def parse_box_strict(text: str) -> Box | None:
    """All digits kept: the first bracketed group of 4 numbers, or exactly 4 bare numbers."""
    m = _BRACKETED.search(text) or _BARE.fullmatch(text)
    return [float(x) for x in m.groups()] if m else None


def parse_gt_box(question: dict, path: str = "") -> Box:
    """The question's ``answer_bbox`` string as 4 floats (the original's parse)."""
    try:
        box = [float(x) for x in str(question["answer_bbox"]).replace("[", "").replace("]", "").split(",")]
        size = question["size"]
        max(size)
    except (KeyError, ValueError, TypeError):
        raise ScoreError(f"{path}: question {question.get('question_id')!r} lacks a valid answer_bbox "
                         "'[x1, y1, x2, y2]' and size [w, h]") from None
    if len(box) != 4:
        raise ScoreError(f"{path}: question {question['question_id']!r}: answer_bbox has {len(box)} numbers")
    return box


def iou(box1: Box, box2: Box) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes (the original's formula)."""
    x1, y1, x2, y2 = box1
    u1, v1, u2, v2 = box2
    inter = max(0, min(x2, u2) - max(x1, u1)) * max(0, min(y2, v2) - max(y1, v1))
    union = (x2 - x1) * (y2 - y1) + (u2 - u1) * (v2 - v1) - inter
    return inter / union if union > 0 else 0


def is_hit(pred: Box, question: dict, path: str = "") -> bool:
    """IoU > 0.5 after scaling both boxes by ``max(size)``."""
    scale = max(question["size"])
    gt = [x * scale for x in parse_gt_box(question, path)]
    return iou([x * scale for x in pred], gt) > 0.5


def score_records(questions: Sequence[dict], answers: Sequence[dict], *, protocol: str,
                  settings: dict | None = None, task: str = "Grounding") -> Scored:
    """Accuracy@0.5 (see the module docstring)."""
    settings = dict(settings or {})
    qf, af = settings.get("question_file", ""), settings.get("answers_file", "")
    report = join_by_id(questions, answers, question_file=qf, answers_file=af)
    if protocol == "official":
        pairs = lookup_official(questions, answers, question_file=qf, answers_file=af)
        parse = parse_box_official
    else:
        pairs, parse = report.pairs, parse_box_strict
    boxes = [parse(a["text"]) if a is not None else None for _, a in pairs]
    flags = [b is not None and is_hit(b, q, qf) for (q, _), b in zip(pairs, boxes)]
    unparsed = sum(b is None for (_, a), b in zip(pairs, boxes) if a is not None)
    if not flags:
        raise ScoreError(f"{af}: no answers to score (the original divides by zero)")
    return accuracy_scored(task, protocol, flags, unparsed, report, questions, answers, quirks=OFFICIAL_QUIRKS,
                           settings=settings)


def score_task(inputs, answers, protocol: str, task: str = "Grounding") -> Scored:
    """``score(inputs, answers, protocol)`` of a box task: every question's box checked first."""
    questions, settings = read_task_questions(inputs, check_field=None)
    for q in questions:
        parse_gt_box(q, inputs.question_file)
    return score_records(questions, answers, protocol=protocol, settings=settings, task=task)
