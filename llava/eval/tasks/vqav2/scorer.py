"""VQAv2 (MM-MergeBench's val split with one answer string per question): exact match.

This is NOT the VQA soft accuracy: the benchmark's scorer compares the whole prediction with the
single ground-truth string after ``str.upper()`` (see :mod:`llava.eval.scorers.exact`).

- ``official`` reproduces ``llava/eval/eval_vqav2.py`` of RobustMerge, which looks answers up by
  ``str(question_id)``; denominator = number of answer lines. It also prints the first line of
  ``scripts/convert_vqav2_for_submission.py`` (which ``4_eval_vqav2.sh`` runs first):
  ``total results: <distinct answer ids>, total split: <questions>, error_line: <malformed>``.
  The converter's ``answers_upload.json`` (the EvalAI test-server upload: ``[{question_id,
  answer}, ...]`` in question-file order, answers normalised by
  :func:`llava.eval.scorers.vqa_normalize.normalize_answer`) is written with ``--output-dir``;
  where a question has no prediction (the converter's assertion fails) it is not written.
- ``strict``: id join, denominator = questions, missing/empty answers wrong.
"""

from __future__ import annotations

import json
import logging
import os

from llava.eval.scorers.common import Scored, write_text_atomic
from llava.eval.scorers.exact import (  # noqa: F401  (parse, judge: the scorer interface)
    OFFICIAL_QUIRKS, exact_match as judge, parse_text as parse, question_file_scorer, score_exact_match,
)
from llava.eval.scorers.vqa_normalize import normalize_answer

logger = logging.getLogger(__name__)

UPLOAD_FILE = "answers_upload.json"


def converter_line(questions, answers) -> str:
    """The line ``convert_vqav2_for_submission.py`` prints (ids deduplicated by a dict)."""
    distinct = len({a["question_id"] for a in answers})
    malformed = len(getattr(answers, "malformed", []))
    return f"total results: {distinct}, total split: {len(questions)}, error_line: {malformed}\n"


def upload_answers(questions, answers) -> list[dict] | None:
    """The converter's upload list, or None where a question has no prediction (it asserts).

    Predictions are keyed by ``question_id`` as parsed (the last line of an id wins, as with the
    converter's dict); the list follows the question file's order.
    """
    texts = {a["question_id"]: a["text"] for a in answers}
    if any(q["question_id"] not in texts for q in questions):
        return None
    return [{"question_id": q["question_id"], "answer": normalize_answer(texts[q["question_id"]])}
            for q in questions]


def upload_text(upload: list[dict]) -> str:
    """``answers_upload.json`` as the converter wrote it (``json.dump`` defaults, no newline)."""
    return json.dumps(upload)


def write_upload(folder: str | os.PathLike, questions, answers) -> bool:
    """Write ``answers_upload.json`` into ``folder`` atomically; False (nothing written) where a
    question has no prediction."""
    upload = upload_answers(questions, answers)
    if upload is None:
        return False
    write_text_atomic(os.path.join(folder, UPLOAD_FILE), upload_text(upload))
    return True


def score_records(questions, answers, *, protocol: str, settings: dict | None = None) -> Scored:
    """Exact-match accuracy; official output starts with the converter's line."""
    quirks = ("question_id looked up as str(question_id)",) + OFFICIAL_QUIRKS[:2]
    scored = score_exact_match("VQAv2", questions, answers, protocol=protocol, settings=settings,
                               by_str=True, quirks=quirks, write_ans_gt=False,
                               notes=["exact match against a single answer string, not VQA soft accuracy"])
    if protocol == "official":
        scored.stdout = converter_line(questions, answers) + scored.stdout
        upload = upload_answers(questions, answers)
        if upload is None:
            note = (f"{UPLOAD_FILE} not written: some questions have no prediction "
                    "(the original converter stops with an AssertionError)")
            logger.warning(note)
            scored.result["notes"].append(note)
        else:
            # written by the CLI with --output-dir, next to Result.text
            scored.side_files[UPLOAD_FILE] = upload_text(upload)
    return scored


#: the scorer interface: score(inputs, answers, protocol) -> Scored
score = question_file_scorer(score_records)
