"""Conversation templates: how LLaVA turns chat messages into one prompt string.

`conv_templates[name].copy()` gives a fresh conversation; `append_message(role, text)` adds a
turn (text `None` leaves the turn open for generation) and `get_prompt()` renders it. The
rendering of `vicuna_v1` is frozen by the fixture tests because every benchmark prompt goes
through it.
"""

from __future__ import annotations

import copy
import dataclasses
from enum import Enum, auto

from llava.constants import DEFAULT_IMAGE_TOKEN


class SeparatorStyle(Enum):
    """How turns are joined (names as in upstream LLaVA)."""

    SINGLE = auto()  # "role: msg" + sep after every turn
    TWO = auto()  # sep after user turns, sep2 after assistant turns (vicuna v1)
    MPT = auto()  # role + msg + sep, no colon (chatml-like)
    PLAIN = auto()  # just the messages (projector pre-training)
    LLAMA_2 = auto()  # [INST] ... [/INST] with a <<SYS>> block


@dataclasses.dataclass
class Conversation:
    """A chat history plus the template that renders it."""

    system: str
    roles: tuple[str, str]
    messages: list[list]
    offset: int
    sep_style: SeparatorStyle = SeparatorStyle.SINGLE
    sep: str = "###"
    sep2: str | None = None
    version: str = "Unknown"
    skip_next: bool = False

    def append_message(self, role: str, message) -> None:
        self.messages.append([role, message])

    def copy(self) -> "Conversation":
        return copy.deepcopy(self)

    def get_prompt(self) -> str:
        """Render all messages; an open last turn (message None) ends with the role tag."""
        messages = [[role, _text_of(msg)] for role, msg in self.messages]
        render = _RENDERERS.get(self.sep_style)
        if render is None:
            raise ValueError(f"unsupported separator style: {self.sep_style}")
        return render(self, messages)

    def get_images(self) -> list:
        """The images attached to messages as (text, image, process_mode) tuples."""
        return [msg[1] for _, msg in self.messages[self.offset :] if isinstance(msg, tuple)]

    def dict(self) -> dict:
        return {
            "system": self.system,
            "roles": self.roles,
            "messages": [[r, _text_of(m)] for r, m in self.messages],
            "offset": self.offset,
            "sep": self.sep,
            "sep2": self.sep2,
        }


def _text_of(message):
    """A message is a string, None (open turn) or a (text, image, mode) tuple."""
    if isinstance(message, tuple):
        return message[0]
    return message


def _render_single(conv: Conversation, messages: list) -> str:
    ret = conv.system + conv.sep
    for role, msg in messages:
        ret += f"{role}: {msg}{conv.sep}" if msg else f"{role}:"
    return ret


def _render_two(conv: Conversation, messages: list) -> str:
    seps = (conv.sep, conv.sep2)
    ret = conv.system + seps[0]
    for i, (role, msg) in enumerate(messages):
        ret += f"{role}: {msg}{seps[i % 2]}" if msg else f"{role}:"
    return ret


def _render_mpt(conv: Conversation, messages: list) -> str:
    ret = conv.system + conv.sep
    for role, msg in messages:
        ret += f"{role}{msg}{conv.sep}" if msg else role
    return ret


def _render_plain(conv: Conversation, messages: list) -> str:
    seps = (conv.sep, conv.sep2)
    ret = conv.system
    for i, (_, msg) in enumerate(messages):
        ret += f"{msg}{seps[i % 2]}" if msg else ""
    return ret


def _render_llama_2(conv: Conversation, messages: list) -> str:
    ret = ""
    for i, (_, msg) in enumerate(messages):
        if not msg:
            continue
        if i == 0 and conv.system:
            msg = f"<<SYS>>\n{conv.system}\n<</SYS>>\n\n{msg}"
        if i % 2 == 0:
            ret += f"{conv.sep}[INST] {msg} [/INST]"
        else:
            ret += f" {msg} {conv.sep2}"
    return ret.lstrip(conv.sep)


_RENDERERS = {
    SeparatorStyle.SINGLE: _render_single,
    SeparatorStyle.TWO: _render_two,
    SeparatorStyle.MPT: _render_mpt,
    SeparatorStyle.PLAIN: _render_plain,
    SeparatorStyle.LLAMA_2: _render_llama_2,
}

_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_HUMAN_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

conv_vicuna_v1 = Conversation(
    system=_VICUNA_SYSTEM,
    roles=("USER", "ASSISTANT"),
    version="v1",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.TWO,
    sep=" ",
    sep2="</s>",
)

conv_llava_v0 = Conversation(
    system=_HUMAN_SYSTEM,
    roles=("Human", "Assistant"),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.SINGLE,
    sep="###",
)

conv_llava_plain = Conversation(
    system="",
    roles=("", ""),
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.PLAIN,
    sep="\n",
    sep2="\n",
)

conv_llava_llama_2 = Conversation(
    system=(
        "You are a helpful language and vision assistant. You are able to understand the "
        "visual content that the user provides, and assist the user with a variety of tasks "
        "using natural language."
    ),
    roles=("USER", "ASSISTANT"),
    version="llama_v2",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.LLAMA_2,
    sep="<s>",
    sep2="</s>",
)

conv_chatml_direct = Conversation(
    system="<|im_start|>system\nAnswer the questions.",
    roles=("<|im_start|>user\n", "<|im_start|>assistant\n"),
    version="mpt",
    messages=[],
    offset=0,
    sep_style=SeparatorStyle.MPT,
    sep="<|im_end|>",
)

default_conversation = conv_vicuna_v1
conv_templates: dict[str, Conversation] = {
    "default": conv_vicuna_v1,
    "v1": conv_vicuna_v1,
    "vicuna_v1": conv_vicuna_v1,
    "llava_v1": conv_vicuna_v1,
    "v0": conv_llava_v0,
    "llava_v0": conv_llava_v0,
    "plain": conv_llava_plain,
    "llava_llama_2": conv_llava_llama_2,
    "chatml_direct": conv_chatml_direct,
}


def build_prompt(question: str, conv_mode: str = "vicuna_v1", with_image: bool = True) -> str:
    """One-question prompt as LLaVA's eval runners build it: image token, newline, question."""
    if conv_mode not in conv_templates:
        raise KeyError(f"unknown conv mode {conv_mode!r}; known: {sorted(conv_templates)}")
    conv = conv_templates[conv_mode].copy()
    user_turn = f"{DEFAULT_IMAGE_TOKEN}\n{question}" if with_image else question
    conv.append_message(conv.roles[0], user_turn)
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()
