"""TabMWP scores like IconQA (RobustMerge's script calls the same file): exact match, upper-cased."""

from llava.eval.scorers.exact import exact_match as judge, exact_task_scorer, parse_text as parse  # noqa: F401

score = exact_task_scorer("TabMWP")
