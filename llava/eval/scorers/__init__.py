"""Scorer CLI and the shared scoring families (each task's scorer is ``llava/eval/tasks/<folder>/scorer.py``).

- ``common``: readers, the id join, the ``result.json`` record and shared CLI flags.
- ``exact`` (exact match and the shared accuracy tail), ``imagenet`` (class names), ``grounding``
  (boxes), ``caption`` (pycocoevalcap), ``yes_no``, ``vqa_normalize``: the families task scorers use.
- CLI: ``python -m llava.eval.scorers --task NAME --question-file ... --answers-file ...
  [--protocol official|strict] [--result-file result.json] [--output-dir DIR]``, generated from
  the task's spec; ``python -m llava.eval.scorers.{pope,mme,mmbench}`` are the same per task.
"""
