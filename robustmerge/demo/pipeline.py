"""The demo's stages: data -> base -> adapters -> merges chosen on validation -> test -> table.

    python -m robustmerge demo [--out results/demo] [--seed 0] [--quick] [--fresh]

1. data: the miniature MM-MergeBench (:mod:`.generator`), 7 seen + 3 unseen tasks;
2. base: a tiny LLaVA pre-trained on the general mixture (:func:`.model.build_base`);
3. adapters: one LoRA per seen task and one on their union (multi-task), via ``llava.train``;
4. merges: every registered method (RobustMerge ``official`` and ``paper`` presets, Task
   Arithmetic, DARE, TIES, PCB) over the same grid of λ x kept share (TIES density, PCB ratio,
   RobustMerge keep, DARE 1 - drop; Task Arithmetic has no such knob), each merged with
   ``robustmerge.merge_to_folder`` and scored on the seen tasks' VALIDATION splits; the
   criterion is the mean over seen tasks of (validation score / the task's own adapter's
   validation score), so no task's metric scale dominates; ties go to the earlier grid point;
5. test: zero-shot, each adapter on its own task ("individual"), multi-task and each method's
   chosen merge on every test split, with the ``llava.eval`` runner and scorers, on one loaded
   base whose adapters are swapped (``llava.model.adapter_swap``);
6. table: ``robustmerge.table`` (layout ``demo``) -> ``table.md`` / ``table.csv``.

Outputs under ``--out``: ``<run>/<task>/{answers.jsonl,result.json}``, ``table.md``,
``table.csv``, ``chosen_hyperparameters.json`` (every grid point's validation scores too),
``timings.json``, ``settings.json``; validation runs in ``.validation/``. The data, the base,
the adapters and the merges are cached under ``--cache`` (default ``.cache/demo``) by a hash
of everything they depend on (settings, seed, the source of the code that makes them, library
versions); ``--fresh`` rebuilds them. Evaluations always run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from llava.model.tiny import TinySizes

from .generator import DataConfig
from .tasks import SEEN as DEMO_SEEN, UNSEEN as DEMO_UNSEEN
from .model import TrainRecipe

logger = logging.getLogger(__name__)

ZERO_SHOT, INDIVIDUAL, MULTI_TASK = "zero-shot", "individual", "multi-task"
#: (results folder = table row, registered method, preset); every method of the registry
MERGES = (
    ("task_arithmetic", "task_arithmetic", None),
    ("dare", "dare", None),
    ("ties", "ties", None),
    ("pcb", "pcb", None),
    ("robustmerge-paper", "robustmerge", "paper"),
    ("robustmerge-official", "robustmerge", "official"),
)
#: each method's density-like parameter, as a function of the grid's "kept share"
KEPT_KNOB: dict[str, tuple[str, Callable[[float], float]] | None] = {
    "task_arithmetic": None,
    "dare": ("drop", lambda kept: round(1.0 - kept, 6)),
    "ties": ("density", lambda kept: kept),
    "pcb": ("ratio", lambda kept: kept),
    "robustmerge": ("keep", lambda kept: kept),
}
_HERE = Path(__file__).resolve().parent
_LLAVA = _HERE.parents[1] / "llava"


@dataclass(frozen=True)
class DemoSettings:
    """Everything the demo's numbers depend on (besides code and library versions)."""

    mode: str
    data: DataConfig
    sizes: TinySizes
    tower: TrainRecipe
    base: TrainRecipe
    adapter: TrainRecipe
    multitask: TrainRecipe
    lambdas: tuple[float, ...]
    kept: tuple[float, ...]
    eval_batch_size: int = 16

    @classmethod
    def full(cls, seed: int = 0) -> "DemoSettings":
        return cls(
            mode="full",
            data=DataConfig(seed=seed, image_size=32, n_train=600, n_val=32, n_test=64, n_general=3000),
            sizes=_sizes(),
            tower=TrainRecipe(steps=1500, lora_r=0, lora_alpha=0, learning_rate=3e-3, projector_lr=0.0, batch_size=64),
            base=TrainRecipe(steps=1200, lora_r=0, lora_alpha=0, learning_rate=2e-3, projector_lr=0.0),
            adapter=TrainRecipe(steps=200, lora_r=16, lora_alpha=32, learning_rate=2e-3, projector_lr=2e-4),
            multitask=TrainRecipe(steps=600, lora_r=16, lora_alpha=32, learning_rate=2e-3, projector_lr=2e-4),
            lambdas=(0.125, 0.25, 0.5, 1.0, 2.0),
            kept=(0.2, 0.5),
        )  # fmt: skip

    @classmethod
    def quick(cls, seed: int = 0) -> "DemoSettings":
        """A smoke-test size: every stage runs, the numbers are rough."""
        return cls(
            mode="quick",
            data=DataConfig(seed=seed, image_size=32, n_train=200, n_val=16, n_test=16, n_general=800),
            sizes=_sizes(),
            tower=TrainRecipe(steps=300, lora_r=0, lora_alpha=0, learning_rate=3e-3, projector_lr=0.0, batch_size=64),
            base=TrainRecipe(steps=250, lora_r=0, lora_alpha=0, learning_rate=2e-3, projector_lr=0.0),
            adapter=TrainRecipe(steps=50, lora_r=16, lora_alpha=32, learning_rate=3e-3, projector_lr=3e-4),
            multitask=TrainRecipe(steps=100, lora_r=16, lora_alpha=32, learning_rate=3e-3, projector_lr=3e-4),
            lambdas=(0.25, 1.0),
            kept=(0.5,),
        )  # fmt: skip

    def to_dict(self) -> dict:
        return asdict(self)


