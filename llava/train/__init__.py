"""LoRA fine-tuning of LLaVA-1.5 task adapters (LLaVA's ``llava/train`` on transformers 5).

Entry points: ``python -m llava.train.train ...`` (LLaVA's flags), ``llava.train.train_mem``
(the same, preferring flash-attention), and in Python ``llava.train.train.train(argv)`` or the
typed ``llava.train.train_task(...)`` (the submodule ``llava.train.train`` shadows a function
of the same name on this package, so only ``train_task`` is re-exported here). Imports are
lazy so that ``import llava.train`` stays cheap.
"""

from __future__ import annotations

import importlib

__all__ = ["TrainDataError", "TrainResult", "TrainSetupError", "train_task"]

_HOMES = {
    "TrainResult": "llava.train.train",
    "TrainSetupError": "llava.train.train",
    "train_task": "llava.train.train",
    "TrainDataError": "llava.train.data",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'llava.train' has no attribute {name!r}")
