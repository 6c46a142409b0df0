"""The task table matches the benchmark spec, and each task's prompt text is frozen."""

from __future__ import annotations

import hashlib
import json

import pytest

from llava.eval import tasks
from llava.eval.scorers.registry import canonical_task, get_scorer, task_names

# name: (split, question file, preprocessing, max_new_tokens, scorer, headline)
SPEC = {
    "ScienceQA": ("seen", "ScienceQA/test.json", "crop", 1024, "scienceqa", "accuracy"),
    "ImageNet": ("seen", "ImageNet/test.json", "crop", 1024, "imagenet", "accuracy"),
    "VQAv2": ("seen", "VQAv2/val.json", "crop", 1024, "vqav2", "accuracy"),
    "Grounding": ("seen", "Grounding/test.json", "crop", 1024, "grounding", "accuracy"),
    "OCRVQA": ("seen", "OCRVQA/test.json", "pad", 128, "ocrvqa", "accuracy"),
    "VizWiz-caption": ("seen", "VizWiz-caption/val.json", "pad", 128, "caption", "CIDEr"),
    "Flickr30k": ("seen", "flickr30k-caption/val_brief.json", "pad", 128, "caption", "CIDEr"),
    "IconQA": ("seen", "IconQA/val.json", "pad", 128, "iconqa", "accuracy"),
    "AOKVQA": ("unseen", "AOKVQA/val.json", "crop", 1024, "aokvqa", "accuracy"),
    "ImageNet-R": ("unseen", "ImageNet-R/test.json", "pad", 1024, "imagenet", "accuracy"),
    "Screen2Words": ("unseen", "Screen2words/test.json", "pad", 128, "caption", "CIDEr"),
    "TabMWP": ("unseen", "TabMWP/test.json", "pad", 128, "iconqa", "accuracy"),
}


def test_table_matches_spec():
    assert list(tasks.TASKS) == list(SPEC) == task_names()
    for name, row in SPEC.items():
        t = tasks.TASKS[name]
        assert (t.split, t.question_file, t.preprocessing, t.max_new_tokens, t.scorer, t.headline) == row, name
        module = get_scorer(name)
        assert module.__name__ == f"llava.eval.scorers.{t.scorer}" and name in module.TASKS
    assert len(tasks.SEEN) == 8 and len(tasks.UNSEEN) == 4
    assert tasks.CONV_MODE == "vicuna_v1" and tasks.TEMPERATURE == 0.0


def test_preprocessing_by_protocol():
    assert tasks.TASKS["Grounding"].preprocessing_for("official") == "crop"
    assert tasks.TASKS["Grounding"].preprocessing_for("strict") == "pad"
    assert tasks.TASKS["ScienceQA"].preprocessing_for("strict") == "crop"
    assert [t.gt_file for t in tasks.TASKS.values() if t.gt_file] == [
        "VizWiz-caption/val_coco_type.json", "flickr30k-caption/val_coco_type.json",
        "Screen2words/test_coco_type.json"]


def test_names_and_aliases():
    assert canonical_task("rec") == "Grounding" and canonical_task("imagenet-r") == "ImageNet-R"
    assert tasks.get_task("screen2words").name == "Screen2Words"
    with pytest.raises(KeyError):
        canonical_task("POPE")


PHRASE = "Answer the question using a single word or phrase."
OPTIONS = tasks.imagenet_option_sentence()

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
    prompt = tasks.TASKS[name].build_prompt(question)
    if name == "ImageNet":
        assert prompt.text.startswith(expected) and prompt.record.startswith(record)
        assert prompt.text == "<image>\n" + prompt.record
        assert prompt.record.endswith(", Lemon, Bernese mountain dog.")
        assert prompt.record.count(", ") == 99 and "\n" + PHRASE not in prompt.record
    else:
        assert prompt.text == expected
        if record is None:      # science runner stores the image token; model_vqa.py stores the bare text
            science = tasks.TASKS[name].prompt is tasks.prompt_science
            record = expected if science else expected.removeprefix("<image>\n")
        assert prompt.record == record
    assert prompt.has_image


def test_scienceqa_text_only_problem_has_no_image_token():
    q = {"question_id": "403", "text": "<image>\nWhich word is a noun?\nA. run\nB. dog\n"}
    p = tasks.TASKS["ScienceQA"].build_prompt(q)
    assert p == tasks.Prompt(text="Which word is a noun?\nA. run\nB. dog", record="Which word is a noun?\nA. run\nB. dog",
                             has_image=False)


def test_imagenet_option_sentence_is_the_original(tmp_path, monkeypatch):
    assert hashlib.sha256(OPTIONS.encode()).hexdigest() == tasks.IMAGENET_TEMPLATE_SHA256
    data = json.loads(tasks.IMAGENET_OPTIONS_FILE.read_text())
    assert OPTIONS == data["template_exact"] and len(data["classes"]) == 100
    bad = dict(data, classes=data["classes"][:-1])
    (tmp_path / "o.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="does not match"):
        tasks.imagenet_option_sentence(str(tmp_path / "o.json"))
    with pytest.raises(FileNotFoundError, match=tasks.IMAGENET_OPTIONS_ENV):
        tasks.imagenet_option_sentence(str(tmp_path / "missing.json"))
