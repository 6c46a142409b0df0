"""Sweeps over a merge hyper-parameter or the number of merged tasks (paper Fig. 5a, Fig. 9),
reusing loaded adapters (and, through ``evaluate``, a loaded base model).

Each point merges in memory and produces one row: the swept value, the weight-space metrics
(direction similarity and magnitude ratio of the largest / other singular directions, mean
over tasks and modules; definitions in :mod:`robustmerge.analysis.direction`) and, when an
``evaluate(result) -> {metric: float}`` callable is given, its metrics. ``evaluate`` receives
the :class:`~robustmerge.driver.MergeResult` (``result.tensors``, ``result.extras``,
``result.config``; the merged tasks are ``result.plan.adapters.tasks``); typically it attaches
the merged adapter to a base model loaded once outside the sweep and scores validation tasks.

Python API::

    adapters = load_adapter_set(paths).materialize()      # read once, reused by every point
    rows = sweep(adapters, "robustmerge", "keep", [0.1, 0.2, 0.5], preset="official",
                 evaluate=my_eval)                          # my_eval(result) -> {"val/avg": 61.2}
    write_csv(rows, "keep.csv")
    standard_sweeps(adapters, "results/sweeps", evaluate=my_eval)   # prune, λ, #tasks: CSV + PNG
"""
from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path
from typing import Callable, Iterable

from tqdm.auto import tqdm

from ..adapters import AdapterSet
from ..driver import MergeResult, merge
from ..errors import MergeInputError
from ..io import atomic_folder, check_output_folder
from ..methods import get_method
from .direction import KEYS, aggregate, direction_metrics, nanmean
from .factors import MergedAdapter, task_factors
from .spectra import lowrank_svd

log = logging.getLogger(__name__)

Evaluate = Callable[[MergeResult], dict]

# The parameter that sets the pruning amount, and whether it is the kept or the dropped share.
PRUNE_PARAM = {"robustmerge": ("keep", "kept"), "ties": ("density", "kept"), "pcb": ("ratio", "kept"),
               "dare": ("drop", "dropped")}
DEFAULT_VALUES = {
    "keep": [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0],
    "density": [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0],
    "ratio": [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0],
    "drop": [0.0, 0.1, 0.3, 0.5, 0.7, 0.9],
    "lam": [0.25, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0],
}


def weight_space_metrics(result: MergeResult) -> dict[str, float]:
    """Mean over the merged tasks and all modules of the direction metrics:
    ``dir_top_cos``, ``dir_top_ratio``, ``dir_rest_cos``, ``dir_rest_ratio``."""
    adapters = result.plan.adapters
    merged = MergedAdapter.from_result(result)
    per_module = {}
    for module in adapters.modules:
        A, B = task_factors(adapters, module)  # [N, r, d_in], [N, d_out, r]
        a_star, b_star = merged.factors(module)
        per_module[module] = direction_metrics(lowrank_svd(B, A), a_star, b_star).summary()
    per_task = aggregate(per_module, adapters.modules)
    return {f"dir_{k}": nanmean(t[k] for t in per_task) for k in KEYS}


def _measure(result: MergeResult, evaluate: Evaluate | None, weight_metrics: bool) -> dict:
    row = weight_space_metrics(result) if weight_metrics else {}
    if evaluate is not None:
        scores = evaluate(result)
        if not isinstance(scores, dict):
            raise TypeError(f"evaluate must return a dict of metric -> number, got {type(scores).__name__}")
        clash = set(scores) & set(row)
        if clash:
            raise ValueError(f"evaluate returned reserved metric names {sorted(clash)}")
        row.update({k: float(v) for k, v in scores.items()})
    return row


def sweep(adapters: AdapterSet, method: str, param: str, values: Iterable, *, preset: str | None = None,
          params: dict | None = None, evaluate: Evaluate | None = None, weight_metrics: bool = True,
          seed: int = 0, device: str = "cpu", progress: bool = False) -> list[dict]:
    """Merge once per value of ``param`` (other parameters: preset, then ``params``).

    Returns:
        rows ``{method, preset, <param>, [pruned_share,] dir_*..., <evaluate metrics>...}``.
    """
    adapters.materialize()
    m = get_method(method)
    if param not in {p.name for p in m.params}:
        raise MergeInputError(f"{method}: cannot sweep {param!r}; parameters: {', '.join(p.name for p in m.params)}")
    rows = []
    for value in tqdm(list(values), desc=f"sweep {param}", unit="merge", disable=not progress):
        result = merge(adapters, method, preset, {**(params or {}), param: value}, device, seed,
                       extras="mean" if evaluate else "drop")
        row = {"method": method, "preset": result.plan.preset or "", param: result.plan.params[param]}
        if PRUNE_PARAM.get(method, (None,))[0] == param:
            v = float(row[param])
            row["pruned_share"] = 1.0 - v if PRUNE_PARAM[method][1] == "kept" else v
        row.update(_measure(result, evaluate, weight_metrics))
        rows.append(row)
    return rows


def subset(adapters: AdapterSet, indices: list[int]) -> AdapterSet:
    """The adapter set of some of the tasks, materialised (from the parent's tensors when
    it holds them)."""
    return adapters.subset(indices).materialize()


