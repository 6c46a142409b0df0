"""Hostile input to the scorers (issue 17, class 7): NaN ground truth is reported, an empty
answers file under ``strict`` says so on stderr, the strict box parser is linear."""
import logging
import re
import time

import pytest

from llava.eval.scorers.grounding import parse_box_strict, score_records

QUESTIONS = [{"question_id": 1, "answer_bbox": "[0.1, 0.1, 0.5, 0.5]", "size": [10, 10], "text": "q"},
             {"question_id": 2, "answer_bbox": "[nan, 0.1, 0.5, 0.5]", "size": [10, 10], "text": "q"},
             {"question_id": 3, "answer_bbox": "[0.1, 0.1, 0.5, 0.5]", "size": [float("inf"), 10], "text": "q"}]
ANSWERS = [{"question_id": q, "text": "[0.1, 0.1, 0.5, 0.5]"} for q in (1, 2, 3)]


@pytest.mark.parametrize("protocol", ["strict", "official"])
def test_nan_ground_truth_is_reported(protocol, caplog):
    with caplog.at_level(logging.WARNING):
        scored = score_records(QUESTIONS, ANSWERS, protocol=protocol, settings={"question_file": "q.jsonl"})
    if protocol == "strict":  # (the official parser's quirk loses the last digit: every box is wrong there)
        assert scored.result["metrics"]["accuracy"] == pytest.approx(100 / 3)  # still counted wrong, as before
    note = "2 question(s) with a NaN or infinite ground-truth box or size, counted wrong; fix q.jsonl"
    assert note in scored.result["notes"] and note in caplog.text


def test_finite_ground_truth_adds_no_note(caplog):
    with caplog.at_level(logging.WARNING):
        scored = score_records(QUESTIONS[:1], ANSWERS[:1], protocol="strict")
    assert scored.result["notes"] == [] and caplog.text == ""


def test_empty_answers_under_strict_is_printed(caplog):
    with caplog.at_level(logging.WARNING):
        scored = score_records(QUESTIONS[:1], [], protocol="strict", settings={"answers_file": "a.jsonl"})
    assert scored.result["metrics"]["accuracy"] == 0.0
    assert "'a.jsonl' holds no answers: all 1 questions counted wrong" in caplog.text
    assert any("holds no answers" in n for n in scored.result["notes"])


_OLD_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_OLD_BRACKETED = re.compile(r"\[\s*(" + _OLD_NUM + r")\s*,\s*(" + _OLD_NUM + r")\s*,\s*(" + _OLD_NUM + r")\s*,\s*("
                            + _OLD_NUM + r")\s*\]")
_OLD_BARE = re.compile(r"\s*(" + _OLD_NUM + r")\s*,\s*(" + _OLD_NUM + r")\s*,\s*(" + _OLD_NUM + r")\s*,\s*("
                       + _OLD_NUM + r")\s*\.?\s*")


@pytest.mark.parametrize("text", ["[0.1, 0.2, 0.3, 0.45]", "0.1,0.2,0.3,0.4.", " 1., .5, 2e-1 , 3 . ", "[1,2,3]",
                                  "box: [ 10 ,20,30, 40 ] and [1,2,3,4]", "1,2,3,4,5", "[+1.5,-2,3E2,4.]", ""])
def test_linear_parser_reads_what_the_old_one_read(text):
    m = _OLD_BRACKETED.search(text) or _OLD_BARE.fullmatch(text)
    assert parse_box_strict(text) == ([float(x) for x in m.groups()] if m else None)


@pytest.mark.parametrize("text", ["1" * 16000, "[1,2,3," * 2300, "1, 2, 3, 4" + " " * 16000 + "x",
                                  "[" + "1" * 16000, "0." * 8000])
def test_strict_box_parser_is_linear(text):
    t0 = time.perf_counter()
    parse_box_strict(text)
    parse_box_strict(text * 2)
    assert time.perf_counter() - t0 < 0.5  # the old pattern took ~6 s on 16 000 digits
