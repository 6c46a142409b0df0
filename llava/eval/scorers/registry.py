"""Task name -> scorer module for the twelve MM-MergeBench tasks.

Each scorer module exposes ``TASKS`` (the task names it serves), ``QUESTION_FILE_REQUIRED``,
``add_args(parser)`` (its own CLI flags), ``run(args, task) -> Scored`` (the CLI entry) and a
pure ``score(...)`` function. Names are matched case-insensitively; a few aliases are accepted.
"""

from __future__ import annotations

import importlib
from types import ModuleType

#: canonical task name -> module under llava.eval.scorers
SCORERS: dict[str, str] = {
    "ScienceQA": "scienceqa",
    "ImageNet": "imagenet",
    "VQAv2": "vqav2",
    "Grounding": "grounding",
    "OCRVQA": "ocrvqa",
    "VizWiz-caption": "caption",
    "Flickr30k": "caption",
    "IconQA": "iconqa",
    "AOKVQA": "aokvqa",
    "ImageNet-R": "imagenet",
    "Screen2Words": "caption",
    "TabMWP": "iconqa",
}

ALIASES: dict[str, str] = {
    "rec": "Grounding", "sciqa": "ScienceQA", "vizwiz": "VizWiz-caption", "ocr-vqa": "OCRVQA",
    "flickr30k-caption": "Flickr30k", "screen2words": "Screen2Words", "imagenet-r": "ImageNet-R",
    "imagenetr": "ImageNet-R", "s2w": "Screen2Words",
}


def task_names() -> list[str]:
    """The twelve canonical task names, in the paper's order."""
    return list(SCORERS)


def canonical_task(name: str) -> str:
    """The canonical spelling of a task name or alias; ``KeyError`` with the choices if unknown."""
    lowered = {k.lower(): k for k in SCORERS}
    key = name.strip().lower()
    if key in lowered:
        return lowered[key]
    if key in ALIASES:
        return ALIASES[key]
    raise KeyError(f"unknown task {name!r}; choose one of: {', '.join(SCORERS)}")


def get_scorer(task: str) -> ModuleType:
    """The scorer module of ``task`` (canonical name or alias)."""
    return importlib.import_module(f"llava.eval.scorers.{SCORERS[canonical_task(task)]}")