def _sizes() -> TinySizes:
    return TinySizes(vocab_size=768, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=4,
                     vision_hidden_size=64, vision_intermediate_size=128, vision_layers=3, vision_heads=4,
                     image_size=32, patch_size=8, max_positions=256)


# ----------------------------------------------------------------------------- cache


def _source_hash(*files: Path) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def _versions() -> dict:
    import peft
    import torch
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


class Cache:
    """Folders named by a hash of what made them; built in a temporary folder, then renamed."""

    def __init__(self, root: Path, fresh: bool):
        self.root, self.fresh = root, fresh
        self.built: list[str] = []
        self.reused: list[str] = []

    def get(self, kind: str, payload: dict, build: Callable[[Path], object]) -> tuple[Path, str]:
        """The folder for ``payload`` (built by ``build(path)`` unless cached); returns (folder, key)."""
        key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
        folder = self.root / f"{kind}-{key}"
        if folder.is_dir() and (folder / ".complete").is_file() and not self.fresh:
            self.reused.append(folder.name)
            return folder, key
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-{key}.", dir=self.root))
        try:
            build(tmp / "out")
            (tmp / "out" / "cache_key.json").write_text(json.dumps(payload, indent=1, sort_keys=True, default=str))
            (tmp / "out" / ".complete").write_text("")
            if folder.exists():
                shutil.rmtree(folder)
            (tmp / "out").rename(folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.built.append(folder.name)
        return folder, key


# ----------------------------------------------------------------------------- stages


class Timings(dict):
    """Seconds per stage, in order."""

    @contextlib.contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = round(self.get(name, 0.0) + time.perf_counter() - start, 2)


def _bar(total: int, desc: str, enabled: bool, unit: str = "step"):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=True, dynamic_ncols=True)


def build_data(cache: Cache, settings: DemoSettings) -> tuple[Path, str]:
    from . import generator

    payload = {"data": settings.data.to_dict(), "seen": DEMO_SEEN, "unseen": DEMO_UNSEEN,
               "code": _source_hash(_HERE / "generator.py")}
    return cache.get("data", payload, lambda path: generator.generate(path, settings.data, DEMO_SEEN, DEMO_UNSEEN))


