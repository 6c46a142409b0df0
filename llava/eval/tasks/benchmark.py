"""Benchmark-level definitions: decoding, the paper's printed averages, and the table layout.

Everything per task (columns, decimals, result names, paper numbers) comes from the task specs;
this module only adds what belongs to no single task: the decoding every task shares, and the
paper's printed "seen avg" / "unseen avg" (kept as printed: RobustMerge's seen average is 57.33
in the paper although its eight printed cells average 57.41).
"""

from __future__ import annotations

CONV_MODE = "vicuna_v1"
TEMPERATURE = 0.0
TITLE = "MM-MergeBench"
PAPER_SOURCE = "RobustMerge paper, main tables (LLaVA-1.5-7B, LoRA rank 16)"

#: average column -> method -> the paper's printed value
PAPER_AVERAGES: dict[str, dict[str, float]] = {
    "seen avg": {"Individual": 69.23, "Zero-shot": 43.37, "Multi-task": 63.62, "Task Arithmetic": 53.93,
                 "DARE": 53.84, "TIES": 53.09, "PCB": 53.70, "RobustMerge": 57.33},
    "unseen avg": {"Zero-shot": 25.22, "Multi-task": 36.06, "Task Arithmetic": 33.31, "DARE": 33.15,
                   "TIES": 33.14, "PCB": 33.53, "RobustMerge": 37.99},
}


def paper_numbers() -> dict[str, dict[str, float]]:
    """method -> column -> the paper's number, from every task spec plus the printed averages."""
    from llava.eval.tasks import tasks

    out: dict[str, dict[str, float]] = {}
    for spec in tasks():
        for method, value in spec.paper.items():
            out.setdefault(method, {})[spec.column] = float(value)
    for column, values in PAPER_AVERAGES.items():
        for method, value in values.items():
            out.setdefault(method, {})[column] = value
    return out


def paper_layout():
    """The ``robustmerge.table`` layout of the benchmark (its layout provider "paper")."""
    from llava.eval.tasks import tasks
    from robustmerge.table import Layout

    specs = tasks()
    return Layout("paper", TITLE, tuple(t.column for t in specs if t.group == "seen"),
                  tuple(t.column for t in specs if t.group == "unseen"),
                  tuple(t.column for t in specs if t.group == "general"),
                  decimals={t.column: t.decimals for t in specs},
                  result_names={t.column: frozenset({t.column, t.name}) for t in specs},
                  paper=paper_numbers())
