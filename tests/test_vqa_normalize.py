"""The EvalAI answer normalisation behind VQAv2's ``answers_upload.json``."""

from __future__ import annotations

import json

import pytest

from llava.eval.tasks.vqav2 import scorer as vqav2
from llava.eval.scorers.vqa_normalize import CONTRACTIONS, normalize_answer

# shared/fixtures/official_scores/vqav2: results/VQAv2/merge.jsonl text -> expected/answers_upload.json
FIXTURE_CASES = [
    ("yes", "yes"),
    ("Yes", "yes"),
    ("Yes.", "yes"),
    ("NO", "no"),
    ("No, there is no dog.", "no there is no dog"),
    ("2", "2"),
    ("two", "2"),
    ("Red", "red"),
    (" red", "red"),
    ("red ", "red"),
    ("Tennis Racket", "tennis racket"),
    ("tennis racquet", "tennis racquet"),
    ("", ""),
    ("1:30", "1:30"),
    ("Left side", "left side"),
    ("The Dog", "dog"),
    ("yes\n", "yes"),
    ("10.0", "10.0"),
    ("a pizza", "pizza"),
    ("WHITE", "white"),
    ("Skiing.", "skiing"),
    ("There is no dog", "there is no dog"),
    ("3 ", "3"),
    ("frisbee", "frisbee"),
]

OWN_CASES = [
    # contractions written without apostrophe
    ("dont", "don't"),
    ("I dont know", "i don't know"),
    ("Cant", "can't"),
    ("isnt", "isn't"),
    ("im here", "i'm here"),
    ("youre", "you're"),
    ("don't", "don't"),
    ("its", "its"),              # an ordinary word, not mapped
    # punctuation
    ("black-and-white", "black and white"),   # no space next to '-': replaced by a space
    ("black - white", "black white"),         # next to a space: removed
    ("(left)", "left"),                       # '(' and ')' each become a space, then collapsed
    ("yes!", "yes"),
    ("what?", "what"),
    ("1,000", "1000"),
    ("a/b", "b"),                             # '/' -> space, then the article 'a' is dropped
    ("dog's", "dog 's"),
    ("tab\there", "tab here"),
    # digits and periods
    ("10.", "10"),
    ("3.5", "3.5"),
    (".5", ".5"),
    ("Ten", "10"),
    ("zero", "0"),
    ("one dog", "1 dog"),
    ("eleven", "eleven"),
    ("An apple", "apple"),
    ("  many   spaces  ", "many spaces"),
]


@pytest.mark.parametrize("text,expected", FIXTURE_CASES + OWN_CASES)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_contraction_table_is_lowercase_apostrophe_free_keys():
    for key, value in CONTRACTIONS.items():
        assert key == key.lower() and "'" not in key and "'" in value
        assert value.replace("'", "") == key


def test_upload_order_format_and_missing():
    questions = [{"question_id": 2}, {"question_id": 1}]
    answers = [{"question_id": 1, "text": "Two."}, {"question_id": 2, "text": "x"},
               {"question_id": 2, "text": "The Cat"}]   # the last line of an id wins
    upload = vqav2.upload_answers(questions, answers)
    assert vqav2.upload_text(upload) == ('[{"question_id": 2, "answer": "cat"}, '
                                         '{"question_id": 1, "answer": "2"}]')
    assert json.loads(vqav2.upload_text(upload)) == upload
    assert vqav2.upload_answers(questions + [{"question_id": 3}], answers) is None


def test_write_upload(tmp_path):
    questions = [{"question_id": 7}]
    assert vqav2.write_upload(tmp_path, questions, [{"question_id": 7, "text": "Yes."}])
    assert (tmp_path / "answers_upload.json").read_text() == '[{"question_id": 7, "answer": "yes"}]'
    assert not vqav2.write_upload(tmp_path / "none", questions, [])
    assert not (tmp_path / "none").exists()
