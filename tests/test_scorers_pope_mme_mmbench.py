"""POPE, MME and MMBench scorers on hand-built inputs with known answers.

POPE is also checked against the original ``eval_pope.py`` output kept in
``/work/shared/fixtures/official_scores/pope`` (skipped where that folder is absent).
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
from pathlib import Path

import pytest

from llava.eval import mmbench_data
from conftest import FIXTURES, needs_fixture
from llava.eval.scorers.mmbench import main as mmbench_main
from llava.eval.scorers.mme import main as mme_main
from llava.eval.scorers.pope import main as pope_main
from llava.eval.tasks.mmbench import scorer as mmbench
from llava.eval.tasks.mme import scorer as mme
from llava.eval.tasks.pope import scorer as pope

POPE_FIXTURE = FIXTURES / "official_scores" / "pope"
SUFFIX = "\nAnswer the question using a single word or phrase."


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def answer(qid, text, prompt="") -> dict:
    return {"question_id": qid, "prompt": prompt, "text": text, "answer_id": "x", "model_id": "m", "metadata": {}}


# ============================================================================ POPE


@pytest.mark.parametrize("text, llava, strict", [
    ("Yes", "yes", "yes"),
    ("No", "no", "no"),
    ("NO", "yes", "no"),                       # the original only knows "No", "no", "not"
    ("Yes, there is", "yes", "yes"),
    ("Yes, there is a dog in the image.", "yes", "yes"),
    ("not sure", "no", None),
    ("Not sure", "yes", None),
    ("There is no dog", "no", None),
    ("There is no dog.", "no", None),
    ("", "yes", None),                         # empty answers count as yes in the original
    ("Nope", "yes", None),
    ("yes,no", "yes", "yes"),                  # commas removed -> "yesno"
    ("Yes. No doubt.", "yes", "yes"),          # only the first sentence is read
    ("No, there is not.", "no", "no"),
    ("  yes", "yes", "yes"),
])
def test_pope_parsers(text, llava, strict):
    assert pope.llava_yes_no(text) == llava
    assert pope.strict_yes_no(text) == strict


def _fixture_blocks(text: str) -> dict[str, str]:
    """Split eval_pope.py's stdout into {category: block} (its block order is os.listdir's)."""
    blocks = [b + "====================================\n"
              for b in text.split("====================================\n") if b.strip()]
    return {re.match(r"Category: (\w+),", b).group(1): b for b in blocks}


@needs_fixture("official_scores", "pope")
def test_pope_official_reproduces_eval_pope_output(tmp_path, capsys):
    out = tmp_path / "result.json"
    rc = pope_main(["--annotation-dir", str(POPE_FIXTURE / "pope/coco"),
                    "--question-file", str(POPE_FIXTURE / "pope/llava_pope_test.jsonl"),
                    "--answers-file", str(POPE_FIXTURE / "results/pope/llava-v1.5-7b.jsonl"),
                    "--result-file", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    expected = _fixture_blocks((POPE_FIXTURE / "expected/stdout.txt").read_text())
    ours = _fixture_blocks(printed.split("Mean F1:")[0])
    assert ours == expected                     # every line of every block, byte for byte
    assert list(ours) == ["adversarial", "popular", "random"]   # fixed order (original: os.listdir)
    res = json.loads(out.read_text())
    parsed = json.loads((POPE_FIXTURE / "expected/expected.json").read_text())["parsed_stdout"]["per_category"]
    for split, vals in parsed.items():
        assert res["metrics"][f"{split}/f1"] == 100 * vals["F1 score"]
        assert res["metrics"][f"{split}/accuracy"] == 100 * vals["Accuracy"]
        assert res["metrics"][f"{split}/yes_ratio"] == 100 * vals["Yes ratio"]
        assert res["counts"][f"{split}/TP"] == vals["TP"]
    f1s = [parsed[s]["F1 score"] for s in pope.SPLITS]
    assert res["headline"] == "f1_mean"
    assert res["metrics"]["f1_mean"] == 100 * (sum(f1s) / 3)
    # non-conforming: "There is no dog.", "I think so", "Not sure", "There is a car, no", "",
    # "The car is not visible.", "I don't know", "Nope", "There is a cat"
    assert res["counts"]["unparsed"] == 9 and res["counts"]["scored"] == 29
    assert res["unparsed_share"] == 9 / 29
    assert res["protocol"] == "official" and res["quirks"]


@needs_fixture("official_scores", "pope")
def test_pope_strict_on_fixture_by_hand():
    score, _ = pope.score_files(POPE_FIXTURE / "pope/coco", POPE_FIXTURE / "pope/llava_pope_test.jsonl",
                                POPE_FIXTURE / "results/pope/llava-v1.5-7b.jsonl", "strict")
    got = {k: (s.tp, s.fp, s.tn, s.fn, s.other) for k, s in score.splits.items()}
    assert got == {"adversarial": (3, 0, 3, 2, 2), "popular": (4, 0, 2, 1, 2), "random": (4, 0, 3, 1, 2)}
    f = 2 * 1.0 * 0.8 / (1.0 + 0.8)
    assert pope.to_metrics(score)["f1_mean"] == 100 * ((0.75 + f + f) / 3)
    assert "Missing or non-conforming on 'no' labels (wrong): 2" in pope.format_report(score)


def _pope_inputs(tmp_path: Path, label_ids_restart: bool = False):
    """Six questions, two per split. With ``label_ids_restart`` the label files number their
    lines 1..2 per split (as the released POPE files do) while the question ids are unique."""
    labels = {"adversarial": ["yes", "no"], "popular": ["no", "yes"], "random": ["yes", "no"]}
    questions, qid = [], 100
    for split, labs in labels.items():
        rows = []
        for i, lab in enumerate(labs):
            image, text = f"COCO_{split}_{i}.jpg", f"Is there a thing{i} in the image?"
            questions.append({"question_id": qid, "image": image, "text": text + SUFFIX, "category": split})
            rows.append({"question_id": i + 1 if label_ids_restart else qid, "image": image, "text": text,
                         "label": lab})
            qid += 1
        write_jsonl(tmp_path / "coco" / f"coco_pope_{split}.json", rows)
    write_jsonl(tmp_path / "questions.jsonl", questions)
    return tmp_path / "coco", tmp_path / "questions.jsonl"


# answers to ids 100..105 (labels yes, no, no, yes, yes, no)
POPE_TEXTS = ["Yes, there is a cat.", "NO", "There is no dog", "yes", "Not sure", "No."]


def test_pope_strict_counts_by_hand(tmp_path):
    coco, qfile = _pope_inputs(tmp_path, label_ids_restart=True)
    afile = write_jsonl(tmp_path / "answers.jsonl", [answer(100 + i, t) for i, t in enumerate(POPE_TEXTS)])
    score, _ = pope.score_files(coco, qfile, afile, "strict")
    adv, popu, rnd = (score.splits[s] for s in pope.SPLITS)
    assert (adv.tp, adv.fp, adv.tn, adv.fn, adv.other) == (1, 0, 1, 0, 0)
    assert (popu.tp, popu.fp, popu.tn, popu.fn, popu.other) == (1, 0, 0, 0, 1)   # "There is no dog": wrong
    assert (rnd.tp, rnd.fp, rnd.tn, rnd.fn, rnd.other) == (0, 0, 1, 1, 0)        # "Not sure": wrong
    assert popu.accuracy() == 0.5 and rnd.accuracy() == 0.5 and adv.f1() == 1.0
    assert rnd.yes_ratio() == 0.0 and popu.yes_ratio() == 0.5
    assert score.counts["unparsed"] == 2 and score.counts["scored"] == 6
    metrics = pope.to_metrics(score)
    assert metrics["f1_mean"] == 100 * ((1.0 + 1.0 + 0.0) / 3)
    assert metrics["nonconforming_rate"] == 100 * 2 / 6


def test_pope_official_counts_by_hand(tmp_path):
    coco, qfile = _pope_inputs(tmp_path, label_ids_restart=True)
    afile = write_jsonl(tmp_path / "answers.jsonl", [answer(100 + i, t) for i, t in enumerate(POPE_TEXTS)])
    score, _ = pope.score_files(coco, qfile, afile, "official")
    adv, popu, rnd = (score.splits[s] for s in pope.SPLITS)
    assert (adv.tp, adv.fp, adv.tn, adv.fn) == (1, 1, 0, 0)      # "NO" reads as yes
    assert (popu.tp, popu.fp, popu.tn, popu.fn) == (1, 0, 1, 0)  # "There is no dog" reads as no
    assert (rnd.tp, rnd.fp, rnd.tn, rnd.fn) == (1, 0, 1, 0)      # "Not sure" reads as yes
    assert score.counts["misaligned"] == 0 and score.counts["unparsed"] == 2


def test_pope_shuffled_answers_strict_same_official_not(tmp_path):
    coco, qfile = _pope_inputs(tmp_path)
    rows = [answer(100 + i, t) for i, t in enumerate(POPE_TEXTS)]
    in_order = write_jsonl(tmp_path / "a.jsonl", rows)
    shuffled = write_jsonl(tmp_path / "b.jsonl", rows[::-1])
    strict_a, _ = pope.score_files(coco, qfile, in_order, "strict")
    strict_b, _ = pope.score_files(coco, qfile, shuffled, "strict")
    assert pope.to_metrics(strict_a) == pope.to_metrics(strict_b)
    off_a, _ = pope.score_files(coco, qfile, in_order, "official")
    off_b, _ = pope.score_files(coco, qfile, shuffled, "official")
    # The original pairs by position: within each split the two answers swap labels.
    assert off_b.counts["misaligned"] == 6 and off_a.counts["misaligned"] == 0
    popu_a, popu_b = off_a.splits["popular"], off_b.splits["popular"]
    assert (popu_a.tp, popu_a.fp, popu_a.tn, popu_a.fn) == (1, 0, 1, 0)
    assert (popu_b.tp, popu_b.fp, popu_b.tn, popu_b.fn) == (0, 1, 0, 1)
    assert any("disagree with the id join" in n for n in off_b.notes)


def test_pope_missing_answer_is_wrong_in_strict(tmp_path):
    coco, qfile = _pope_inputs(tmp_path)
    afile = write_jsonl(tmp_path / "a.jsonl", [answer(100 + i, "Yes" if i % 2 == 0 else "No") for i in range(5)])
    score, _ = pope.score_files(coco, qfile, afile, "strict")
    assert score.counts["missing"] == 1
    rnd = score.splits["random"]          # id 105 (label no) is missing
    assert (rnd.tp, rnd.tn, rnd.other) == (1, 0, 1) and rnd.accuracy() == 0.5


def test_pope_cli_bad_input_exits_2(tmp_path, capsys):
    coco, qfile = _pope_inputs(tmp_path)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 100, "text": "Yes"}\n{"question_id": 101, "te', encoding="utf-8")
    rc = pope_main(["--annotation-dir", str(coco), "--question-file", str(qfile), "--answers-file", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and str(bad) in err and "Traceback" not in err
    rc = pope_main(["--annotation-dir", str(tmp_path / "nope"), "--question-file", str(qfile),
                    "--answers-file", str(bad)])
    err = capsys.readouterr().err
    assert rc == 2 and "coco_pope_adversarial.json" in err


# ============================================================================ MME

NESTED = ("artwork", "celebrity", "landmark", "posters", "scene")


def _mme_tree(root: Path) -> list[tuple[str, str, str, str]]:
    """Ground truth: one image per subtask, two per existence/count; returns (cat, image, question, gt)."""
    gt = []
    for cat in mme.CATEGORIES:
        images = ["e1", "e2"] if cat in ("existence", "count") else ["i1"]
        for img in images:
            qs = [(f"Is there a {cat} {img} in this image? Please answer yes or no.", "Yes"),
                  (f"Is there a cat in the {img} image?  Please answer yes or no.", "No")]
            if cat in NESTED:
                qa = root / cat / "questions_answers_YN" / f"{img}.txt"
                (root / cat / "images").mkdir(parents=True, exist_ok=True)
            else:
                qa = root / cat / f"{img}.txt"
            qa.parent.mkdir(parents=True, exist_ok=True)
            qa.write_text("".join(f"{q}\t{a}\n" for q, a in qs), encoding="utf-8")
            gt += [(cat, img, q, a.lower()) for q, a in qs]
    return gt


MME_OVERRIDES = {   # (category, image, gt) -> answer text; everything else answered "Yes"/"No" correctly
    ("existence", "e2", "yes"): "Yes, there is",
    ("existence", "e2", "no"): "not sure",          # official: "no" in the first 4 chars -> right
    ("count", "e1", "yes"): "NO",                   # wrong in both
    ("position", "i1", "no"): "There is no dog",    # other in both
    ("code_reasoning", "i1", "no"): "Nope",         # official: "no"; strict: other
}


def _mme_answers(gt, drop=(("color", "i1", "no"),)):
    rows = []
    for cat, img, q, a in gt:
        if (cat, img, a) in drop:
            continue
        text = MME_OVERRIDES.get((cat, img, a), a.capitalize())
        prompt = q.replace("  Please answer yes or no.", "").replace(" Please answer yes or no.", "") + SUFFIX
        ext = "png" if cat == "code_reasoning" else "jpg"
        rows.append(answer(f"{cat}/{img}.{ext}", text, prompt))
    # interleave existence's two images (yes-q of e1, yes-q of e2, no-q of e1, no-q of e2)
    ex = [i for i, r in enumerate(rows) if r["question_id"].startswith("existence/")]
    rows[ex[1]], rows[ex[2]] = rows[ex[2]], rows[ex[1]]
    return rows


def test_mme_parser():
    assert [mme.mme_yes_no(t) for t in ["Yes", "NO", "Yes, there is", "not sure", "There is no dog", "Nope", ""]] \
        == ["yes", "no", "yes", "no", "other", "no", "other"]
    assert [mme.strict_mme_yes_no(t) for t in ["Yes", "NO", "not sure", "Nope"]] == ["yes", "no", "other", "other"]


@pytest.mark.parametrize("protocol, subtasks, perception, cognition, other", [
    ("official", {"existence": (100.0, 100.0), "count": (75.0, 50.0), "position": (50.0, 0.0),
                  "color": (100.0, 0.0), "code_reasoning": (100.0, 100.0)}, 1675.0, 800.0, 1),
    ("strict", {"existence": (75.0, 50.0), "count": (75.0, 50.0), "position": (50.0, 0.0),
                "color": (50.0, 0.0), "code_reasoning": (50.0, 0.0)}, 1550.0, 650.0, 3),
])
def test_mme_scores_by_hand(tmp_path, protocol, subtasks, perception, cognition, other):
    gt_rows = _mme_tree(tmp_path / "MME")
    gt = mme.read_mme_gt(tmp_path / "MME")
    assert len(gt) == len(gt_rows) == 32
    score = mme.score_mme(gt, _mme_answers(gt_rows), protocol)
    for name, (acc, acc_plus) in subtasks.items():
        s = score.subtasks[name]
        assert (s.acc, s.acc_plus, s.score) == (acc, acc_plus, acc + acc_plus), name
    assert all(score.subtasks[n].score == 200.0 for n in mme.CATEGORIES if n not in subtasks)
    m = mme.to_metrics(score)
    assert (m["perception"], m["cognition"], m["total"]) == (perception, cognition, perception + cognition)
    res = mme.build_result(score, {})
    assert res["headline"] == "perception" and res["counts"]["unparsed"] == other
    assert res["counts"]["missing"] == 1 and res["counts"]["scored"] == 31


def test_mme_shuffled_answers_score_the_same(tmp_path):
    gt_rows = _mme_tree(tmp_path / "MME")
    gt = mme.read_mme_gt(tmp_path / "MME")
    rows = _mme_answers(gt_rows)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    for protocol in ("official", "strict"):
        assert mme.to_metrics(mme.score_mme(gt, rows, protocol)) == mme.to_metrics(mme.score_mme(gt, shuffled, protocol))


def test_mme_extra_duplicate_and_three_field_lines(tmp_path):
    _mme_tree(tmp_path / "MME")
    (tmp_path / "MME" / "OCR" / "i1.txt").write_text(
        "i1.jpg\tWhat is the word? Please answer yes or no.\tYes\n"
        "i1.jpg\tIs the word cat? Please answer yes or no.\tNo\n", encoding="utf-8")
    gt = mme.read_mme_gt(tmp_path / "MME")
    assert [q.question for q in gt if q.category == "OCR"] == [
        "What is the word? Please answer yes or no.", "Is the word cat? Please answer yes or no."]
    rows = [answer("OCR/i1.jpg", "Yes", "What is the word?" + SUFFIX),
            answer("OCR/i1.jpg", "no", "Is the word cat? Please answer yes or no."),
            answer("OCR/i1.jpg", "yes", "Is the word cat?" + SUFFIX),        # duplicate: first wins
            answer("OCR/zz.jpg", "Yes", "What is the word?" + SUFFIX)]       # extra
    score = mme.score_mme(gt, rows, "strict")
    assert score.subtasks["OCR"].score == 200.0
    assert (len(score.matched.duplicates), len(score.matched.extra)) == (1, 1)


def test_mme_cli_writes_result_and_rejects_bad_gt(tmp_path, capsys):
    gt_rows = _mme_tree(tmp_path / "MME")
    afile = write_jsonl(tmp_path / "run" / "answers.jsonl", _mme_answers(gt_rows))
    assert mme_main(["--gt-dir", str(tmp_path / "MME"), "--answers-file", str(afile)]) == 0
    out = capsys.readouterr().out
    assert "total score: 1675.0 \n" in out and "\t existence  score: 200.0" in out
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert res["task"] == "MME" and res["metrics"]["perception"] == 1675.0
    bad = tmp_path / "MME" / "count" / "e1.txt"
    bad.write_text("Is it? Please answer yes or no.\tMaybe\n", encoding="utf-8")
    assert mme_main(["--gt-dir", str(tmp_path / "MME"), "--answers-file", str(afile)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "Traceback" not in err


# ============================================================================ MMBench


@pytest.mark.parametrize("text, expected", [
    ("A", "A"), ("B.", "B"), ("(C) a cat", "C"), ("The answer is B.", "B"), ("Answer: D", "D"),
    ("AB", None), ("A and B", None), ("b", None), ("", None), ("E", None), ("A. A", "A"),
])
def test_mmbench_extract_letter(text, expected):
    assert mmbench.extract_letter(text, "ABCD") == expected


def test_mmbench_prompt_builder():
    opts = {"A": "cat", "B": "dog", "C": float("nan"), "D": ""}
    assert mmbench_data.build_prompt("What is it?", opts, hint="Look closely.") == (
        "Look closely.\nWhat is it?\nA. cat\nB. dog\n"
        "Answer with the option's letter from the given choices directly.")
    assert mmbench_data.build_prompt("Q?", {"A": "x", "B": "y"}, hint=float("nan")) == (
        "Q?\nA. x\nB. y\nAnswer with the option's letter from the given choices directly.")
    assert mmbench_data.present_options({"A": "x", "B": " ", "C": "None", "D": "z"}) == {"A": "x", "D": "z"}


def _png_b64(size=(3, 2), color=(255, 0, 0)) -> str:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# (index, A, B, C, answer, category, l2) -- copies rotate the options
MMB_ROWS = [
    (0, "red", "green", "blue", "A", "color", "perception"),
    (1000000, "green", "blue", "red", "C", "color", "perception"),
    (2000000, "blue", "red", "green", "B", "color", "perception"),
    (1, "one", "two", "three", "B", "count", "perception"),
    (1000001, "two", "three", "one", "A", "count", "perception"),
    (2000001, "three", "one", "two", "C", "count", "perception"),
    (2, "yes", "no", "", "A", "logic", "reasoning"),
    (1000002, "no", "yes", "", "B", "logic", "reasoning"),
    (3, "up", "down", "", "B", "logic", "reasoning"),
    (1000003, "down", "up", "", "A", "logic", "reasoning"),
]
MMB_ANSWERS = {0: "A", 1000000: "C.", 2000000: "(B) red",           # group 0 right
               1: "B", 1000001: "A", 2000001: "B",                   # group 1: one wrong rotation
               2: "AB", 1000002: "B",                                # group 2: extraction failure
               3: "B"}                                               # group 3: a copy unanswered


def _mmb_tsv(path: Path) -> Path:
    img = _png_b64()
    lines = ["index\tquestion\thint\tA\tB\tC\tanswer\tcategory\tl2-category\tcomment\timage"]
    for idx, a, b, c, ans, cat, l2 in MMB_ROWS:
        cell = img if idx == 0 else "0"                # other rows reference row 0's image
        hint = "A hint." if idx % 1000000 == 0 else ""
        lines.append(f"{idx}\tWhich one?\t{hint}\t{a}\t{b}\t{c}\t{ans}\t{cat}\t{l2}\t\t{cell}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_mmbench_tsv_reader_lazy_images(tmp_path):
    items = mmbench_data.read_mmbench_tsv(_mmb_tsv(tmp_path / "dev.tsv"))
    assert [it.index for it in items] == [r[0] for r in MMB_ROWS]
    it = items[7]
    assert it.circular_id == 2 and it.options == {"A": "no", "B": "yes"} and it.answer == "B"
    assert it.hint is None and it.l2_category == "reasoning" and it.extra == {"comment": ""}
    assert it.prompt() == "Which one?\nA. no\nB. yes\nAnswer with the option's letter from the given choices directly."
    assert items[0].prompt().startswith("A hint.\nWhich one?\nA. red\n")
    assert isinstance(it._image_b64, str)            # still base64 until asked
    im = it.image()
    assert im.size == (3, 2) and im.getpixel((0, 0)) == (255, 0, 0)


def _mmb_answers():
    return [answer(i, t) for i, t in MMB_ANSWERS.items()]


def test_mmbench_circular_by_hand(tmp_path):
    items = mmbench_data.read_mmbench_tsv(_mmb_tsv(tmp_path / "dev.tsv"))
    score = mmbench.score_mmbench(items, _mmb_answers())
    m = mmbench.to_metrics(score)
    assert m["circular_accuracy"] == 25.0            # 1 of 4 groups
    assert m["vanilla_accuracy"] == 75.0             # rows 0, 1, 3 right; row 2 ("AB") not
    assert m["extraction_failure_rate"] == 100 * 1 / 9
    assert m["circular/category/color"] == 100.0 and m["circular/category/count"] == 0.0
    assert m["circular/category/logic"] == 0.0
    assert m["circular/l2/perception"] == 50.0 and m["circular/l2/reasoning"] == 0.0
    c = score.counts
    assert (c["questions"], c["scored"], c["unparsed"], c["missing"], c["groups"], c["groups_correct"]) == \
        (10, 9, 1, 1, 4, 1)
    shuffled = _mmb_answers()[::-1]
    assert mmbench.to_metrics(mmbench.score_mmbench(items, shuffled)) == m


def test_mmbench_cli_writes_submission(tmp_path, capsys):
    import pandas as pd
    tsv = _mmb_tsv(tmp_path / "dev.tsv")
    afile = write_jsonl(tmp_path / "run" / "answers.jsonl", _mmb_answers())
    assert mmbench_main(["--question-file", str(tsv), "--answers-file", str(afile)]) == 0
    out = capsys.readouterr().out
    assert "CircularEval accuracy: 25.00% (1 of 4 groups)" in out
    res = json.loads((tmp_path / "run" / "result.json").read_text())
    assert res["headline"] == "circular_accuracy" and res["metrics"]["circular_accuracy"] == 25.0
    df = pd.read_excel(tmp_path / "run" / "submission.xlsx", engine="openpyxl", keep_default_na=False)
    assert list(df.columns) == ["index", "question", "hint", "A", "B", "C", "prediction", "answer",
                                "category", "l2-category", "comment"]
    assert list(df["index"]) == [r[0] for r in MMB_ROWS]
    assert list(df["prediction"]) == [MMB_ANSWERS.get(r[0], "") for r in MMB_ROWS]
    assert mmbench_main(["--question-file", str(tmp_path / "missing.tsv"), "--answers-file", str(afile)]) == 2
    err = capsys.readouterr().err
    assert "missing.tsv" in err and "Traceback" not in err


def test_mmbench_test_split_writes_only_the_submission(tmp_path, capsys):
    import pandas as pd
    tsv = tmp_path / "test.tsv"
    tsv.write_text("index\tquestion\thint\tA\tB\tcategory\timage\n0\tQ?\t\tx\ty\tc\t" + _png_b64() + "\n",
                   encoding="utf-8")
    afile = write_jsonl(tmp_path / "run" / "answers.jsonl", [answer(0, "B")])
    assert mmbench_main(["--question-file", str(tsv), "--answers-file", str(afile)]) == 0
    assert "local scoring skipped" in capsys.readouterr().out
    assert not (tmp_path / "run" / "result.json").exists()
    df = pd.read_excel(tmp_path / "run" / "submission.xlsx", engine="openpyxl", keep_default_na=False)
    assert list(df.columns) == ["index", "question", "hint", "A", "B", "category", "prediction"]
    assert df["prediction"].tolist() == ["B"]
