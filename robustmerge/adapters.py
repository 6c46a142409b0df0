"""Read LoRA adapter sets: LLaVA LoRA task folders and plain PEFT adapter folders.

The folder format (file names, keys, the lazy :class:`~robustmerge.taskfolder.TensorFile`
reader) is :mod:`robustmerge.taskfolder`'s; LLaVA task folders carry the fine-tuned
projector too: the "extra" weights, merged separately.

Reading is lazy: opening an :class:`AdapterSet` reads configs and key lists only; the
tensors of one module are read when the merge driver asks for them (safetensors through
``os.pread`` at header offsets, ``.bin`` through ``torch.load(mmap=True, weights_only=True)``), so memory
holds one module of every task at a time. :meth:`AdapterSet.materialize` keeps every
tensor in memory instead, for sweeps that merge the same set many times.

Scaling: task n's update is ``ΔW_n = s_n · B_n · A_n`` with ``s_n = lora_alpha / r``
(``lora_alpha / sqrt(r)`` for rsLoRA; ``rank_pattern`` / ``alpha_pattern`` honoured).
When every task has the same scaling and rank for every module, factors are merged as
stored and the output reuses the first task's adapter config (the released
RobustMerge behaviour). Otherwise each task's scaling is folded into its B and ranks are
zero-padded to the largest rank (both exact for sums of factors), and the output config
gets ``lora_alpha = r`` so the loader's scaling is 1; :attr:`AdapterSet.harmonisation`
says what was done.
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import MergeInputError
from .taskfolder import PROJECTOR_FILE, TensorFile, load_bin, open_folder  # noqa: F401 (TensorFile, load_bin re-exported)

log = logging.getLogger(__name__)

def scaling_of(r: int, alpha: float, rslora: bool) -> float:
    """LoRA scaling s = alpha / r (alpha / sqrt(r) for rsLoRA)."""
    return alpha / math.sqrt(r) if rslora else alpha / r


@dataclass
class TaskAdapter:
    """One task's adapter folder: config, weight file and (optional) extra weights."""

    path: Path
    config: dict
    weight_file: Path
    extra_file: Path | None
    weights: TensorFile = field(repr=False)
    # module name -> (A key, B key) in file order
    modules: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def extras(self) -> TensorFile:
        """The extra weights file (the projector), opened once."""
        if self._extras is None:
            self._extras = TensorFile(self.extra_file)
        return self._extras

    _extras: TensorFile | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.path.name

    def module_rank_alpha(self, module: str, r: int) -> tuple[int, float]:
        """(r, alpha) for a module, honouring PEFT's rank_pattern/alpha_pattern."""
        alpha = float(self.config.get("lora_alpha", 8))
        for pat, val in (self.config.get("alpha_pattern") or {}).items():
            if _pattern_matches(pat, module):
                alpha = float(val)
        return r, alpha

    def module_scaling(self, module: str, r: int) -> float:
        r, alpha = self.module_rank_alpha(module, r)
        return scaling_of(r, alpha, bool(self.config.get("use_rslora", False)))


def _pattern_matches(pattern: str, module: str) -> bool:
    # PEFT matches rank/alpha patterns as a regex anchored at a dotted boundary at the end.
    return re.search(rf"(^|\.){pattern}$", module) is not None


def open_task(path: str | os.PathLike) -> TaskAdapter:
    """Open one adapter folder and index its LoRA keys by module (no tensors read yet)."""
    folder = open_folder(path)
    task = TaskAdapter(folder.path, folder.config, folder.weight_file, folder.projector_file, folder.weights)
    task.modules = folder.lora_modules()
    return task


@dataclass
class ModuleSpec:
    """Shapes of one target module across tasks."""

    name: str
    ranks: list[int]  # per task
    d_in: int
    d_out: int
    dtype: torch.dtype  # common stored dtype (float32 when tasks disagree)


