"""The task specs (llava/eval/tasks/<folder>/task.toml) match the benchmark spec document, and
each task's prompt text is frozen.

Nothing here copies the task table: the expected values are read from the project's benchmark
spec (``<fixtures>/../spec/benchmarks.md``, the tables "The twelve MM-MergeBench tasks" and
"Targets from the paper").
"""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import FIXTURES, needs_fixture
from llava.eval import tasks
from llava.eval.tasks import benchmark, prompts
from robustmerge.table import get_layout

SPEC_DOC = FIXTURES.joinpath("..", "spec", "benchmarks.md")
needs_spec_doc = needs_fixture("..", "spec", "benchmarks.md")


def doc_table(title: str) -> list[list[str]]:
    """The rows (cells stripped) of the first Markdown table after the heading ``title``."""
    text = SPEC_DOC.read_text(encoding="utf-8")
    rows = []
    for line in text[text.index(title):].splitlines()[1:]:
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        elif rows:
            break
    return [r for r in rows[1:] if not set("".join(r)) <= set("-")]


@needs_spec_doc
def test_specs_match_the_benchmark_document():
    rows = doc_table("## The twelve MM-MergeBench tasks")
    assert len(rows) == 12
    for name, split, qfile, preprocessing, tokens, *_ in rows:
        spec = tasks.get_task(name.split(" ")[0])
        assert spec.group == split, name
        assert spec.question_file == "instructions/" + qfile.strip("`"), name
        assert spec.preprocessing_for("official") == ("pad" if preprocessing == "pad" else "crop"), name
        assert spec.max_new_tokens == int(tokens), name
    assert [t.name for t in tasks.tasks(("seen", "unseen"))] == [tasks.get_task(r[0].split(" ")[0]).name
                                                                for r in rows]


@needs_spec_doc
def test_paper_numbers_match_the_benchmark_document():
    layout = get_layout("paper")
    mergebench, general = doc_table("## Targets from the paper"), doc_table("| method | POPE | MME | MMBench |")
    assert len(mergebench) == 8 and len(general) == 7
    expected: dict[str, dict[str, float]] = {}
    for columns, rows in ((layout.mergebench_columns, mergebench), (layout.general, general)):
        for method, *cells in rows:
            expected.setdefault(method, {}).update({c: float(v) for c, v in zip(columns, cells) if v})
    assert layout.paper == expected


def test_groups_headlines_and_decoding():
    assert len(tasks.tasks("seen")) == 8 and len(tasks.tasks("unseen")) == 4
    assert tasks.task_names("general") == ["POPE", "MME", "MMBench"]
    assert {t.name: t.headline for t in tasks.tasks() if t.headline != "accuracy"} == {
        "VizWiz-caption": "CIDEr", "Flickr30k": "CIDEr", "Screen2Words": "CIDEr", "POPE": "f1_mean",
        "MME": "perception", "MMBench": "circular_accuracy"}
    assert {t.column: t.decimals for t in tasks.tasks() if t.decimals != 2} == {"POPE": 1, "MME": 1, "MMBench": 1}
    assert benchmark.CONV_MODE == "vicuna_v1" and benchmark.TEMPERATURE == 0.0


def test_every_task_has_the_scorer_interface():
    for spec in tasks.tasks():
        module = spec.scorer
        assert callable(module.score) and callable(module.parse), spec.name
        assert module.judge is None or callable(module.judge), spec.name
    assert tasks.get_task("rec").scorer.judge([0.1, 0.1, 0.5, 0.5], {"answer_bbox": "[0.1, 0.1, 0.5, 0.5]",
                                                                       "size": [10, 20]})
    assert tasks.get_task("ScienceQA").scorer.parse("The answer is B.") == "B"


def test_preprocessing_by_protocol():
    assert tasks.get_task("Grounding").preprocessing_for("official") == "crop"
    assert tasks.get_task("Grounding").preprocessing_for("strict") == "pad"
    assert tasks.get_task("ScienceQA").preprocessing_for("strict") == "crop"
    assert [t.options["gt_file"] for t in tasks.tasks() if "gt_file" in t.options] == [
        "instructions/VizWiz-caption/val_coco_type.json", "instructions/flickr30k-caption/val_coco_type.json",
        "instructions/Screen2words/test_coco_type.json"]


def test_names_and_aliases():
    assert tasks.get_task("rec").name == "Grounding" and tasks.get_task("imagenet-r").name == "ImageNet-R"
    assert tasks.get_task("screen2words").name == "Screen2Words" and tasks.get_task("pope").name == "POPE"
    assert tasks.get_task("Grounding").column == "REC" and tasks.get_task("Flickr30k").instructions_folder == \
        "flickr30k-caption"
    with pytest.raises(KeyError, match="unknown task 'nonsense'; choose one of: ScienceQA, ImageNet"):
        tasks.get_task("nonsense")


PHRASE = "Answer the question using a single word or phrase."
OPTIONS = prompts.imagenet_option_sentence()

