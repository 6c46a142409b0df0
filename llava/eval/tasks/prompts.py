"""The prompt builders a task spec names (``prompt = "as_is" | "science" | "imagenet"``).

Prompt building (``TaskSpec.build_prompt(question) -> Prompt``) follows the original runners:

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

IMAGENET_OPTIONS_ENV = "MMMERGEBENCH_IMAGENET_OPTIONS"
IMAGENET_OPTIONS_FILE = Path(__file__).resolve().parents[1] / "data" / "imagenet_options.json"
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


#: prompt name in a task spec -> builder
PROMPTS: dict[str, Callable[[dict], Prompt]] = {
    "as_is": prompt_as_is, "science": prompt_science, "imagenet": prompt_imagenet,
}
