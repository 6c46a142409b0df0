"""Where the analyses get their factors: task adapters and merged adapters, one module at a
time, with the LoRA scaling folded into B so that ``ΔW = B·A`` exactly.

Every factor is returned in float64 (the analysis matrices are at most ``[d, r]``, so the
precision is free) on the CPU. Module names are the adapter set's (``AdapterSet.modules``);
layer groups are built from the layer index in the name.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..adapters import AdapterSet, open_task
from ..errors import MergeInputError
from ..taskfolder import MERGE_RECORD

_LAYER = re.compile(r"(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)")
_ANY_INT = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")


def task_factors(adapters: AdapterSet, module: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Every task's factors of one module with its scaling folded into B.

    Returns:
        A [N, r, d_in], B [N, d_out, r] float64 with ``ΔW_n = B[n] @ A[n]``.
    """
    A, B = adapters.factors(module)  # stored dtype; already folded when the set folds
    A, B = A.double(), B.double()
    if not adapters.fold_scaling:
        r = adapters.specs[module].ranks[0]
        scale = torch.tensor([t.module_scaling(module, r) for t in adapters.tasks], dtype=torch.float64)
        B = B * scale.view(-1, 1, 1)
    return A, B


@dataclass
class MergedAdapter:
    """A merged adapter to analyse: a label and ``factors(module) -> (A* [r, d_in], B* [d_out, r])``
    in float64 with the loader's scaling folded into B*, so ``ΔW* = B* @ A*``.

    Build it with :meth:`from_result` (an in-memory :class:`~robustmerge.driver.MergeResult`)
    or :meth:`from_folder` (a merged adapter folder written by ``robustmerge merge``, or any
    PEFT LoRA folder covering the same modules).
    """

    label: str
    factors: Callable[[str], tuple[torch.Tensor, torch.Tensor]]
    info: dict = field(default_factory=dict)

    @classmethod
    def from_result(cls, result, label: str | None = None) -> "MergedAdapter":
        plan = result.plan
        ad = plan.adapters
        first = ad.tasks[0]

        def factors(module: str) -> tuple[torch.Tensor, torch.Tensor]:
            a_key, b_key = first.modules[module]
            # The merged folder reuses the first task's config (scaling 1 when the set folds),
            # so the loader applies that task's per-module scaling.
            s = 1.0 if ad.fold_scaling else first.module_scaling(module, ad.rank)
            return result.tensors[a_key].double(), s * result.tensors[b_key].double()

        label = label or (plan.method + (f":{plan.preset}" if plan.preset else ""))
        return cls(label, factors, {"source": "in-memory merge", "method": plan.method, "preset": plan.preset,
                                    "params": plan.params})

    @classmethod
    def from_folder(cls, path: str | Path, adapters: AdapterSet, label: str | None = None) -> "MergedAdapter":
        task = open_task(path)
        missing = sorted(set(adapters.modules) - set(task.modules))
        if missing:
            raise MergeInputError(
                f"{task.weight_file}: the merged adapter lacks {len(missing)} module(s) of the task adapters "
                f"(e.g. {missing[0]!r}); pass the merge of these task adapters"
            )
        for module in adapters.modules:
            spec = adapters.specs[module]
            (ra, d_in), _ = task.weights.meta()[task.modules[module][0]]
            (d_out, rb), _ = task.weights.meta()[task.modules[module][1]]
            if (d_in, d_out) != (spec.d_in, spec.d_out) or ra != rb:
                raise MergeInputError(
                    f"{task.weight_file}: {module}: A {[ra, d_in]} / B {[d_out, rb]} do not fit the task adapters' "
                    f"d_in={spec.d_in}, d_out={spec.d_out}; pass the merge of these task adapters"
                )

        def factors(module: str) -> tuple[torch.Tensor, torch.Tensor]:
            a_key, b_key = task.modules[module]
            a, b = task.weights.get(a_key).double(), task.weights.get(b_key).double()
            return a, task.module_scaling(module, a.shape[0]) * b

        record = {}
        rec_path = Path(path) / MERGE_RECORD
        if rec_path.is_file():
            try:
                rec = json.loads(rec_path.read_text())
                record = {k: rec.get(k) for k in ("method", "preset", "params")}
            except ValueError:
                pass
        return cls(label or Path(path).name, factors, {"source": str(path), **record})


def layer_index(module: str) -> int | None:
    """The transformer layer of a module name (``...layers.12.mlp...`` -> 12), else None."""
    m = _LAYER.search(module) or _ANY_INT.search(module)
    return int(m.group(1)) if m else None


def projection(module: str) -> str:
    """The last component of a module name (``q_proj``, ``down_proj``, ...)."""
    return module.rsplit(".", 1)[-1]


def layer_groups(modules: list[str], n_groups: int = 3) -> dict[str, list[str]]:
    """Split modules into ``n_groups`` contiguous blocks of layers, named ``layers a-b``
    (as equal in size as possible, shallow to deep); modules without a layer index go to
    ``other``. Insertion order: shallow to deep, then ``other``."""
    layers = sorted({i for m in modules if (i := layer_index(m)) is not None})
    n_groups = max(1, min(n_groups, len(layers))) if layers else 1
    bounds: list[tuple[int, int]] = []
    for g in range(n_groups):
        chunk = layers[g * len(layers) // n_groups:(g + 1) * len(layers) // n_groups]
        if chunk:
            bounds.append((chunk[0], chunk[-1]))
    groups: dict[str, list[str]] = {(f"layers {lo}-{hi}" if lo != hi else f"layer {lo}"): [] for lo, hi in bounds}
    names = list(groups)
    for m in modules:
        i = layer_index(m)
        if i is None:
            groups.setdefault("other", []).append(m)
            continue
        for name, (lo, hi) in zip(names, bounds):
            if lo <= i <= hi:
                groups[name].append(m)
                break
    return groups