def build_base(cache: Cache, settings: DemoSettings, data_root: Path, data_key: str,
               progress: bool) -> tuple[Path, str]:
    from . import model

    payload = {"data": data_key, "sizes": asdict(settings.sizes), "tower": settings.tower.to_dict(),
               "base": settings.base.to_dict(), "seed": settings.data.seed, "versions": _versions(),
               "code": _source_hash(_HERE / "model.py", _HERE / "generator.py", _LLAVA / "model" / "tiny.py",
                                    _LLAVA / "model" / "export.py", _LLAVA / "train" / "data.py")}

    def make(path: Path) -> None:
        bar = _bar(settings.tower.steps + settings.base.steps, "base: tower + language model pre-training", progress)
        try:
            model.build_base(path, data_root, settings.sizes, settings.tower, settings.base, settings.data.seed,
                             on_step=lambda: bar.update(1))
        finally:
            bar.close()

    return cache.get("base", payload, make)


def build_adapters(cache: Cache, settings: DemoSettings, data_root: Path, base: Path, base_key: str,
                   progress: bool, timings: Timings) -> dict[str, tuple[Path, str]]:
    """One adapter per seen task, then the multi-task adapter: ``{task or MULTI_TASK: (folder, key)}``."""
    from . import model

    code = _source_hash(_HERE / "model.py", _LLAVA / "train" / "train.py", _LLAVA / "train" / "data.py",
                        _LLAVA / "train" / "llava_trainer.py")
    jobs = [(task, task, settings.adapter) for task in DEMO_SEEN] + [(MULTI_TASK, "MultiTask", settings.multitask)]
    out = {}
    bar = _bar(len(jobs), "adapters (llava.train)", progress, "adapter")
    for name, folder, recipe in jobs:
        bar.set_postfix_str(name)
        payload = {"base": base_key, "train_file": folder, "recipe": recipe.to_dict(), "code": code,
                   "versions": _versions()}

        def make(path: Path, folder=folder, recipe=recipe) -> None:
            model.train_adapter(base, data_root / "instructions" / folder / "train.json", data_root / "datasets",
                                path, recipe)

        with timings.stage(f"adapter {name}"):
            out[name] = cache.get("adapter", payload, make)
        bar.update(1)
    bar.close()
    return out


def grid(method: str, settings: DemoSettings) -> list[dict]:
    """The method's grid points: λ for every method, x the kept share where it has such a knob."""
    knob = KEPT_KNOB[method]
    if knob is None:
        return [{"lam": lam} for lam in settings.lambdas]
    name, convert = knob
    return [{"lam": lam, name: convert(kept)} for kept in settings.kept for lam in settings.lambdas]


def config_name(params: dict) -> str:
    return ",".join(f"{k}={v:g}" for k, v in params.items())


def build_merge(cache: Cache, adapters: dict[str, tuple[Path, str]], method: str, preset: str | None,
                params: dict, seed: int) -> Path:
    from robustmerge.driver import merge_to_folder

    folders = [adapters[t][0] for t in DEMO_SEEN]
    payload = {"adapters": [adapters[t][1] for t in DEMO_SEEN], "method": method, "preset": preset,
               "params": params, "seed": seed,
               "code": _source_hash(*sorted((_HERE.parent / "methods").glob("*.py")), _HERE.parent / "driver.py",
                                    _HERE.parent / "adapters.py")}

    def make(path: Path) -> None:
        merge_to_folder(folders, path, method, preset=preset, params=params, seed=seed)

    return cache.get("merge", payload, make)[0]


def evaluate_run(swapper, folder: Path | None, run: str, tasks, split: str, data_root: Path, out: Path,
                 batch_size: int) -> dict[str, dict]:
    """Answer and score ``tasks`` with ``folder`` attached (None = the base); ``{task: result}``."""
    from .tasks import TASKS, evaluate

    results = {}
    with swapper.attached(folder, model_id=run) as bundle:
        for task in tasks:
            results[task] = evaluate(bundle, TASKS[task], split, data_root, out / task, batch_size=batch_size)
    return results


def normalized_score(results: dict[str, dict], reference: dict[str, float]) -> float:
    """Mean over tasks of score / reference score (tasks whose reference is 0 are left out)."""
    from .tasks import headline

    ratios = [headline(results[t]) / reference[t] for t in results if reference.get(t, 0) > 0]
    return sum(ratios) / len(ratios) if ratios else 0.0