def sweep_tasks(adapters: AdapterSet, method: str, counts: Iterable[int] | None = None, *,
                order: list[int] | None = None, preset: str | None = None, params: dict | None = None,
                evaluate: Evaluate | None = None, weight_metrics: bool = True, seed: int = 0,
                device: str = "cpu", progress: bool = False) -> list[dict]:
    """Merge the first k tasks of ``order`` (default: the given order) for each k in
    ``counts`` (default 2..N) (paper Fig. 9). Weight-space metrics cover the merged tasks."""
    adapters.materialize()
    n = adapters.n
    order = list(order) if order is not None else list(range(n))
    if sorted(order) != sorted(set(order)) or any(not 0 <= i < n for i in order):
        raise MergeInputError(f"task order {order} must list distinct task indices in 0..{n - 1}")
    counts = list(counts) if counts is not None else list(range(2, len(order) + 1))
    bad = [k for k in counts if not 2 <= k <= len(order)]
    if bad:
        raise MergeInputError(f"task counts {bad} are outside 2..{len(order)} (a merge needs at least two tasks)")
    rows = []
    for k in tqdm(counts, desc="sweep n_tasks", unit="merge", disable=not progress):
        sub = subset(adapters, order[:k])
        result = merge(sub, method, preset, params, device, seed, extras="mean" if evaluate else "drop")
        row = {"method": method, "preset": result.plan.preset or "", "n_tasks": k,
               "tasks": "+".join(t.name for t in sub.tasks)}
        row.update(_measure(result, evaluate, weight_metrics))
        rows.append(row)
    return rows


def write_csv(rows: list[dict], path: str | Path) -> None:
    """Rows to CSV; columns in order of first appearance; NaN written as empty."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()})


STANDARD = ("prune", "lambda", "tasks")


def run_sweeps(adapters: AdapterSet, method: str = "robustmerge", *, preset: str | None = None,
               params: dict | None = None, evaluate: Evaluate | None = None, which: Iterable[str] = STANDARD,
               custom: dict[str, list] | None = None, prune_values: list | None = None,
               lam_values: list | None = None, task_counts: list[int] | None = None, seed: int = 0,
               device: str = "cpu", progress: bool = False) -> dict[str, dict]:
    """The standard sweeps (``prune``: Fig. 5a, ``lambda``, ``tasks``: Fig. 9) and any
    ``custom`` {param: values} sweeps. Returns {name: {"x", "xlabel", "title", "rows"}}."""
    common = dict(preset=preset, params=params, evaluate=evaluate, seed=seed, device=device, progress=progress)
    out: dict[str, dict] = {}
    for name in which:
        if name == "prune":
            if method not in PRUNE_PARAM:
                log.warning("%s has no pruning parameter: skipping the pruning sweep", method)
                continue
            param, _ = PRUNE_PARAM[method]
            rows = sweep(adapters, method, param, prune_values or DEFAULT_VALUES[param], **common)
            out["prune"] = {"x": "pruned_share", "xlabel": f"share of entries pruned ({param} sweep)",
                            "title": f"{method}: pruning amount (paper Fig. 5a)", "rows": rows}
        elif name == "lambda":
            rows = sweep(adapters, method, "lam", lam_values or DEFAULT_VALUES["lam"], **common)
            out["lambda"] = {"x": "lam", "xlabel": "λ", "title": f"{method}: λ", "rows": rows}
        elif name == "tasks":
            rows = sweep_tasks(adapters, method, task_counts, **common)
            out["tasks"] = {"x": "n_tasks", "xlabel": "number of merged tasks",
                            "title": f"{method}: number of merged tasks (paper Fig. 9)", "rows": rows}
        else:
            raise MergeInputError(f"unknown sweep {name!r}; sweeps: {', '.join(STANDARD)}")
    for param, values in (custom or {}).items():
        rows = sweep(adapters, method, param, values, **common)
        out[param] = {"x": param, "xlabel": param, "title": f"{method}: {param}", "rows": rows}
    return out


def write_sweeps(sweeps: dict[str, dict], out: str | Path, figures: bool = True, inputs: list[Path] | None = None,
                 overwrite: bool = False, settings: dict | None = None) -> list[str]:
    """Write ``<name>.csv`` (+ ``<name>.png``) per sweep, ``sweeps.json`` and ``README.md``
    into ``out`` atomically; returns the written file names."""
    from .pipeline import to_json
    from .report import sweeps_markdown

    out = Path(out)
    check_output_folder(out, list(inputs or []), overwrite)
    if figures:
        from . import figures as fig

        fig.require_matplotlib()
    reserved = {"method", "preset", "tasks", "pruned_share", "n_tasks"}
    pngs = {}
    with atomic_folder(out) as tmp:
        for name, s in sweeps.items():
            write_csv(s["rows"], tmp / f"{name}.csv")
            if figures and s["rows"]:
                first = s["rows"][0]
                skip = reserved | {p.name for p in get_method(first["method"]).params}
                eval_keys = [k for k in first if not k.startswith("dir_") and k not in skip
                             and isinstance(first[k], (int, float))]
                fig.sweep_figure(s["rows"], s["x"], tmp / f"{name}.png", s["title"], s["xlabel"], eval_keys)
                pngs[name] = f"{name}.png"
        (tmp / "sweeps.json").write_text(json.dumps(to_json({"settings": settings or {}, "sweeps": sweeps}),
                                                    indent=1) + "\n")
        (tmp / "README.md").write_text(sweeps_markdown(sweeps, pngs, settings or {}))
        written = sorted(p.name for p in tmp.iterdir())
    return written
