"""The analysis pipeline: :func:`analyze` computes spectra, pruning spectra and direction
robustness of an adapter set and its merges, module by module, into one JSON-ready dict;
:func:`write_analysis` adds the figures and the Markdown summary.

Python API::

    from robustmerge import load_adapter_set, merge
    from robustmerge.analysis import MergedAdapter, analyze, write_analysis
    adapters = load_adapter_set(paths).materialize()
    merged = [MergedAdapter.from_result(merge(adapters, "robustmerge")),
              MergedAdapter.from_result(merge(adapters, "task_arithmetic"))]
    report = analyze(adapters, merged)
    write_analysis(report, "results/analysis")   # analysis.json, *.png, README.md
"""
from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..adapters import AdapterSet
from ..io import atomic_folder, check_output_folder
from .direction import KEYS, aggregate, direction_metrics, nanmean
from .factors import MergedAdapter, layer_groups, layer_index, projection, task_factors
from .spectra import lowrank_svd, pruning_params, pruning_spectra, singular_values

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1


def _pad(s: torch.Tensor, r: int) -> torch.Tensor:
    """[..., k] -> [..., r] with zeros (k < r when a module's d_in or d_out is below r)."""
    return torch.nn.functional.pad(s, (0, r - s.shape[-1])) if s.shape[-1] < r else s


def analyze(adapters: AdapterSet, merged: list[MergedAdapter], keep: float | None = None,
            clamp_ratio: float | None = None, n_groups: int = 3, progress: bool = False) -> dict:
    """Analyse the task adapters and each merged adapter, one module at a time.

    Args:
        adapters: the task adapters (ideally ``materialize()``-d when analysed repeatedly).
        merged: merged adapters to compare with the tasks (may be empty: spectra only).
        keep, clamp_ratio: pruning share kept and S clamp for the pruning spectra (Fig. 3a/8);
            None: the values of RobustMerge's ``official`` preset (the released ones).
        n_groups: number of contiguous layer groups for the per-group direction metrics.
    Returns:
        A JSON-ready dict (see ``docs/analysis.md`` for every key); NaN where undefined.
    """
    labels = [m.label for m in merged]
    if len(set(labels)) != len(labels):
        raise ValueError(f"merged adapters need distinct labels, got {labels}")
    settings = pruning_params(keep, clamp_ratio)
    keep, clamp_ratio = settings["keep"], settings["clamp_ratio"]
    tasks = [t.name for t in adapters.tasks]
    r = adapters.rank
    groups = layer_groups(adapters.modules, n_groups)
    per_module: dict = {}
    directions: dict[str, dict] = {lab: {} for lab in labels}
    idx_sum = {lab: torch.zeros(2, r, dtype=torch.float64) for lab in labels}  # Σ cos_i, Σ ratio_i
    idx_cnt = {lab: torch.zeros(r, dtype=torch.float64) for lab in labels}
    for module in tqdm(adapters.modules, desc="analyse", unit="module", disable=not progress):
        A, B = task_factors(adapters, module)  # [N, r, d_in], [N, d_out, r] float64
        svd = lowrank_svd(B, A)
        prune = pruning_spectra(A, B, keep, clamp_ratio)
        entry = {"original": _pad(svd.S, r), "pruned": _pad(prune["pruned"], r),
                 "pruned_scaled": _pad(prune["pruned_scaled"], r), "merged": {}}
        for m in merged:
            a_star, b_star = m.factors(module)  # [r*, d_in], [d_out, r*]
            entry["merged"][m.label] = _pad(singular_values(b_star, a_star), r)[:r]
            d = direction_metrics(svd, a_star, b_star)
            directions[m.label][module] = d.summary()
            k = d.cos.shape[1]
            idx_sum[m.label][0, :k] += (d.cos * d.valid).sum(0)
            idx_sum[m.label][1, :k] += (d.ratio * d.valid).sum(0)
            idx_cnt[m.label][:k] += d.valid.sum(0)
        per_module[module] = entry
    report = {
        "schema_version": SCHEMA_VERSION,
        "tasks": tasks,
        "merged": [{"label": m.label, **m.info} for m in merged],
        "rank": r,
        "n_modules": len(adapters.modules),
        "settings": {"keep": keep, "clamp_ratio": clamp_ratio, "n_groups": n_groups},
        "layer_groups": {g: sorted({layer_index(m) for m in ms} - {None}) for g, ms in groups.items()},
        "spectra": _spectra_section(per_module, tasks, labels, groups),
        "direction": {lab: _direction_section(directions[lab], tasks, adapters.modules, groups,
                                              idx_sum[lab], idx_cnt[lab]) for lab in labels},
    }
    return report