def select_merges(swapper, cache: Cache, adapters, settings: DemoSettings, data_root: Path, out: Path,
                  progress: bool, timings: Timings) -> dict:
    """Validation scores of every grid point of every method; the chosen point per method."""
    from .tasks import headline

    val_dir = out / ".validation"
    individual = {}
    with timings.stage("validation: individual adapters"):
        for task in DEMO_SEEN:
            res = evaluate_run(swapper, adapters[task][0], f"{INDIVIDUAL}/{task}", [task], "val", data_root,
                               val_dir / INDIVIDUAL, settings.eval_batch_size)
            individual[task] = headline(res[task])
    points = [(run, method, preset, params) for run, method, preset in MERGES for params in grid(method, settings)]
    chosen: dict = {}
    bar = _bar(len(points), "merge + validation grid", progress, "merge")
    for run, method, preset, params in points:
        name = config_name(params)
        bar.set_postfix_str(f"{run} {name}")
        with timings.stage(f"merge {run}"):
            folder = build_merge(cache, adapters, method, preset, params, settings.data.seed)
        with timings.stage(f"validation {run}"):
            res = evaluate_run(swapper, folder, f"{run}[{name}]", DEMO_SEEN, "val", data_root, val_dir / run / name,
                               settings.eval_batch_size)
        score = normalized_score(res, individual)
        entry = chosen.setdefault(run, {"method": method, "preset": preset, "grid": []})
        entry["grid"].append({"params": params, "validation_score": round(score, 6),
                              "per_task": {t: round(headline(r), 4) for t, r in res.items()}, "merge": str(folder)})
        bar.update(1)
    bar.close()
    for entry in chosen.values():
        best = max(entry["grid"], key=lambda g: g["validation_score"])  # first maximum = earliest grid point
        entry["chosen"] = best["params"]
        entry["validation_score"] = best["validation_score"]
        entry["merge"] = best["merge"]
    return {"criterion": "mean over seen tasks of validation score / the task's own adapter's validation score",
            "grid": {"lam": list(settings.lambdas), "kept_share": list(settings.kept),
                     "kept_share_as": {m: (k[0] if k else None) for m, k in KEPT_KNOB.items()},
                     "dare_drop": "1 - kept share"},
            "individual_validation": individual, "methods": chosen}


def test_runs(swapper, adapters, selection: dict, settings: DemoSettings, data_root: Path, out: Path,
              progress: bool, timings: Timings) -> list[str]:
    """Every row of the table on the test splits; returns the run names in table order."""
    all_tasks = DEMO_SEEN + DEMO_UNSEEN
    jobs = [(ZERO_SHOT, None, all_tasks)] + [(INDIVIDUAL, adapters[t][0], (t,)) for t in DEMO_SEEN]
    jobs.append((MULTI_TASK, adapters[MULTI_TASK][0], all_tasks))
    jobs += [(run, Path(selection["methods"][run]["merge"]), all_tasks) for run, _, _ in MERGES]
    bar = _bar(sum(len(t) for _, _, t in jobs), "test evaluation", progress, "task")
    for run, folder, tasks in jobs:
        bar.set_postfix_str(run)
        with timings.stage(f"test {run}"):
            evaluate_run(swapper, folder, run, tasks, "test", data_root, out / run, settings.eval_batch_size)
        bar.update(len(tasks))
    bar.close()
    return [ZERO_SHOT, INDIVIDUAL, MULTI_TASK] + [run for run, _, _ in MERGES]


# ----------------------------------------------------------------------------- the run


@contextlib.contextmanager
def _quiet_libraries():
    """transformers / huggingface_hub progress bars and load chatter off for the demo's output."""
    import transformers
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(transformers|peft|torch)(\.|$)")
            yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        transformers.utils.logging.enable_progress_bar()
        enable_progress_bars()


@dataclass
class DemoReport:
    """What :func:`run_demo` produced."""

    out: Path
    table_markdown: str
    selection: dict
    timings: dict
    runs: list[str]


