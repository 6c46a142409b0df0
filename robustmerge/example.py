"""A small built-in example: generate tiny task adapters, merge them with every method, and
show what each merge keeps of each task's update.

Until the full demo lands this is what the README's first command runs. For every method
(default parameters) it reports, averaged over modules, the cosine similarity between each
task's update ΔW_n = s·B_n A_n and the merged ΔW* = s·B* A*, and the norm ratio
‖ΔW*‖ / ‖ΔW_n‖, computed from the factors (no model needed).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from .adapters import load_adapter_set, open_task
from .driver import merge_to_folder
from .errors import MergeInputError
from .methods import REGISTRY
from .synthetic import LlamaShape, write_task_adapters
from .taskfolder import MERGE_RECORD


def kept_share(adapters, merged_folder: Path) -> tuple[float, float]:
    """Mean over tasks and modules of cos(ΔW*, ΔW_n) and ‖ΔW*‖/‖ΔW_n‖."""
    t_merged = open_task(merged_folder)
    cos, ratio = [], []
    s_merged = t_merged.module_scaling(adapters.modules[0], t_merged.config["r"])
    for module in adapters.modules:
        A, B = adapters.factors(module)
        a_key, b_key = t_merged.modules[module]
        dw_star = s_merged * t_merged.weights.get(b_key) @ t_merged.weights.get(a_key)  # [d_out, d_in]
        for n, t in enumerate(adapters.tasks):
            dw = t.module_scaling(module, A.shape[1]) * B[n].float() @ A[n].float()
            cos.append(torch.nn.functional.cosine_similarity(dw.flatten(), dw_star.flatten(), dim=0).item())
            ratio.append((dw_star.norm() / dw.norm()).item())
    return sum(cos) / len(cos), sum(ratio) / len(ratio)


def run_example(out: Path, seed: int = 0, overwrite: bool = False) -> int:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise MergeInputError(f"{out}: exists and is not empty; pass --overwrite or choose another --out")
        shutil.rmtree(out)
    shape = LlamaShape(layers=2, hidden=64, intermediate=128, mm_hidden=64)
    tasks = write_task_adapters(out / "adapters", 4, shape, r=8, alpha=16, seed=seed)
    adapters = load_adapter_set(tasks).materialize()
    print(f"generated {len(tasks)} task adapters ({len(adapters.modules)} modules, r=8) in {out / 'adapters'}")
    print()
    print("| method | preset | mean cos(ΔW*, ΔW_n) | mean ‖ΔW*‖/‖ΔW_n‖ | merge s |")
    print("|---|---|---|---|---|")
    for name, method in sorted(REGISTRY.items()):
        for preset in ([p for p in method.presets if not p.startswith("ablation-")] or [None]):
            folder = out / "merged" / (name + (f"-{preset}" if preset else ""))
            t0 = time.perf_counter()
            merge_to_folder(adapters, folder, name, preset=preset, seed=seed)
            wall = time.perf_counter() - t0
            cos, ratio = kept_share(adapters, folder)
            print(f"| {name} | {preset or '-'} | {cos:.3f} | {ratio:.3f} | {wall:.2f} |")
    print()
    print(f"merged adapters (PEFT-loadable, with {MERGE_RECORD}) are in {out / 'merged'}")
    return 0