def _spectra_section(per_module: dict, tasks: list[str], labels: list[str], groups: dict) -> dict:
    """Means of σ_i over modules: per task, per layer, per layer group; and every module."""
    modules = list(per_module)

    def mean_of(key: str, mods: list[str]) -> list[float]:  # mean over modules and tasks
        return torch.stack([per_module[m][key].mean(0) for m in mods]).mean(0).tolist()

    def merged_mean(label: str, mods: list[str]) -> list[float]:
        return torch.stack([per_module[m]["merged"][label] for m in mods]).mean(0).tolist()

    by_layer: dict = defaultdict(list)
    for m in modules:
        by_layer[str(layer_index(m))].append(m)
    section = {
        "per_task": {t: torch.stack([per_module[m]["original"][n] for m in modules]).mean(0).tolist()
                     for n, t in enumerate(tasks)},
        "merged": {lab: merged_mean(lab, modules) for lab in labels},
        "pruning": {key: mean_of(key, modules) for key in ("original", "pruned", "pruned_scaled")},
        "by_layer": {
            layer: {**{key: mean_of(key, mods) for key in ("original", "pruned", "pruned_scaled")},
                    "merged": {lab: merged_mean(lab, mods) for lab in labels}}
            for layer, mods in by_layer.items()
        },
        "by_layer_group": {g: {key: mean_of(key, mods) for key in ("original", "pruned", "pruned_scaled")}
                           for g, mods in groups.items()},
        "per_module": {
            m: {"tasks": {t: e["original"][n].tolist() for n, t in enumerate(tasks)},
                "pruned": {t: e["pruned"][n].tolist() for n, t in enumerate(tasks)},
                "pruned_scaled": {t: e["pruned_scaled"][n].tolist() for n, t in enumerate(tasks)},
                "merged": {lab: e["merged"][lab].tolist() for lab in labels}}
            for m, e in per_module.items()
        },
    }
    return section


def _direction_section(per_module: dict, tasks: list[str], modules: list[str], groups: dict,
                       idx_sum: torch.Tensor, idx_cnt: torch.Tensor) -> dict:
    """Per task and group, the mean over tasks, per projection, per singular index, per module."""
    scopes = {"all": modules, **groups}
    per_task = {t: {} for t in tasks}
    for scope, mods in scopes.items():
        for n, vals in enumerate(aggregate(per_module, mods)):
            per_task[tasks[n]][scope] = vals
    mean = {scope: {k: nanmean(per_task[t][scope][k] for t in tasks) for k in KEYS} for scope in scopes}
    projections: dict = defaultdict(list)
    for m in modules:
        projections[projection(m)].append(m)
    by_projection = {p: {k: nanmean(v[k] for v in aggregate(per_module, mods)) for k in KEYS}
                     for p, mods in projections.items()}
    cnt = idx_cnt.clamp(min=1)
    return {
        "tasks": per_task,
        "mean": mean,
        "by_projection": by_projection,
        "by_index": {"cos": (idx_sum[0] / cnt).tolist(), "ratio": (idx_sum[1] / cnt).tolist(),
                     "count": idx_cnt.long().tolist()},
        "per_module": {m: {t: per_module[m][n] for n, t in enumerate(tasks)} for m in modules},
    }


def to_json(obj, digits: int = 7):
    """NaN/inf -> null, floats to ``digits`` significant digits, tuples -> lists."""
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else float(f"{obj:.{digits}g}")
    if isinstance(obj, dict):
        return {str(k): to_json(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v, digits) for v in obj]
    return obj


def write_analysis(report: dict, out: str | Path, figures: bool = True, inputs: list[Path] | None = None,
                   overwrite: bool = False) -> list[str]:
    """Write ``analysis.json``, the figures (unless ``figures=False``) and ``README.md`` into
    ``out`` atomically; returns the written file names. ``inputs``: folders ``out`` must not
    overlap."""
    from .report import analysis_markdown

    out = Path(out)
    check_output_folder(out, list(inputs or []), overwrite)
    pngs: dict[str, str] = {}
    if figures:
        from . import figures as fig  # imports matplotlib: fails early, before writing anything

        fig.require_matplotlib()
    with atomic_folder(out) as tmp:
        (tmp / "analysis.json").write_text(json.dumps(to_json(report), indent=1) + "\n")
        if figures:
            pngs = fig.analysis_figures(report, tmp)
        (tmp / "README.md").write_text(analysis_markdown(report, pngs))
        written = sorted(p.name for p in tmp.iterdir())
    log.info("wrote %s (%s)", out, ", ".join(written))
    return written
