"""Paper method names: which run folder stands for which method of the RobustMerge paper.

The paper's numbers themselves live with the tasks that own the columns (each task spec's
``[paper]`` table, e.g. ``llava/eval/tasks/scienceqa/task.toml``; the printed averages in
``llava/eval/tasks/benchmark.py``) and reach ``robustmerge.table`` through its layout
(``Layout.paper``); this module stays model-agnostic.
"""

from __future__ import annotations

#: Normalized run-folder names (lower case, letters and digits only) -> paper method.
ALIASES: dict[str, str] = {
    "zeroshot": "Zero-shot", "individual": "Individual", "multitask": "Multi-task",
    "taskarithmetic": "Task Arithmetic", "ta": "Task Arithmetic", "dare": "DARE",
    "ties": "TIES", "pcb": "PCB", "robustmerge": "RobustMerge", "ours": "RobustMerge",
}


def normalize_name(name: str) -> str:
    """Lower case, letters and digits only ("Zero-shot" -> "zeroshot")."""
    return "".join(ch for ch in name.lower() if ch.isalnum())


def paper_method(run: str) -> str | None:
    """The paper method a run folder stands for ("task_arithmetic" -> "Task Arithmetic"), or None."""
    return ALIASES.get(normalize_name(run))
