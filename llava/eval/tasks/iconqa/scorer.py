"""IconQA: whole-string exact match after ``str.upper()`` (the family: :mod:`llava.eval.scorers.exact`)."""

from llava.eval.scorers.exact import exact_match as judge, exact_task_scorer, parse_text as parse  # noqa: F401

score = exact_task_scorer("IconQA")
