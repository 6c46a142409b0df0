"""Reference numbers from the RobustMerge paper (LLaVA-1.5-7B, LoRA rank 16).

Copied by hand from the paper's main tables as listed in the project's benchmark spec
(``benchmarks.md``, "Targets from the paper"). Keys are the table's column names
(:data:`robustmerge.table.SEEN` ... plus ``"seen avg"`` / ``"unseen avg"``); a method lacks a
key where the paper leaves the cell empty (Individual has no unseen or POPE/MME/MMBench
numbers). The averages are the paper's printed ones, not recomputed. They agree with the
mean of the printed cells to rounding, except RobustMerge's seen average: 57.33 printed,
57.41 = mean of its eight printed cells (kept as printed; ``tests/test_table.py`` pins it).
"""

from __future__ import annotations

SOURCE = "RobustMerge paper, main tables (LLaVA-1.5-7B, LoRA rank 16)"

_MMMERGEBENCH_COLUMNS = ("ScienceQA", "ImageNet", "VQAv2", "REC", "OCRVQA", "VizWiz", "Flickr30k",
                         "IconQA", "seen avg", "AOKVQA", "ImageNet-R", "Screen2Words", "TabMWP",
                         "unseen avg")

_MMMERGEBENCH_ROWS = {
    "Individual": (83.74, 96.02, 67.58, 43.40, 65.50, 64.80, 57.29, 75.54, 69.23),
    "Zero-shot": (61.73, 40.87, 62.88, 36.10, 41.16, 41.03, 49.07, 14.09, 43.37,
                  51.62, 28.27, 5.98, 15.01, 25.22),
    "Multi-task": (76.90, 74.08, 67.05, 35.98, 65.37, 66.67, 56.09, 66.87, 63.62,
                   76.33, 41.39, 8.34, 18.20, 36.06),
    "Task Arithmetic": (71.94, 57.49, 67.06, 38.90, 62.87, 44.80, 49.20, 39.21, 53.93,
                        74.78, 37.37, 7.52, 13.57, 33.31),
    "DARE": (71.59, 57.25, 66.26, 39.38, 62.56, 44.93, 49.13, 39.59, 53.84,
             73.75, 37.67, 7.56, 13.62, 33.15),
    "TIES": (71.49, 55.88, 66.73, 39.67, 65.12, 44.35, 47.06, 34.46, 53.09,
             73.43, 38.44, 7.47, 13.23, 33.14),
    "PCB": (71.10, 57.82, 67.59, 38.22, 64.35, 44.58, 48.90, 37.01, 53.70,
            74.57, 36.28, 7.84, 15.44, 33.53),
    "RobustMerge": (73.43, 65.54, 67.20, 44.80, 62.97, 46.61, 52.80, 45.90, 57.33,
                    79.30, 45.79, 9.23, 17.62, 37.99),
}

_GENERAL_ROWS = {   # POPE (mean F1 x100), MME (Perception), MMBench (dev)
    "Zero-shot": (86.4, 1476.9, 66.1),
    "Multi-task": (86.9, 1433.5, 62.9),
    "Task Arithmetic": (87.0, 1465.2, 67.3),
    "DARE": (86.4, 1475.7, 67.4),
    "TIES": (86.7, 1489.4, 66.6),
    "PCB": (86.6, 1490.7, 66.3),
    "RobustMerge": (87.2, 1494.9, 68.1),
}


def _build() -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for method, values in _MMMERGEBENCH_ROWS.items():
        out[method] = dict(zip(_MMMERGEBENCH_COLUMNS, values))
    for method, values in _GENERAL_ROWS.items():
        out.setdefault(method, {}).update(zip(("POPE", "MME", "MMBench"), values))
    return out


#: method -> column -> number, e.g. ``PAPER["RobustMerge"]["seen avg"] == 57.33``.
PAPER: dict[str, dict[str, float]] = _build()

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
