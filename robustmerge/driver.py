"""The merge driver: one module at a time, on any device, into an atomic output folder.

Python API::

    from robustmerge import load_adapter_set, merge, merge_to_folder
    adapters = load_adapter_set(["task_a", "task_b"])          # configs and key lists only
    result = merge(adapters, "robustmerge", preset="official")  # in memory: MergeResult
    record = merge_to_folder(adapters, "out", "ties", params={"density": 0.3})  # streaming

For sweeps, ``adapters.materialize()`` reads every tensor once; later merges reuse them.
"""
from __future__ import annotations

import logging
import platform
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from tqdm.auto import tqdm

from . import __version__
from .adapters import AdapterSet, BufferPool, load_adapter_set, scaling_of
from .errors import MergeInputError
from .hashing import InputHasher
from .io import check_output_folder
from .methods import ModuleContext, get_method
from .taskfolder import MERGE_RECORD, MODEL_CONFIG, FolderWriter, projector_key, write_folder

log = logging.getLogger(__name__)

EXTRAS_RULES = ("mean", "first", "drop")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MergeInputError(f"--device {device}: CUDA is not available here; use --device cpu or auto")
    if device != "cpu" and not device.startswith("cuda"):
        raise MergeInputError(f"--device {device}: expected cpu, cuda[:N] or auto")
    return torch.device(device)


def merge_extras(adapters: AdapterSet, rule: str) -> dict[str, torch.Tensor]:
    """Merge the extra (non-LoRA) weights of all tasks, in their stored dtype, one task's
    file at a time (its memory is released before the next is read).

    mean: the released running mean per key, m = (1/N)·P_0, then m = m + (1/N)·P_n for
          n >= 1, every step in the stored dtype (not an exact mean rounded once).
    first: the first task's tensors.
    drop: nothing.
    """
    if rule == "drop":
        return {}
    keys, n, merged = adapters.extra_keys(), adapters.n, {}
    for i, task in enumerate(adapters.tasks[: 1 if rule == "first" else None]):
        for key in keys:
            x = adapters.extra_tensor(i, key)
            merged[key] = x if rule == "first" else (1.0 / n) * x if i == 0 else merged[key] + (1.0 / n) * x
        task.extras.close()
    return {projector_key(k): v for k, v in merged.items()}


