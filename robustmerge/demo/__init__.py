"""The built-in end-to-end demo: a procedurally generated miniature of MM-MergeBench, a tiny
LLaVA trained on it, one LoRA adapter per task, every merge method, a Table-2-style table.

    python -m robustmerge demo [--out results/demo] [--seed 0] [--quick] [--fresh]

Modules: :mod:`.generator` (the data), :mod:`.tasks` (task definitions and scoring),
:mod:`.model` (base and adapter training), :mod:`.pipeline` (the stages, caching, the table).
Imports are lazy so that ``robustmerge.table --layout demo`` stays light.
"""

from __future__ import annotations

__all__ = ["DemoSettings", "run_demo"]


def __getattr__(name: str):
    if name in __all__:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'robustmerge.demo' has no attribute {name!r}")
