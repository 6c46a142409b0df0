"""Screen2Words: COCO caption metrics, headline CIDEr (the caption family: :mod:`llava.eval.scorers.caption`).

Captions are scored as a corpus, so there is no per-answer judge.
"""

from llava.eval.scorers.caption import parse_caption as parse, task_scorer  # noqa: F401

judge = None
score = task_scorer("Screen2Words")