def run_demo(out: str | Path = "results/demo", seed: int = 0, quick: bool = False, fresh: bool = False,
             cache_dir: str | Path = ".cache/demo", threads: int = 1, progress: bool = True) -> DemoReport:
    """Run every stage (module docstring) and write the results under ``out``."""
    import torch

    from llava.model.adapter_swap import AdapterSwapper
    from robustmerge.table import get_layout, make_table, render_csv, render_markdown
    from robustmerge.atomic import write_text_atomic

    settings = DemoSettings.quick(seed) if quick else DemoSettings.full(seed)
    out = Path(out)
    torch.set_num_threads(threads)
    cache, timings = Cache(Path(cache_dir), fresh), Timings()
    start = time.perf_counter()
    for run in (ZERO_SHOT, INDIVIDUAL, MULTI_TASK, *(r for r, _, _ in MERGES), ".validation"):
        shutil.rmtree(out / run, ignore_errors=True)
    with _quiet_libraries():
        with timings.stage("data"):
            data_root, data_key = build_data(cache, settings)
        with timings.stage("base (tower + language model pre-training)"):
            base, base_key = build_base(cache, settings, data_root, data_key, progress)
        adapters = build_adapters(cache, settings, data_root, base, base_key, progress, timings)
        with timings.stage("load base"):
            swapper = AdapterSwapper(base, device="cpu", dtype="fp32")
        selection = select_merges(swapper, cache, adapters, settings, data_root, out, progress, timings)
        runs = test_runs(swapper, adapters, selection, settings, data_root, out, progress, timings)
        with timings.stage("table"):
            layout = get_layout("demo")
            rows = make_table(out, runs, layout=layout)
            markdown = render_markdown(rows, out, layout)
            write_text_atomic(out / "table.md", markdown)
            write_text_atomic(out / "table.csv", render_csv(rows, layout))
    total = round(time.perf_counter() - start, 2)
    timing_record = {"stages": dict(timings), "total_seconds": total,
                     "grouped": _group_timings(timings, total),
                     "cache": {"built": cache.built, "reused": cache.reused},
                     "machine": {"threads": threads, "cpus": os.cpu_count(), "python": platform.python_version(),
                                 "platform": platform.platform(), **_versions()}}
    write_text_atomic(out / "timings.json", json.dumps(timing_record, indent=1) + "\n")
    write_text_atomic(out / "chosen_hyperparameters.json", json.dumps(selection, indent=1) + "\n")
    write_text_atomic(out / "settings.json", json.dumps(
        {"settings": settings.to_dict(), "data": str(data_root), "base": str(base),
         "adapters": {k: str(v[0]) for k, v in adapters.items()}}, indent=1, default=str) + "\n")
    return DemoReport(out, markdown, selection, timing_record, runs)


def _group_timings(timings: Timings, total: float) -> dict[str, float]:
    groups = {"data": 0.0, "base": 0.0, "adapters": 0.0, "merges": 0.0, "validation": 0.0, "test": 0.0, "other": 0.0}
    for name, seconds in timings.items():
        key = next((g for g in ("data", "base", "adapter", "merge", "validation", "test") if name.startswith(g)),
                   "other")
        groups["adapters" if key == "adapter" else "merges" if key == "merge" else key] += seconds
    groups["other"] += max(0.0, total - sum(groups.values()))
    return {k: round(v, 1) for k, v in groups.items()}


def summary_lines(report: DemoReport) -> list[str]:
    """The chosen hyper-parameters and the timing breakdown, as printed after the table."""
    lines = ["Chosen on the validation splits (same λ x kept-share grid for every method):"]
    for run, entry in report.selection["methods"].items():
        params = ", ".join(f"{k}={v:g}" for k, v in entry["chosen"].items())
        lines.append(f"  {run}: {params} (normalised validation score {entry['validation_score']:.3f})")
    grouped = report.timings["grouped"]
    lines.append("Time (s): " + ", ".join(f"{k} {v:.0f}" for k, v in grouped.items())
                 + f"; total {report.timings['total_seconds']:.0f}")
    cache = report.timings["cache"]
    lines.append(f"Cache: {len(cache['reused'])} reused, {len(cache['built'])} built. Results: {report.out}")
    return lines
