"""Figures for the demo's miniature benchmark, from an existing demo run, in one command:

    python -m robustmerge.demo.analysis [--demo results/demo] [--out results/demo/analysis]

It reads ``<demo>/settings.json`` (the cached data, base and adapter folders) and
``<demo>/chosen_hyperparameters.json`` (λ / kept share chosen per method on validation), and writes
under ``--out``:

1. ``weights/``: the weight-space analysis (:mod:`robustmerge.analysis`: singular values of the seven
   seen-task adapters before / after pruning, and direction robustness) of every method's chosen
   merge (RobustMerge ``official`` and ``paper``, Task Arithmetic, DARE, TIES, PCB):
   ``analysis.json``, PNG figures, ``README.md``;
2. ``sweeps/``: four sweeps, each point scored on the seen tasks' VALIDATION splits with the
   demo's own scorers, on one loaded base whose merged adapter is swapped per point:
   ``prune`` (RobustMerge official, keep ∈ {0.1, 0.2, 0.3, 0.5, 0.8, 1.0}, chosen λ),
   ``lambda`` (RobustMerge official, chosen keep) and ``lambda_task_arithmetic``
   (λ ∈ {0.125, 0.25, 0.5, 1, 2}), ``tasks`` (RobustMerge official at its chosen point, the first
   2..7 seen tasks in the demo's order): ``<name>.csv``, ``<name>.png``, ``sweeps.json``,
   ``README.md``;
3. ``README.md`` linking everything.

Sweep score columns: ``val_mean`` = mean over the merged seen tasks of the validation score
(accuracy, ROUGE-L for Caption; 0-100), ``val_rel`` = the demo's selection criterion x 100 (mean
over those tasks of validation score / the task's own adapter's validation score, in %).
Nothing is trained; the test splits are not touched. Re-running replaces ``--out``'s
``weights/``, ``sweeps/`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from robustmerge.errors import MergeInputError

from .tasks import SEEN as DEMO_SEEN
from robustmerge.errors import cli_main

logger = logging.getLogger(__name__)

PRUNE_KEEP = (0.1, 0.2, 0.3, 0.5, 0.8, 1.0)
LAMBDAS = (0.125, 0.25, 0.5, 1.0, 2.0)
#: analysed merges: (label = demo run folder, method, preset), as in the demo's table
ANALYSED = (
    ("robustmerge-official", "robustmerge", "official"),
    ("robustmerge-paper", "robustmerge", "paper"),
    ("task_arithmetic", "task_arithmetic", None),
    ("dare", "dare", None),
    ("ties", "ties", None),
    ("pcb", "pcb", None),
)
OFFICIAL = "robustmerge-official"


# ----------------------------------------------------------------------------- inputs


def read_demo(demo: str | Path) -> tuple[dict, dict]:
    """``(settings.json, chosen_hyperparameters.json)`` of a demo run; clear errors if absent."""
    demo = Path(demo)
    files = {}
    for name in ("settings.json", "chosen_hyperparameters.json"):
        path = demo / name
        if not path.is_file():
            raise MergeInputError(f"{path}: not found; run `python -m robustmerge demo` first "
                                  f"(or pass --demo the folder of a finished demo run)")
        try:
            files[name] = json.loads(path.read_text())
        except ValueError as exc:
            raise MergeInputError(f"{path}: not valid JSON ({exc}); run `python -m robustmerge demo` again") from exc
    settings, chosen = files["settings.json"], files["chosen_hyperparameters.json"]
    adapters = settings.get("adapters", {})
    missing = [t for t in DEMO_SEEN if t not in adapters or not Path(adapters[t]).is_dir()]
    for key in ("base", "data"):
        if not settings.get(key) or not Path(settings[key]).is_dir():
            missing.append(key)
    if missing:
        raise MergeInputError(f"{demo / 'settings.json'}: cached folders missing for {missing} (the demo cache was "
                              f"removed?); run `python -m robustmerge demo` first")
    absent = [run for run, _, _ in ANALYSED if run not in chosen.get("methods", {})]
    if absent:
        raise MergeInputError(f"{demo / 'chosen_hyperparameters.json'}: no chosen point for {absent}; "
                              f"run `python -m robustmerge demo` first")
    return settings, chosen


def named_adapter_folders(adapters: dict[str, str], tasks, folder: Path) -> list[Path]:
    """Symlinks ``folder/<task> -> <adapter folder>`` so the adapter set's task names are the tasks'."""
    folder.mkdir(parents=True, exist_ok=True)
    links = []
    for task in tasks:
        link = folder / task
        link.symlink_to(Path(adapters[task]).resolve(), target_is_directory=True)
        links.append(link)
    return links


# ----------------------------------------------------------------------------- evaluate


class ValidationScorer:
    """``evaluate(result) -> {"val_mean", "val_rel"}`` for the sweeps: writes the merged adapter to
    a temporary folder (``merge_to_folder``, as the demo does), attaches it to the once-loaded base
    (``swapper``) and scores the merged tasks' validation splits with the demo's scorers.

    ``reference``: each task's own adapter's validation score (the demo's normaliser).
    """

    def __init__(self, swapper, data_root: Path, reference: dict[str, float], work: Path, batch_size: int = 16):
        self.swapper, self.data_root, self.reference = swapper, Path(data_root), reference
        self.work, self.batch_size = Path(work), batch_size
        self.calls = 0
        self.seconds = 0.0

    def __call__(self, result) -> dict:
        from robustmerge.driver import merge_to_folder

        from .pipeline import evaluate_run, normalized_score
        from .tasks import headline

        start = time.perf_counter()
        plan = result.plan
        tasks = [t.name for t in plan.adapters.tasks]
        self.calls += 1
        tmp = Path(tempfile.mkdtemp(prefix=f"point{self.calls}-", dir=self.work))
        try:
            merge_to_folder(plan.adapters, tmp / "merged", plan.method, preset=plan.preset, params=plan.params,
                            seed=plan.seed, extras=plan.extras)
            res = evaluate_run(self.swapper, tmp / "merged", f"sweep-{self.calls}", tasks, "val", self.data_root,
                               tmp / "answers", self.batch_size)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        scores = [headline(r) for r in res.values()]
        self.seconds += time.perf_counter() - start
        return {"val_mean": round(sum(scores) / len(scores), 4),
                "val_rel": round(100 * normalized_score(res, self.reference), 4)}


# ----------------------------------------------------------------------------- the sweeps


def demo_sweeps(adapters, official: dict, evaluate: Callable | None, *, seed: int = 0,
                prune_keep=PRUNE_KEEP, lambdas=LAMBDAS, progress: bool = False) -> dict[str, dict]:
    """The demo's four sweeps on ``adapters`` (an AdapterSet, tasks in merge order).

    Args:
        official: RobustMerge official's chosen point, ``{"lam": ..., "keep": ...}``.
        evaluate: ``evaluate(MergeResult) -> {metric: float}`` (e.g. :class:`ValidationScorer`), or None.
    Returns:
        ``{name: {"x", "xlabel", "title", "rows"}}`` as :func:`robustmerge.analysis.write_sweeps` takes it.
    """
    from robustmerge.analysis.sweeps import sweep, sweep_tasks

    adapters.materialize()
    lam, keep = official["lam"], official["keep"]
    common = dict(evaluate=evaluate, seed=seed, progress=progress)
    out = {}
    rows = sweep(adapters, "robustmerge", "keep", list(prune_keep), preset="official", params={"lam": lam}, **common)
    out["prune"] = {"x": "pruned_share", "xlabel": "share of entries pruned (1 - keep)",
                    "title": f"robustmerge official: pruning amount (λ = {lam:g}; paper Fig. 5a)", "rows": rows}
    rows = sweep(adapters, "robustmerge", "lam", list(lambdas), preset="official", params={"keep": keep}, **common)
    out["lambda"] = {"x": "lam", "xlabel": "λ", "title": f"robustmerge official: λ (keep = {keep:g})", "rows": rows}
    rows = sweep(adapters, "task_arithmetic", "lam", list(lambdas), **common)
    out["lambda_task_arithmetic"] = {"x": "lam", "xlabel": "λ", "title": "task_arithmetic: λ", "rows": rows}
    rows = sweep_tasks(adapters, "robustmerge", range(2, adapters.n + 1), preset="official",
                       params={"lam": lam, "keep": keep}, **common)
    out["tasks"] = {"x": "n_tasks", "xlabel": "number of merged tasks (first k in the demo's order)",
                    "title": f"robustmerge official: number of merged tasks (λ = {lam:g}, keep = {keep:g}; "
                             f"paper Fig. 9)", "rows": rows}
    return out


# ----------------------------------------------------------------------------- the command


def _readme(out: Path, demo: Path, report: dict, sweeps: dict, official: dict, timings: dict,
            weights_files: list[str], sweep_files: list[str]) -> str:
    from robustmerge.analysis.report import _f, _table

    lines = ["# Figures for the demo's miniature benchmark", "",
             f"Made by `python -m robustmerge.demo.analysis --demo {demo} --out {out}` from the demo run in "
             f"[`{demo}`](../) (seven seen-task adapters; hyper-parameters as chosen on validation in "
             f"`chosen_hyperparameters.json`). Validation splits only.", "",
             "## Weight space: spectra and direction robustness", "",
             "Details, per-task tables and definitions: [`weights/README.md`](weights/README.md); every number: "
             "[`weights/analysis.json`](weights/analysis.json).", ""]
    lines += [f"- [`weights/{f}`](weights/{f})" for f in weights_files if f.endswith(".png")] + [""]
    rows = []
    for m in report["merged"]:
        a = report["direction"][m["label"]]["mean"]["all"]
        ptxt = ", ".join(f"{k}={v:g}" for k, v in (m.get("params_chosen") or {}).items())
        rows.append([m["label"], ptxt, a["top_cos"], a["rest_cos"], a["top_ratio"], a["rest_ratio"]])
    lines += _table(["merge", "chosen", "cos largest", "cos rest", "ratio largest", "ratio rest"], rows)
    lines += ["## Sweeps with validation scores", "",
              "`val_mean`: mean over the merged seen tasks of the validation score (0-100); `val_rel`: mean of "
              "validation score / the task's own adapter's validation score, in % (the demo's selection criterion). "
              f"RobustMerge official's chosen point: λ = {official['lam']:g}, keep = {official['keep']:g}. "
              "Details: [`sweeps/README.md`](sweeps/README.md).", ""]
    for name, s in sweeps.items():
        links = f"[`sweeps/{name}.csv`](sweeps/{name}.csv)"
        if f"{name}.png" in sweep_files:
            links += f", [`sweeps/{name}.png`](sweeps/{name}.png)\n\n![{name}](sweeps/{name}.png)"
        lines += [f"### {s['title']}", "", links, ""]
        cols = [c for c in s["rows"][0] if c not in ("method", "preset")]
        lines += _table(cols, [[r.get(c) for c in cols] for r in s["rows"]])
    lines += ["## Time", "", ", ".join(f"{k} {_f(float(v), 1)} s" for k, v in timings.items()), ""]
    return "\n".join(lines)


def run(demo: str | Path = "results/demo", out: str | Path | None = None, threads: int = 1,
        figures: bool = True, progress: bool = True) -> dict:
    """Run the analysis and the sweeps (module docstring); returns a summary dict."""
    import torch

    from llava.model.adapter_swap import AdapterSwapper
    from robustmerge.adapters import load_adapter_set
    from robustmerge.analysis import MergedAdapter, analyze, write_analysis, write_sweeps
    from robustmerge.atomic import write_text_atomic
    from robustmerge.driver import merge

    from .pipeline import _quiet_libraries

    demo = Path(demo)
    out = Path(out) if out is not None else demo / "analysis"
    settings, chosen = read_demo(demo)
    torch.set_num_threads(threads)
    seed = settings["settings"]["data"]["seed"]
    batch_size = settings["settings"].get("eval_batch_size", 16)
    methods = chosen["methods"]
    official = methods[OFFICIAL]["chosen"]
    timings: dict[str, float] = {}
    start = time.perf_counter()
    say = print if progress else (lambda *a, **k: None)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".demo-analysis-", dir=out))
    try:
        with _quiet_libraries():
            paths = named_adapter_folders(settings["adapters"], DEMO_SEEN, work / "tasks")
            adapters = load_adapter_set(paths)
            inputs = [Path(settings["adapters"][t]) for t in DEMO_SEEN]
            adapters.materialize()

            t0 = time.perf_counter()
            merged = []
            for run_name, method, preset in ANALYSED:
                params = methods[run_name]["chosen"]
                result = merge(adapters, method, preset, params, seed=seed, extras="drop")
                m = MergedAdapter.from_result(result, label=run_name)
                m.info["params_chosen"] = params
                merged.append(m)
            report = analyze(adapters, merged, keep=official["keep"], progress=False)
            weights_files = write_analysis(report, out / "weights", figures=figures, inputs=inputs, overwrite=True)
            timings["weight-space analysis"] = round(time.perf_counter() - t0, 1)
            say(f"weights: {len(merged)} merges analysed ({timings['weight-space analysis']:.0f} s) -> "
                f"{out / 'weights'}")

            t0 = time.perf_counter()
            swapper = AdapterSwapper(settings["base"], device="cpu", dtype="fp32")
            timings["load base"] = round(time.perf_counter() - t0, 1)
            scorer = ValidationScorer(swapper, Path(settings["data"]), chosen["individual_validation"], work,
                                      batch_size)
            t0 = time.perf_counter()
            sweeps = demo_sweeps(adapters, official, scorer, seed=seed, progress=progress)
            timings["sweeps"] = round(time.perf_counter() - t0, 1)
            timings["of which validation"] = round(scorer.seconds, 1)
            sweep_settings = {"demo": str(demo), "adapters": ", ".join(DEMO_SEEN), "seed": seed,
                              "robustmerge official chosen": json.dumps(official),
                              "scores": "val_mean = mean validation score over the merged seen tasks (0-100); "
                                        "val_rel = mean of validation score / own adapter's validation score (%)"}
            sweep_files = write_sweeps(sweeps, out / "sweeps", figures=figures, inputs=inputs, overwrite=True,
                                       settings=sweep_settings)
            say(f"sweeps: {scorer.calls} merges scored on validation ({timings['sweeps']:.0f} s) -> {out / 'sweeps'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    timings["total"] = round(time.perf_counter() - start, 1)
    write_text_atomic(out / "README.md", _readme(out, demo, report, sweeps, official, timings, weights_files,
                                                 sweep_files))
    say(f"wrote {out / 'README.md'} (total {timings['total']:.0f} s)")
    return {"out": out, "report": report, "sweeps": sweeps, "timings": timings}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m robustmerge.demo.analysis",
                                description="Weight-space analysis and validation-scored sweeps of the demo's "
                                            "merges, from an existing demo run (figures, CSV, JSON, README).")
    p.add_argument("--demo", default="results/demo", help="the demo run folder (default results/demo)")
    p.add_argument("--out", help="output folder (default <demo>/analysis)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--no-figures", action="store_true", help="JSON, CSV and Markdown only")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return cli_main(lambda: run(args.demo, args.out, threads=args.threads, figures=not args.no_figures,
                                progress=not args.quiet), prog="robustmerge.demo.analysis")


if __name__ == "__main__":
    sys.exit(main())