@dataclass
class Plan:
    """A validated merge: the adapters, the rule, its parameters and where it runs."""

    adapters: AdapterSet
    method: str
    preset: str | None
    params: dict
    device: torch.device
    seed: int
    extras: str

    @classmethod
    def make(cls, adapters, method="robustmerge", preset=None, params=None, device="cpu", seed=0, extras="mean"):
        if not isinstance(adapters, AdapterSet):
            adapters = load_adapter_set(list(adapters))
        m = get_method(method)
        if extras not in EXTRAS_RULES:
            raise MergeInputError(f"extras rule {extras!r} is not one of {list(EXTRAS_RULES)}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise MergeInputError(f"seed {seed!r} must be a non-negative integer")
        resolved = m.resolve(preset, params)
        return cls(adapters, method, preset if preset is not None else m.default_preset, resolved,
                   resolve_device(device), seed, extras)

    def modules(self, progress: bool = False, workers: int = 2) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """Yield (module, A* [r, d_in], B* [d_out, r]) float32 on CPU, in module order.

        Modules are read and merged by ``workers`` threads, at most ``2·workers`` modules
        ahead of the consumer (torch releases the GIL), so memory stays bounded; each module's
        result does not depend on the threading.
        """
        m = get_method(self.method)
        stats = m.prepare(self.adapters, self.params) if m.prepare else {}

        local = threading.local()  # one buffer pool per module thread
        wide = self.update_level()

        def one(module: str) -> tuple[str, torch.Tensor, torch.Tensor]:
            pool = local.__dict__.setdefault("pool", BufferPool())
            A, B = self.adapters.factors(module, pool)
            a, b = m.rule(A.to(self.device), B.to(self.device), self.params, ModuleContext(module, self.seed, stats))
            dtype = torch.float64 if wide else torch.float32  # update-level rules: float64 factors
            a, b = a.to(dtype).cpu(), b.to(dtype).cpu()
            if self.adapters.pooled:  # (cached factors are handed out again: never reused)
                pool.give(A, a, b)
                pool.give(B, a, b)
            return module, a, b

        names = iter(self.adapters.modules)
        bar = tqdm(total=len(self.adapters.modules), desc=f"merge ({self.method})", unit="module", disable=not progress)
        threads = torch.get_num_threads()
        torch.set_num_threads(max(1, threads // max(1, workers)))  # module threads share the cores
        try:
            with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                pending = deque(pool.submit(one, name) for name in islice(names, 2 * max(1, workers)))
                while pending:
                    result = pending.popleft().result()
                    nxt = next(names, None)
                    if nxt is not None:
                        pending.append(pool.submit(one, nxt))
                    bar.update(1)
                    yield result
        finally:
            bar.close()
            torch.set_num_threads(threads)

    def out_rank(self) -> int:
        """The written adapter's rank: the inputs' (r), or an update-level rule's (e.g. N·r)."""
        rank = get_method(self.method).out_rank(self.adapters.n, self.adapters.rank, self.params)
        return self.adapters.rank if rank is None else rank

    def output_config(self) -> dict:
        """The adapter config of the output: the inputs' (:meth:`AdapterSet.output_config`); for
        an update-level rule r = its rank and lora_alpha = s·r, so the loader's scaling s (the
        inputs' common scaling, or 1 when folded) is unchanged; no rsLoRA, no patterns."""
        cfg = self.adapters.output_config()
        if self.update_level():
            rank = self.out_rank()
            s = scaling_of(cfg["r"], cfg["lora_alpha"], bool(cfg.get("use_rslora")))
            alpha = s * rank
            cfg.update(r=rank, lora_alpha=int(alpha) if float(alpha).is_integer() else alpha, use_rslora=False,
                       rank_pattern={}, alpha_pattern={})
        return cfg

    def update_level(self) -> bool:
        """True when the rule writes a merged update of its own rank (a merge space)."""
        return get_method(self.method).out_rank(self.adapters.n, self.adapters.rank, self.params) is not None

    def merged_extras(self) -> dict[str, torch.Tensor]:
        return merge_extras(self.adapters, self.extras)

    def describe(self) -> dict:
        return {
            "method": self.method, "preset": self.preset, "params": self.params, "seed": self.seed,
            "extras_rule": self.extras, "device": str(self.device),
            "task_order": [t.name for t in self.adapters.tasks],
            "rank": self.adapters.rank, "harmonisation": self.adapters.harmonisation,
            **({"out_rank": self.out_rank()} if self.update_level() else {}),
        }


@dataclass
class MergeResult:
    """A merged adapter in memory: LoRA tensors (input key names, float32), extras, config."""

    tensors: dict[str, torch.Tensor]
    extras: dict[str, torch.Tensor]
    config: dict
    plan: Plan

    def delta(self, module: str) -> torch.Tensor:
        """ΔW* = scaling · B* A* of one module, with the output config's scaling."""
        a_key, b_key = self.plan.adapters.tasks[0].modules[module]
        s = scaling_of(self.config["r"], self.config["lora_alpha"], bool(self.config.get("use_rslora")))
        return s * self.tensors[b_key] @ self.tensors[a_key]


def merge(adapters, method: str = "robustmerge", preset: str | None = None, params: dict | None = None,
          device: str = "cpu", seed: int = 0, extras: str = "mean", progress: bool = False) -> MergeResult:
    """Merge in memory and return a :class:`MergeResult` (keys in the first task's order)."""
    plan = Plan.make(adapters, method, preset, params, device, seed, extras)
    merged = {}
    for module, a, b in plan.modules(progress):
        a_key, b_key = plan.adapters.tasks[0].modules[module]
        merged[a_key], merged[b_key] = a, b
    order = [key for _, _, key in plan.adapters.key_order()]
    return MergeResult({k: merged[k] for k in order}, plan.merged_extras(), plan.output_config(), plan)


def _versions() -> dict:
    import safetensors

    return {"robustmerge": __version__, "torch": torch.__version__, "safetensors": safetensors.__version__,
            "python": platform.python_version()}


def _input_record(adapters: AdapterSet, hasher: InputHasher | None) -> list[dict]:
    out = []
    for t, spec_r in zip(adapters.tasks, zip(*[s.ranks for s in adapters.specs.values()])):
        dtypes = sorted({str(t.weights.meta()[k][1]).replace("torch.", "") for k in t.weights.keys()})
        out.append({
            "name": t.name, "path": str(t.path), "weight_file": t.weight_file.name,
            "sha256": hasher.digest(t.weight_file) if hasher else None,
            "extra_file": t.extra_file.name if t.extra_file else None,
            "extra_sha256": hasher.digest(t.extra_file) if hasher and t.extra_file else None,
            "r": sorted(set(spec_r)), "lora_alpha": t.config.get("lora_alpha"),
            "use_rslora": bool(t.config.get("use_rslora", False)), "dtype": dtypes,
        })
    return out


def merge_to_folder(adapters, out: str | Path, method: str = "robustmerge", preset: str | None = None,
                    params: dict | None = None, device: str = "cpu", seed: int = 0, extras: str = "mean",
                    overwrite: bool = False, write_bin: bool = False, hash_inputs: bool = True,
                    progress: bool = False) -> dict:
    """Merge module by module straight into ``out`` (atomically) and return the merge record.

    Writes (:mod:`robustmerge.taskfolder` names the files) the adapter config, the LoRA as
    safetensors (PEFT-loadable; keys as the inputs'), the projector (when the tasks have
    extras), the first task's model config, the merge record and, with ``write_bin``, the
    legacy ``.bin`` copy of the LoRA. With ``hash_inputs=False`` the record's input sha256 fields are
    null (the inputs are not read a second time); otherwise they are hashed on a background
    thread while the merge runs.
    """
    return _merge_to_folder(adapters, out, method, preset, params, device, seed, extras, overwrite, write_bin,
                            hash_inputs, progress, hasher=None)


def _merge_to_folder(adapters, out, method, preset, params, device, seed, extras, overwrite, write_bin,
                     hash_inputs, progress, hasher: InputHasher | None) -> dict:
    """:func:`merge_to_folder` (same arguments, in order), optionally with an
    :class:`InputHasher` already working on the input files: the CLI's internal path (it
    starts hashing before importing torch)."""
    t0 = time.perf_counter()
    plan = Plan.make(adapters, method, preset, params, device, seed, extras)
    ad = plan.adapters
    out = Path(out)
    check_output_folder(out, [t.path for t in ad.tasks], overwrite)
    if not hash_inputs:
        hasher = None
    elif hasher is None:  # hashing overlaps with the merge
        hasher = InputHasher([t.weight_file for t in ad.tasks] + [t.extra_file for t in ad.tasks if t.extra_file])
    with write_folder(out, replace=overwrite) as folder:  # claimed; replace decided again at the swap
        _write_lora(plan, folder, progress)
        extra = plan.merged_extras()
        if extra:
            folder.projector(extra)
        folder.adapter_config(plan.output_config())
        if (ad.tasks[0].path / MODEL_CONFIG).is_file():
            folder.model_config(ad.tasks[0].path / MODEL_CONFIG)
        if write_bin:
            folder.lora_bin_copy()
        record = {**plan.describe(), "inputs": _input_record(ad, hasher), "versions": _versions(),
                  "outputs": folder.names() + [MERGE_RECORD],
                  "wall_time_s": round(time.perf_counter() - t0, 3),
                  "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        folder.merge_record(record)
    log.info("wrote %s (%s, %.2f s)", out, method, record["wall_time_s"])
    return record


def _write_lora(plan: Plan, folder: FolderWriter, progress: bool) -> None:
    ad = plan.adapters
    layout, rank = [], plan.out_rank()
    dtype = torch.float64 if plan.update_level() else torch.float32
    for module in ad.modules:  # data in module order; the header lists every key
        spec = ad.specs[module]
        a_key, b_key = ad.tasks[0].modules[module]
        layout += [(a_key, (rank, spec.d_in), dtype), (b_key, (spec.d_out, rank), dtype)]
    writer = folder.lora_stream(layout, {"merge_method": plan.method}, header_order=[key for _, _, key in ad.key_order()])
    for module, a, b in plan.modules(progress):
        a_key, b_key = ad.tasks[0].modules[module]
        writer.write(a_key, a)
        writer.write(b_key, b)
    writer.close()
