"""Scorers: one module per benchmark task, each with an `official` and a `strict` protocol.

- ``common``: readers, the id join, the ``result.json`` record and shared CLI flags.
- ``registry.get_scorer(task)``: the module of each of the twelve MM-MergeBench tasks.
- CLI: ``python -m llava.eval.scorers --task NAME --question-file ... --answers-file ...
  [--protocol official|strict] [--result-file result.json] [--output-dir DIR]``.
"""