# task: (question, expected user turn, expected stored prompt or None for the default)
SNAPSHOTS = {
    "ScienceQA": (
        {"question_id": "15388", "image": "ScienceQA/test/15388/image.png",
         "text": "<image>\nWhich animal's feet are also adapted for sticking to smooth surfaces?\n"
                 "A. tiger\nB. tree frog\nAnswer with the option's letter from the given choices directly.\n"},
        "<image>\nWhich animal's feet are also adapted for sticking to smooth surfaces?\nA. tiger\nB. tree frog\n"
        "Answer with the option's letter from the given choices directly.",
        None),
    "ImageNet": (
        {"question_id": 0, "image": "ImageNet/val/n02099601/1.JPEG",
         "text": "What is the object in the image?\n" + PHRASE},
        "<image>\nWhat is the object in the image?\nChoose an answer from the choices below: Doormat, Pomeranian, "
        "Chime, Golden retriever, Garden spider, Piggy bank, Walker hound, Castle, Chimpanzee, Sunscreen, ",
        "What is the object in the image?\nChoose an answer from the choices below: Doormat,"),
    "VQAv2": ({"question_id": 262148000, "image": "COCO/val2014/x.jpg", "text": "Is the sky blue?\n" + PHRASE},
              "<image>\nIs the sky blue?\n" + PHRASE, "Is the sky blue?\n" + PHRASE),
    "Grounding": ({"question_id": 1, "image": "COCO/x.jpg", "text": "Please provide the bounding box coordinate "
                   "of the region this sentence describes: man in red."},
                  "<image>\nPlease provide the bounding box coordinate of the region this sentence describes: man in red.",
                  None),
    "OCRVQA": ({"question_id": "1000000_0", "image": "OCRVQA/images/1.jpg", "text": "Who wrote this book?\n" + PHRASE},
               "<image>\nWho wrote this book?\n" + PHRASE, None),
    "VizWiz-caption": ({"question_id": "vizwiz_0", "image": "VizWiz/0.jpg",
                        "text": "What is happening in the image? Generate a brief caption for the image."},
                       "<image>\nWhat is happening in the image? Generate a brief caption for the image.", None),
    "Flickr30k": ({"question_id": "flickr30k_0", "image": "flickr30k/0.jpg",
                   "text": "What is happening in the image? Generate a brief caption for the image."},
                  "<image>\nWhat is happening in the image? Generate a brief caption for the image.", None),
    "IconQA": ({"question_id": "iconqa_0000", "image": "IconQA/images/0.png", "text": "IconQA question 0\n" + PHRASE},
               "<image>\nIconQA question 0\n" + PHRASE, "IconQA question 0\n" + PHRASE),
    "AOKVQA": ({"question_id": "078f1c3464bbcd54", "image": "COCO/val2017/1.jpg",
                "text": "Which option fits item 0?\nA. one\nB. two\nC. three\nD. four\n"
                        "Answer with the option's letter from the given choices directly."},
               "<image>\nWhich option fits item 0?\nA. one\nB. two\nC. three\nD. four\n"
               "Answer with the option's letter from the given choices directly.", None),
    "ImageNet-R": ({"question_id": 0, "image": "imagenet-r/n01443537/art_0.jpg", "text": "What is the object in the image?"},
                   "<image>\nWhat is the object in the image?", "What is the object in the image?"),
    "Screen2Words": ({"question_id": "screen2words_0", "image": "Screen2words/0.jpg",
                      "text": "You are given a phone UI screen. Describe the screen in one sentence."},
                     "<image>\nYou are given a phone UI screen. Describe the screen in one sentence.", None),
    "TabMWP": ({"question_id": "tabmwp_0000", "image": "TabMWP/0.png", "text": "TabMWP question 0\n" + PHRASE},
               "<image>\nTabMWP question 0\n" + PHRASE, None),
}


@pytest.mark.parametrize("name", list(SNAPSHOTS))
def test_prompt_snapshot(name):
    question, expected, record = SNAPSHOTS[name]
    prompt = tasks.get_task(name).build_prompt(question)
    if name == "ImageNet":
        assert prompt.text.startswith(expected) and prompt.record.startswith(record)
        assert prompt.text == "<image>\n" + prompt.record
        assert prompt.record.endswith(", Lemon, Bernese mountain dog.")
        assert prompt.record.count(", ") == 99 and "\n" + PHRASE not in prompt.record
    else:
        assert prompt.text == expected
        if record is None:      # science runner stores the image token; model_vqa.py stores the bare text
            science = tasks.get_task(name).prompt == "science"
            record = expected if science else expected.removeprefix("<image>\n")
        assert prompt.record == record
    assert prompt.has_image


def test_scienceqa_text_only_problem_has_no_image_token():
    q = {"question_id": "403", "text": "<image>\nWhich word is a noun?\nA. run\nB. dog\n"}
    p = tasks.get_task("ScienceQA").build_prompt(q)
    assert p == prompts.Prompt(text="Which word is a noun?\nA. run\nB. dog",
                               record="Which word is a noun?\nA. run\nB. dog",
                               has_image=False)


def test_imagenet_option_sentence_is_the_original(tmp_path, monkeypatch):
    assert hashlib.sha256(OPTIONS.encode()).hexdigest() == prompts.IMAGENET_TEMPLATE_SHA256
    data = json.loads(prompts.IMAGENET_OPTIONS_FILE.read_text())
    assert OPTIONS == data["template_exact"] and len(data["classes"]) == 100
    bad = dict(data, classes=data["classes"][:-1])
    (tmp_path / "o.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="does not match"):
        prompts.imagenet_option_sentence(str(tmp_path / "o.json"))
    with pytest.raises(FileNotFoundError, match=prompts.IMAGENET_OPTIONS_ENV):
        prompts.imagenet_option_sentence(str(tmp_path / "missing.json"))