class AdapterSet:
    """N task adapters of the same base model, validated and paired module by module.

    Attributes:
        tasks: the task adapters, in merge order.
        modules: module names in the first task's key order (the output key order).
        specs: module name -> :class:`ModuleSpec`.
        fold_scaling: True when ranks or scalings differ, so scalings are folded into B.
        rank: the output rank (the largest task rank when folding, else the common rank).
        harmonisation: sentences saying what was done about ranks and scalings.
    """

    def __init__(self, tasks: list[TaskAdapter]):
        if len(tasks) < 2:
            raise MergeInputError(
                f"{len(tasks)} adapter given ({', '.join(str(t.path) for t in tasks) or 'none'}); "
                "a merge needs at least two task adapters"
            )
        seen: dict[Path, Path] = {}
        for t in tasks:
            real = t.path.resolve()
            if real in seen:
                raise MergeInputError(f"{t.path}: given twice (also as {seen[real]}); pass each adapter once")
            seen[real] = t.path
        self.tasks = tasks
        self.modules = list(tasks[0].modules)
        self.specs = {m: self._spec(m) for m in self.modules}
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._decide_harmonisation()

    @property
    def n(self) -> int:
        return len(self.tasks)

    def _spec(self, module: str) -> ModuleSpec:
        first = self.tasks[0]
        for t in self.tasks[1:]:
            if set(t.modules) != set(first.modules):
                only_t = sorted(set(t.modules) - set(first.modules))
                only_f = sorted(set(first.modules) - set(t.modules))
                raise MergeInputError(
                    f"{t.weight_file}: covers different modules than {first.weight_file} "
                    f"(only here: {only_t[:3]}{'...' if len(only_t) > 3 else ''}; only there: "
                    f"{only_f[:3]}{'...' if len(only_f) > 3 else ''}); merge adapters trained on the same "
                    "target modules"
                )
        ranks, d_ins, d_outs, dtypes = [], set(), set(), set()
        for t in self.tasks:
            a_key, b_key = t.modules[module]
            (ra, d_in), a_dt = _shape2(t, a_key)
            (d_out, rb), b_dt = _shape2(t, b_key)
            if ra != rb:
                raise MergeInputError(
                    f"{t.weight_file}: {module}: lora_A has rank {ra} but lora_B has rank {rb}; the adapter is corrupt"
                )
            ranks.append(ra)
            d_ins.add(d_in)
            d_outs.add(d_out)
            dtypes.update((a_dt, b_dt))
        if len(d_ins) > 1 or len(d_outs) > 1:
            shapes = ", ".join(
                f"{t.name}: A {list(t.weights.meta()[t.modules[module][0]][0])} "
                f"B {list(t.weights.meta()[t.modules[module][1]][0])}" for t in self.tasks
            )
            raise MergeInputError(
                f"{module}: incompatible shapes across tasks ({shapes}); the adapters were trained on "
                "different base models and cannot be merged"
            )
        dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
        return ModuleSpec(module, ranks, d_ins.pop(), d_outs.pop(), dtype)

    def _decide_harmonisation(self) -> None:
        per_task = [
            [(s.ranks[i], t.module_scaling(m, s.ranks[i])) for m, s in self.specs.items()]
            for i, t in enumerate(self.tasks)
        ]
        uniform = all(p == per_task[0] for p in per_task) and len({rs[0] for rs in per_task[0]}) == 1
        self.fold_scaling = not uniform
        self.rank = max(max(s.ranks) for s in self.specs.values())
        if uniform:
            r, s = per_task[0][0]
            self.harmonisation = [f"all tasks share rank {r} and scaling {s:g}: factors merged as stored"]
            return
        summary = "; ".join(
            f"{t.name}: r={sorted({rs[0] for rs in p})}, scaling={sorted({round(rs[1], 6) for rs in p})}"
            for t, p in zip(self.tasks, per_task)
        )
        self.harmonisation = [
            f"ranks or scalings differ ({summary})",
            "each task's scaling was folded into its lora_B (B_n <- s_n * B_n, float32)",
            f"ranks were zero-padded to {self.rank} (exact for sums of factors)",
            f"the output config has r = lora_alpha = {self.rank} and no rsLoRA, so the loader's scaling is 1",
        ]
        log.warning("adapter set: %s", self.harmonisation[0])

    def factors(self, module: str, buffers: "BufferPool | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked factors of one module: A [N, r, d_in], B [N, d_out, r].

        Stored dtype when all tasks share rank and scaling; otherwise float32 with scalings
        folded into B and ranks zero-padded to :attr:`rank`. With ``buffers``, the stacked
        tensors are read into buffers the pool hands out (memory already touched, so the
        read takes no page faults); the caller gives them back when it is done with them.
        """
        if self._cache is not None:
            return self._cache[module]
        spec = self.specs[module]
        if not self.fold_scaling:  # read every task straight into one stacked buffer per factor
            empty = buffers.take if buffers is not None else torch.empty
            A = empty((self.n, spec.ranks[0], spec.d_in), dtype=spec.dtype)  # [N, r, d_in]
            B = empty((self.n, spec.d_out, spec.ranks[0]), dtype=spec.dtype)  # [N, d_out, r]
            for i, t in enumerate(self.tasks):
                for key, buf in zip(t.modules[module], (A[i], B[i])):
                    if t.weights.meta()[key][1] == spec.dtype:
                        t.weights.get(key, out=buf)
                    else:  # tasks stored in different dtypes: promoted to the common one
                        buf.copy_(t.weights.get(key))
                    self._check_finite(t, key, buf)
            return A, B
        As, Bs = [], []
        for t, r in zip(self.tasks, spec.ranks):
            a_key, b_key = t.modules[module]
            a, b = t.weights.get(a_key), t.weights.get(b_key)
            for key, x in ((a_key, a), (b_key, b)):
                self._check_finite(t, key, x)
            a, b = a.float(), b.float() * t.module_scaling(module, r)
            As.append(torch.nn.functional.pad(a, (0, 0, 0, self.rank - r)))  # [rank, d_in]
            Bs.append(torch.nn.functional.pad(b, (0, self.rank - r)))  # [d_out, rank]
        return torch.stack(As), torch.stack(Bs)

    @staticmethod
    def _check_finite(t: TaskAdapter, key: str, x: torch.Tensor) -> None:
        if not all_finite(x):
            raise MergeInputError(
                f"{t.weight_file}: tensor {key!r} holds NaN or Inf values; the adapter's "
                "training diverged or the file is corrupt: use another checkpoint"
            )

    @property
    def pooled(self) -> bool:
        """Whether :meth:`factors` reads into pooled buffers (not cached, not harmonised)."""
        return self._cache is None and not self.fold_scaling

    def materialize(self) -> "AdapterSet":
        """Read every module once and keep it in memory (for sweeps); returns self."""
        if self._cache is None:
            self._cache = {m: self.factors(m) for m in self.modules}
        return self

    def subset(self, indices: list[int]) -> "AdapterSet":
        """The set of some of the tasks (in the given order). Reuses this set's in-memory
        tensors when it is materialised and the subset harmonises the same way."""
        sub = AdapterSet([self.tasks[i] for i in indices])
        if self._cache is not None and (sub.fold_scaling, sub.rank) == (self.fold_scaling, self.rank):
            idx = torch.tensor(indices)
            sub._cache = {m: (A[idx], B[idx]) for m, (A, B) in self._cache.items()}
        return sub

    def output_config(self) -> dict:
        """The adapter config (a dict) of the merged adapter."""
        cfg = dict(self.tasks[0].config)
        if self.fold_scaling:
            cfg.update(r=self.rank, lora_alpha=self.rank, use_rslora=False, rank_pattern={}, alpha_pattern={})
        return cfg

    def key_order(self) -> list[tuple[str, str, str]]:
        """(module, factor 'A'|'B', key) in the first task's file order."""
        owner = {}
        for m, (a, b) in self.tasks[0].modules.items():
            owner[a], owner[b] = (m, "A"), (m, "B")
        return [(*owner[k], k) for k in self.tasks[0].weights.keys()]

    # extra (non-LoRA) weights: the LLaVA projector
    def extra_keys(self) -> list[str]:
        """Keys of the extra weights common to all tasks ([] when no task has them)."""
        present = [t.extra_file is not None for t in self.tasks]
        if not any(present):
            return []
        if not all(present):
            missing = [str(t.path) for t, p in zip(self.tasks, present) if not p]
            raise MergeInputError(
                f"{missing[0]}: no {PROJECTOR_FILE} although other tasks have one; add it, or merge "
                "with --extras drop"
            )
        metas = [t.extras.meta() for t in self.tasks]
        for t, m in zip(self.tasks[1:], metas[1:]):
            if {k: v[0] for k, v in m.items()} != {k: v[0] for k, v in metas[0].items()}:
                raise MergeInputError(
                    f"{t.extra_file}: keys or shapes differ from {self.tasks[0].extra_file}; "
                    "the projectors come from different model configurations"
                )
        return list(metas[0])

    def extra_tensor(self, task: int, key: str) -> torch.Tensor:
        """One extra weight of one task (stored dtype), NaN/Inf-checked."""
        t = self.tasks[task]
        x = t.extras.get(key, copy=False)  # the driver closes each task's extras file after use
        if not all_finite(x):
            raise MergeInputError(f"{t.extra_file}: tensor {key!r} holds NaN or Inf values; use another checkpoint")
        return x


class BufferPool:
    """Reusable CPU tensors by (shape, dtype), at most one free buffer per key, for one thread.

    Reading a module into a fresh tensor costs a page fault per 4 KiB on first touch (as
    much time as the copy itself); reading into a buffer used before costs only the copy.
    """

    def __init__(self) -> None:
        self.free: dict[tuple, torch.Tensor] = {}

    def take(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        buf = self.free.pop((tuple(shape), dtype), None)
        return torch.empty(shape, dtype=dtype) if buf is None else buf

    def give(self, buf: torch.Tensor, *results: torch.Tensor) -> None:
        """Return ``buf`` for reuse, unless one of ``results`` lives in its memory."""
        ptr = buf.untyped_storage().data_ptr()
        if buf.device.type == "cpu" and all(r.untyped_storage().data_ptr() != ptr for r in results):
            self.free[(tuple(buf.shape), buf.dtype)] = buf


def all_finite(x: torch.Tensor) -> bool:
    """True when x holds no NaN or Inf: its minimum and maximum, found in one pass in the
    stored dtype, are finite (a NaN propagates into both)."""
    if x.numel() == 0:
        return True
    lo, hi = torch.aminmax(x)
    return bool(torch.isfinite(lo) and torch.isfinite(hi))


def _shape2(t: TaskAdapter, key: str) -> tuple[tuple[int, int], torch.dtype]:
    shape, dtype = t.weights.meta()[key]
    if len(shape) != 2:
        raise MergeInputError(f"{t.weight_file}: {key!r} has shape {list(shape)}; LoRA factors are matrices")
    if not dtype.is_floating_point:
        raise MergeInputError(f"{t.weight_file}: {key!r} has dtype {dtype}; LoRA factors are floating point")
    return shape, dtype


def load_adapter_set(paths: list[str | os.PathLike]) -> AdapterSet:
    """Open and validate an adapter set (configs and key indexes only; no tensor data)."""
    return AdapterSet([open_task(p) for p in paths])
