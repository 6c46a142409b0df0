"""The twelve MM-MergeBench tasks: question files, preprocessing, decoding budget, prompts, scorers.

One row per task, as in ``docs``/the benchmark spec (``benchmarks.md``). Decoding for all:
conversation template ``vicuna_v1``, greedy (temperature 0). Paths are relative to the
release's ``instructions/`` folder; images are relative to ``datasets/``.

Prompt building (``Task.build_prompt(question) -> Prompt``) follows the original runners:

- ``prompt_as_is`` (``model_vqa.py`` and friends): the question text unchanged; the user turn is
  ``"<image>\\n" + text``.
- ``prompt_science`` (``model_vqa_science.py``, ScienceQA and AOKVQA): ``<image>`` removed from
  the text and the rest stripped; when the question has an image the user turn (and the stored
  prompt) is ``"<image>\\n" + text``, else just the text (text-only ScienceQA problems).
- ``prompt_imagenet`` (``model_vqa_cc_imagenet.py``): the first line of the text, a newline and
  the fixed 100-class option sentence (``llava/eval/data/imagenet_options.json``, or the file
  named by ``$MMMERGEBENCH_IMAGENET_OPTIONS``), checked against its SHA-256.

``Prompt.text`` is the user turn given to the conversation template (``mm_use_im_start_end``
false); ``Prompt.record`` is what the original runner stored in the answers' ``prompt`` field.

Image preprocessing: ``crop`` = resize + center crop (the CLIP processor as is), ``pad`` =
expand to a square with the mean colour, then the processor. ``Task.preprocessing_for(protocol)``
gives the original runner's choice for ``official`` and, for ``strict``, pad for grounding (its
boxes are normalised to the padded square the model was trained on).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from llava.constants import DEFAULT_IMAGE_TOKEN

CONV_MODE = "vicuna_v1"
TEMPERATURE = 0.0
IMAGENET_OPTIONS_ENV = "MMMERGEBENCH_IMAGENET_OPTIONS"
IMAGENET_OPTIONS_FILE = Path(__file__).parent / "data" / "imagenet_options.json"
IMAGENET_TEMPLATE_SHA256 = "cce6b5d5b5fce0314a58a97c6684330e0c047f465cbad1f2c3276c05dad06bb1"


@dataclass(frozen=True)
class Prompt:
    """A question turned into the model's user turn.

    Attributes:
        text: the user turn for the conversation template (with ``<image>\\n`` when there is an image).
        record: the string the original runner wrote into the answers' ``prompt`` field.
        has_image: whether an image goes with the question.
    """

    text: str
    record: str
    has_image: bool


def prompt_as_is(question: dict) -> Prompt:
    """The question text unchanged, after the image token."""
    text = question["text"]
    return Prompt(text=DEFAULT_IMAGE_TOKEN + "\n" + text, record=text, has_image=True)


def prompt_science(question: dict) -> Prompt:
    """ScienceQA / AOKVQA: ``<image>`` removed and stripped; image token prefixed when there is an image."""
    text = question["text"].replace(DEFAULT_IMAGE_TOKEN, "").strip()
    if question.get("image"):
        text = DEFAULT_IMAGE_TOKEN + "\n" + text
        return Prompt(text=text, record=text, has_image=True)
    return Prompt(text=text, record=text, has_image=False)


@functools.lru_cache(maxsize=4)
def imagenet_option_sentence(path: str | None = None) -> str:
    """The runner's fixed option sentence "Choose an answer from the choices below: ...".

    Read from ``path``, else ``$MMMERGEBENCH_IMAGENET_OPTIONS``, else the copy shipped in
    ``llava/eval/data``; its SHA-256 must match the original's.
    """
    source = Path(path or os.environ.get(IMAGENET_OPTIONS_ENV) or IMAGENET_OPTIONS_FILE)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
        sentence = data["intro_prefix_exact"] + data["separator"].join(data["classes"]) + data["terminator"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{source}: ImageNet option list not found; set ${IMAGENET_OPTIONS_ENV} "
                                "to mmmergebench/imagenet_options.json") from None
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{source}: not an imagenet_options.json file ({e})") from None
    digest = hashlib.sha256(sentence.encode("utf-8")).hexdigest()
    if digest != IMAGENET_TEMPLATE_SHA256:
        raise ValueError(f"{source}: the option sentence does not match the original runner's "
                         f"(sha256 {digest}, expected {IMAGENET_TEMPLATE_SHA256})")
    return sentence


def prompt_imagenet(question: dict) -> Prompt:
    """ImageNet: first line of the text, newline, the 100-class option sentence."""
    text = question["text"].split("\n")[0] + "\n" + imagenet_option_sentence()
    return Prompt(text=DEFAULT_IMAGE_TOKEN + "\n" + text, record=text, has_image=True)


@dataclass(frozen=True)
class Task:
    """One benchmark task.

    Attributes:
        name: canonical name (also the scorer registry's and ``result.json``'s ``task``).
        split: "seen" (an adapter was trained on it) or "unseen".
        question_file: path under ``instructions/``.
        preprocessing: the original runner's image preprocessing, "crop" or "pad".
        max_new_tokens: generation budget of the original runner.
        prompt: question dict -> ``Prompt``.
        scorer: module under ``llava.eval.scorers``.
        headline: the metric key a results table shows.
        gt_file: COCO caption ground truth under ``instructions/`` (caption tasks only).
        strict_preprocessing: preprocessing under the strict protocol.
    """

    name: str
    split: str
    question_file: str
    preprocessing: str
    max_new_tokens: int
    prompt: Callable[[dict], Prompt]
    scorer: str
    headline: str
    gt_file: str | None = None
    strict_preprocessing: str | None = None

    def build_prompt(self, question: dict) -> Prompt:
        """The user turn for ``question``."""
        return self.prompt(question)

    def preprocessing_for(self, protocol: str) -> str:
        """Image preprocessing under ``protocol`` ("official" or "strict")."""
        if protocol == "strict" and self.strict_preprocessing:
            return self.strict_preprocessing
        return self.preprocessing


TASKS: dict[str, Task] = {t.name: t for t in (
    Task("ScienceQA", "seen", "ScienceQA/test.json", "crop", 1024, prompt_science, "scienceqa", "accuracy"),
    Task("ImageNet", "seen", "ImageNet/test.json", "crop", 1024, prompt_imagenet, "imagenet", "accuracy"),
    Task("VQAv2", "seen", "VQAv2/val.json", "crop", 1024, prompt_as_is, "vqav2", "accuracy"),
    Task("Grounding", "seen", "Grounding/test.json", "crop", 1024, prompt_as_is, "grounding", "accuracy",
         strict_preprocessing="pad"),
    Task("OCRVQA", "seen", "OCRVQA/test.json", "pad", 128, prompt_as_is, "ocrvqa", "accuracy"),
    Task("VizWiz-caption", "seen", "VizWiz-caption/val.json", "pad", 128, prompt_as_is, "caption", "CIDEr",
         gt_file="VizWiz-caption/val_coco_type.json"),
    Task("Flickr30k", "seen", "flickr30k-caption/val_brief.json", "pad", 128, prompt_as_is, "caption", "CIDEr",
         gt_file="flickr30k-caption/val_coco_type.json"),
    Task("IconQA", "seen", "IconQA/val.json", "pad", 128, prompt_as_is, "iconqa", "accuracy"),
    Task("AOKVQA", "unseen", "AOKVQA/val.json", "crop", 1024, prompt_science, "aokvqa", "accuracy"),
    Task("ImageNet-R", "unseen", "ImageNet-R/test.json", "pad", 1024, prompt_as_is, "imagenet", "accuracy"),
    Task("Screen2Words", "unseen", "Screen2words/test.json", "pad", 128, prompt_as_is, "caption", "CIDEr",
         gt_file="Screen2words/test_coco_type.json"),
    Task("TabMWP", "unseen", "TabMWP/test.json", "pad", 128, prompt_as_is, "iconqa", "accuracy"),
)}

SEEN = tuple(n for n, t in TASKS.items() if t.split == "seen")
UNSEEN = tuple(n for n, t in TASKS.items() if t.split == "unseen")


def get_task(name: str) -> Task:
    """The task called ``name`` (case-insensitive; the scorer registry's aliases work too)."""
    from llava.eval.scorers.registry import canonical_task
    return TASKS[canonical_task(name)]


# POPE and MME (LLaVA-1.5's protocol; see ``benchmarks.md``). Kept out of ``TASKS`` (the twelve
# MM-MergeBench tasks, whose order and names the scorer registry mirrors); their question files
# are relative to the data root's ``eval/`` folder, not ``instructions/``. Prompt as is (the text
# already ends with "Answer the question using a single word or phrase."), pad, 128 tokens.
GENERAL_TASKS: dict[str, Task] = {t.name: t for t in (
    Task("POPE", "general", "pope/llava_pope_test.jsonl", "pad", 128, prompt_as_is, "pope", "f1_mean"),
    Task("MME", "general", "MME/llava_mme.jsonl", "pad", 128, prompt_as_is, "mme", "perception"),
)}


def get_eval_task(name: str) -> Task:
    """Any task the answer runner knows: the twelve MM-MergeBench tasks (aliases too), POPE, MME."""
    general = {k.lower(): t for k, t in GENERAL_TASKS.items()}
    if name.strip().lower() in general:
        return general[name.strip().lower()]
    try:
        return get_task(name)
    except KeyError:
        raise KeyError(f"unknown task {name!r}; choose one of: {', '.join([*TASKS, *GENERAL_TASKS])}") from None
