"""ImageNet: the class name contained in the prediction or vice versa (:mod:`llava.eval.scorers.imagenet`)."""

from llava.eval.scorers.exact import parse_text as parse  # noqa: F401
from llava.eval.scorers.imagenet import contains_match as judge, task_scorer  # noqa: F401

score = task_scorer("ImageNet")
