"""The `strict` protocol, pinned case by case against `official`, and the handling of bad input.

Each test names one difference between the protocols (or one input error) and asserts the
numbers both give. Fixture-based tests use ``shared/fixtures/official_scores``; the rest build
their data in memory or in ``tmp_path``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from llava.eval.scorers import caption, grounding, imagenet
from llava.eval.scorers import exact as iconqa
from llava.eval.tasks.aokvqa import scorer as aokvqa
from llava.eval.tasks.ocrvqa import scorer as ocrvqa
from llava.eval.tasks.scienceqa import scorer as scienceqa
from llava.eval.tasks.vqav2 import scorer as vqav2
from llava.eval.scorers.__main__ import main
from llava.eval.scorers.common import (
    Records, ScoreError, join_by_id, make_result, read_answers, read_questions, write_result,
)
from test_scorers_official import OFFICIAL as FIXTURES, needs_fixtures, needs_java


def load(case: str, question_file: str, answers_file: str):
    folder = FIXTURES / case
    return read_questions(folder / question_file), read_answers(folder / answers_file)


def ans(qid, text, prompt="q"):
    return {"question_id": qid, "prompt": prompt, "text": text}


def acc(scored) -> str:
    return f"{scored.result['metrics']['accuracy']:.2f}"


# ----------------------------------------------------------------------------- ImageNet


@needs_fixtures
def test_imagenet_empty_answer_right_in_official_wrong_in_strict():
    qs, ans_ = load("imagenet", "instructions/ImageNet/test.json", "results/ImageNet/merge.jsonl")
    assert qs[7]["answer"] == "Teapot" and ans_[7]["text"] == ""
    assert imagenet.contains_match("", "Teapot")                      # the official rule
    off = imagenet.score_records(qs, ans_, protocol="official")
    strict = imagenet.score_records(qs, ans_, protocol="strict")
    assert (acc(off), off.result["counts"]["correct"]) == ("79.17", 19)
    assert (acc(strict), strict.result["counts"]["correct"]) == ("75.00", 18)
    assert strict.result["quirks"] == [] and off.result["quirks"]


@needs_fixtures
def test_imagenet_position_vs_id_join():
    qs, ans_ = load("imagenet", "instructions/ImageNet/test.json", "results/ImageNet/merge.jsonl")
    shuffled = Records(list(reversed(ans_)))
    off = imagenet.score_records(qs, shuffled, protocol="official")
    strict = imagenet.score_records(qs, shuffled, protocol="strict")
    assert off.result["counts"]["position_mismatches"] == 24
    assert acc(off) != "79.17" and any("position" in n for n in off.result["notes"])
    assert acc(strict) == "75.00"                                     # unchanged by the order


def test_imagenet_more_answers_than_questions_is_an_error_in_official():
    qs = [{"question_id": i, "answer": "Fig"} for i in range(2)]
    answers = [ans(0, "Fig"), ans(1, "Fig"), ans(1, "Fig")]
    with pytest.raises(ScoreError, match="by position"):
        imagenet.score_records(qs, answers, protocol="official")
    strict = imagenet.score_records(qs, answers, protocol="strict")
    assert acc(strict) == "100.00" and strict.result["counts"]["duplicates"] == 1


# ----------------------------------------------------------------------------- grounding


def test_grounding_official_parser_drops_last_digit():
    assert grounding.parse_box_official("[0.38, 0.13, 0.59, 0.67]") == [0.38, 0.13, 0.59, 0.6]
    assert grounding.parse_box_official("[0.1, 0.2, 0.3, 0.4]") == [0.1, 0.2, 0.3, 0.0]
    assert grounding.parse_box_official("0.2, 0.2, 0.6, 0.6") == [0.2, 0.2, 0.6, 0.0]
    assert grounding.parse_box_official("The box is [0.2, 0.2, 0.6, 0.6]") is None
    assert grounding.parse_box_strict("[0.38, 0.13, 0.59, 0.67]") == [0.38, 0.13, 0.59, 0.67]
    assert grounding.parse_box_strict("0.2, 0.2, 0.6, 0.6.") == [0.2, 0.2, 0.6, 0.6]
    assert grounding.parse_box_strict("The box is [0.2, 0.2, 0.6, 0.6]") == [0.2, 0.2, 0.6, 0.6]
    assert grounding.parse_box_strict("[[0.25, 0.25, 0.75, 0.75]]") == [0.25, 0.25, 0.75, 0.75]
    assert grounding.parse_box_strict("[0.3, 0.3, 0.9, 0.9, 1.0]") is None
    assert grounding.parse_box_strict("[a, b, c, d]") is None
    assert grounding.parse_box_strict("") is None


@needs_fixtures
def test_grounding_fixture_official_vs_strict():
    qs, ans_ = load("grounding", "instructions/Grounding/test.json", "results/Grounding/merge.jsonl")
    off = grounding.score_records(qs, ans_, protocol="official")
    strict = grounding.score_records(qs, ans_, protocol="strict")
    assert (acc(off), off.result["counts"]["unparsed"]) == ("55.00", 5)
    # ids 2 and 7 lose their y2 digit, id 9 has text around the box: right only in strict
    assert (acc(strict), strict.result["counts"]["unparsed"]) == ("70.00", 4)


def test_grounding_missing_answer():
    qs = [{"question_id": i, "answer_bbox": "[0.1, 0.1, 0.5, 0.5]", "size": [100, 50]} for i in (1, 2)]
    answers = [ans(1, "[0.1, 0.1, 0.5, 0.55]")]
    assert acc(grounding.score_records(qs, answers, protocol="official")) == "100.00"
    assert acc(grounding.score_records(qs, answers, protocol="strict")) == "50.00"


# ----------------------------------------------------------------------------- OCRVQA


@needs_fixtures
def test_ocrvqa_samples_zero_and_unanswerable_rule():
    qs, ans_ = load("ocrvqa", "instructions/OCRVQA/test.json", "results/OCRVQA/merge.jsonl")
    off = ocrvqa.score_records(qs, ans_, protocol="official")
    strict = ocrvqa.score_records(qs, ans_, protocol="strict")
    assert off.stdout == "Samples: 0\nAccuracy: 55.00%\n\n"
    assert strict.stdout == "Samples: 20\nAccuracy: 60.00%\n\n"
    # ground truth "Unanswerable", prediction "Unanswerable": wrong in official only
    assert not ocrvqa.official_right("Unanswerable", "Unanswerable")
    assert ocrvqa.strict_right("Unanswerable", "Unanswerable")
    assert not ocrvqa.strict_right("Unanswerable travel", "Travel")


# ----------------------------------------------------------------------------- exact match


EXACT = [  # module, task-specific scorer call
    ("IconQA", lambda qs, a, p: iconqa.score_exact_match("IconQA", qs, a, protocol=p)),
    ("VQAv2", lambda qs, a, p: vqav2.score_records(qs, a, protocol=p)),
    ("AOKVQA", lambda qs, a, p: aokvqa.score_records(qs, a, protocol=p)),
    ("OCRVQA", lambda qs, a, p: ocrvqa.score_records(qs, a, protocol=p)),
]


@pytest.mark.parametrize("name,fn", EXACT, ids=[n for n, _ in EXACT])
def test_exact_match_missing_and_duplicate_answers(name, fn):
    qs = [{"question_id": f"q{i}", "answer": "A"} for i in range(4)]
    answers = [ans("q0", "A"), ans("q1", "a"), ans("q1", "a"), ans("q2", "B")]     # q3 missing, q1 twice
    off, strict = fn(qs, answers, "official"), fn(qs, answers, "strict")
    assert acc(off) == "75.00"                   # 3 of 4 lines: missing left out, duplicate counted twice
    assert acc(strict) == "50.00"                # 2 of 4 questions
    for r in (off.result, strict.result):
        assert (r["counts"]["missing"], r["counts"]["duplicates"]) == (1, 1)


def test_exact_match_empty_answer_to_empty_ground_truth():
    qs = [{"question_id": 1, "answer": ""}, {"question_id": 2, "answer": "x"}]
    answers = [ans(1, ""), ans(2, "X")]
    assert acc(iconqa.score_exact_match("T", qs, answers, protocol="official")) == "100.00"
    assert acc(iconqa.score_exact_match("T", qs, answers, protocol="strict")) == "50.00"


def test_exact_match_extra_answer_and_id_type():
    qs = [{"question_id": i, "answer": "yes"} for i in range(1, 5)]
    extra = [ans(i, "yes") for i in range(1, 5)] + [ans(99, "yes")]
    with pytest.raises(ScoreError, match="KeyError"):
        iconqa.score_exact_match("IconQA", qs, extra, protocol="official")
    strict = iconqa.score_exact_match("IconQA", qs, extra, protocol="strict")
    assert acc(strict) == "100.00" and strict.result["counts"]["extra"] == 1
    as_str = [ans(str(i), "yes") for i in range(1, 5)]            # "1" vs 1
    with pytest.raises(ScoreError, match="JSON type"):
        iconqa.score_exact_match("IconQA", qs, as_str, protocol="official")
    assert acc(vqav2.score_records(qs, as_str, protocol="official")) == "100.00"   # VQAv2 looks up str(id)
    assert acc(iconqa.score_exact_match("IconQA", qs, as_str, protocol="strict")) == "100.00"


@needs_fixtures
def test_fixture_strict_equals_official_when_complete():
    for case, task, qf, af in [("iconqa", "IconQA", "instructions/IconQA/val.json", "results/IconQA/merge.jsonl"),
                               ("tabmwp", "TabMWP", "instructions/TabMWP/test.json", "results/TabMWP/merge.jsonl"),
                               ("aokvqa", "AOKVQA", "instructions/AOKVQA/val.json", "results/AOKVQA/merge.jsonl"),
                               ("vqav2", "VQAv2", "instructions/VQAv2/val.json", "results/VQAv2/merge.jsonl")]:
        qs, a = load(case, qf, af)
        off = iconqa.score_exact_match(task, qs, a, protocol="official")
        strict = iconqa.score_exact_match(task, qs, a, protocol="strict")
        assert acc(off) == acc(strict), case
    qs, a = load("aokvqa", "instructions/AOKVQA/val.json", "results/AOKVQA/merge.jsonl")
    assert aokvqa.score_records(qs, a, protocol="strict").result["counts"]["unparsed"] == 8   # 'A.', '(B)', '', ...


# ----------------------------------------------------------------------------- ScienceQA


@needs_fixtures
def test_scienceqa_img_accuracy_counts_missing_image_problems_in_strict():
    folder = FIXTURES / "scienceqa" / "datasets" / "ScienceQA"
    problems = json.loads((folder / "problems.json").read_text())
    split = json.loads((folder / "pid_splits.json").read_text())["test"]
    answers = read_answers(FIXTURES / "scienceqa" / "results" / "ScienceQA" / "merge.jsonl")
    off = scienceqa.score_records(problems, split, answers, protocol="official")
    strict = scienceqa.score_records(problems, split, answers, protocol="strict")
    assert off.stdout == "Total: 25, Correct: 12, Accuracy: 48.00%, IMG-Accuracy: 50.00%\n"
    # 3052 and 3872 have images but no answer: outside IMG in official, wrong IMG problems in strict
    assert strict.stdout == "Total: 25, Correct: 12, Accuracy: 48.00%, IMG-Accuracy: 43.75%\n"
    assert (off.result["counts"]["img_questions"], strict.result["counts"]["img_questions"]) == (14, 16)
    assert strict.result["counts"]["missing"] == 2 and strict.result["counts"]["extra"] == 1


def test_scienceqa_parsing_and_duplicates():
    assert [scienceqa.parse_letter(t) for t in ("A", "B. x", "The answer is C.", "The answer is Cx",
                                                "The answer is A. The answer is B.", "a", "", "(A)")] == \
        ["A", "B", "C", "C", "FAILED", "FAILED", "FAILED", "FAILED"]
    assert scienceqa.pred_index("E", 4) == -1
    problems = {"1": {"choices": ["x", "y"], "answer": 0, "image": "i.png"}}
    answers = [ans("1", "A", "<image>\nq"), ans("1", "B", "<image>\nq")]
    off = scienceqa.score_records(problems, ["1"], answers, protocol="official")      # last line wins
    strict = scienceqa.score_records(problems, ["1"], answers, protocol="strict")    # first line wins
    assert off.result["metrics"]["accuracy"] == 0.0 and strict.result["metrics"]["accuracy"] == 100.0
    assert strict.result["counts"]["duplicates"] == 1


# ----------------------------------------------------------------------------- captions


def test_caption_official_needs_one_answer_per_image(tmp_path):
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": [{"id": 1}, {"id": 2}],
                              "annotations": [{"image_id": 1, "caption": "a dog", "id": 1},
                                              {"image_id": 2, "caption": "a cat", "id": 2}]}))
    with pytest.raises(ScoreError, match="only 1 answer lines"):
        caption.score_records("Flickr30k", str(gt), [ans("b", "a cat")], protocol="official")
    with pytest.raises(ScoreError, match="no image id 3"):
        caption.score_records("Flickr30k", str(gt), [ans(x, "a") for x in "abc"], protocol="official")
    with pytest.raises(ScoreError, match="needs --question-file"):
        caption.score_records("Flickr30k", str(gt), [ans("b", "a cat")], protocol="strict")


def test_caption_strict_mapping_by_id():
    qs = [{"question_id": "a", "image": "x/0.jpg"}, {"question_id": "b", "image": "x/1.jpg"}]
    report = join_by_id(qs, [ans("b", "a cat")])
    notes: list[str] = []
    caps = caption._strict_captions([1, 2], {1: "f/0.jpg", 2: "f/9.jpg"}, report, "gt", "qf", notes)
    assert caps == {1: "", 2: "a cat"}                          # missing answer -> empty caption
    assert notes and "1 GT image file_name" in notes[0]
    with pytest.raises(ScoreError, match="image ids must be 1..2"):
        caption._strict_captions([1, 3], {}, report, "gt", "qf", [])


@needs_fixtures
@needs_java
def test_caption_strict_joins_by_id_shuffled_answers():
    folder = FIXTURES / "caption_screen2words"
    gt = str(folder / "instructions" / "Screen2words" / "test_coco_type.json")
    answers = read_answers(folder / "results" / "Screen2words" / "merge.jsonl")
    qs = [{"question_id": f"screen2words_{i}", "image": f"Screen2words/{i}.jpg"} for i in range(8)]
    strict = caption.score_records("Screen2Words", gt, Records(list(reversed(answers))), protocol="strict",
                                   questions=qs)
    m = strict.result["metrics"]
    # the official numbers of the in-order file (expected/stdout.txt)
    assert [f"{m[k]:.2f}" for k in caption.METRICS + ("Average",)] == \
        ["48.05", "39.65", "34.16", "28.88", "32.29", "57.12", "275.79", "73.71"]
    assert strict.result["counts"]["unparsed"] == 1 and strict.result["quirks"] == []


def test_caption_without_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(ScoreError, match="need Java"):
        caption.require_java()


# ----------------------------------------------------------------------------- bad input


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(lines))
    return path


def test_truncated_and_malformed_answer_lines(tmp_path):
    f = write_lines(tmp_path / "a.jsonl", [json.dumps(ans(1, "x")) + "\n", "{not json}\n",
                                           json.dumps({"text": "no id"}) + "\n", '{"question_id": 4, "te'])
    with pytest.raises(ScoreError) as e:
        read_answers(f)
    msg = str(e.value)
    assert str(f) in msg and "line 2 (not JSON" in msg and "line 3 (missing question_id)" in msg
    assert "line 4 (truncated last line" in msg
    recs = read_answers(f, skip_malformed=True)
    assert len(recs) == 1 and [n for n, _ in recs.malformed] == [2, 3, 4]


def test_duplicate_question_ids_and_jsonl_questions(tmp_path):
    f = write_lines(tmp_path / "q.json", [json.dumps([{"question_id": 1}, {"question_id": "1"}])])
    with pytest.raises(ScoreError, match="duplicate question_id"):
        read_questions(f)
    g = write_lines(tmp_path / "q.jsonl", [json.dumps({"question_id": i, "answer": "a"}) + "\n" for i in (1, 2)])
    assert [q["question_id"] for q in read_questions(g)] == [1, 2]
    with pytest.raises(ScoreError, match="not found"):
        read_questions(tmp_path / "nope.json")


def test_answers_from_another_question_file():
    qs = [{"question_id": f"iconqa_{i}", "answer": "1"} for i in range(10)]
    other = [ans(f"tabmwp_{i}", "1") for i in range(10)]
    for protocol in ("official", "strict"):
        with pytest.raises(ScoreError, match="another question file"):
            iconqa.score_exact_match("IconQA", qs, other, protocol=protocol)
    with pytest.raises(ScoreError, match="another question file"):
        imagenet.score_records([dict(q, answer="Fig") for q in qs], other, protocol="official")


def test_write_result_refuses_input_and_validates(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text("")
    counts = dict(questions=1, answers=1, scored=1, unparsed=0, missing=0, duplicates=0, extra=0)
    result = make_result("IconQA", "strict", {"accuracy": 1.0}, "accuracy", counts,
                         settings={"answers_file": str(answers)})
    with pytest.raises(ScoreError, match="refusing to overwrite"):
        write_result(answers, result)
    write_result(tmp_path / "r.json", result)
    assert json.loads((tmp_path / "r.json").read_text())["unparsed_share"] == 0.0
    with pytest.raises(ValueError):
        make_result("IconQA", "strict", {"accuracy": 1.0}, "CIDEr", counts)


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    q = write_lines(tmp_path / "q.json", [json.dumps([{"question_id": 1, "answer": "a"}])])
    a = write_lines(tmp_path / "a.jsonl", ['{"question_id": 1, "text": "a"}\n', '{"question_id": 2, "te'])
    rc = main(["--task", "iconqa", "--question-file", str(q), "--answers-file", str(a),
               "--result-file", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err and "line 2" in err
    assert str(a) in err and not (tmp_path / "r.json").exists()
    rc = main(["--task", "iconqa", "--question-file", str(q), "--answers-file", str(a), "--skip-malformed",
               "--protocol", "strict", "--result-file", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 0 and out == "Samples: 1\nAccuracy: 100.00%\n\n"
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["counts"]["malformed_lines"] == 1 and r["task"] == "IconQA" and r["protocol"] == "strict"
    assert main(["--task", "nonsense", "--answers-file", str(a)]) == 2
