"""Direction robustness (paper Fig. 7): how much of each task's singular directions the merge keeps.

Definition (the paper gives it in words; this is our formula). For task n and one module,
let ``ΔW_n = Σ_i σ_i u_i v_iᵀ`` (σ_1 >= σ_2 >= ... > 0, the non-zero singular triplets) and
let ``ΔW*`` be the merged update of the same module (both with the LoRA scaling applied).
Feed task n's input direction v_i through the merged update:

    direction similarity   c_i = cos(ΔW* v_i, u_i) = u_iᵀ ΔW* v_i / ‖ΔW* v_i‖     ∈ [-1, 1]
    magnitude ratio        m_i = ‖ΔW* v_i‖ / σ_i                                   >= 0

(``ΔW_n v_i = σ_i u_i``, so c_i = 1 and m_i = 1 when the merge acts on v_i exactly as task n
did; c_i = 0 when ``ΔW* v_i = 0``.) Reported per task and module:

    top:  c_1, m_1                        (the largest singular direction)
    rest: mean_{i=2..k} c_i, mean m_i     (unweighted mean over the other non-zero directions)

A direction counts as non-zero when σ_i > 1e-10·σ_1. Aggregates over modules (all modules,
a layer group, a projection type) are unweighted means of the per-module values; the
"mean over tasks" is the unweighted mean of the per-task aggregates.

Cost per module and task: ``ΔW* V = B* (A* V)``, O((d_in + d_out)·r²) — no dense matrix.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .spectra import LowRankSVD, lowrank_svd

REL_TOL = 1e-10
KEYS = ("top_cos", "top_ratio", "rest_cos", "rest_ratio")


@dataclass(frozen=True)
class Directions:
    """Per-direction metrics of one module for every task.

    Attributes:
        cos: [N, k] c_i.   ratio: [N, k] m_i.   valid: [N, k] bool, σ_i > REL_TOL·σ_1.
    """

    cos: torch.Tensor
    ratio: torch.Tensor
    valid: torch.Tensor

    def summary(self) -> list[dict[str, float]]:
        """Per task: top_cos, top_ratio, rest_cos, rest_ratio (NaN where undefined)."""
        out = []
        for n in range(self.cos.shape[0]):
            v = self.valid[n]
            rest = v.clone()
            rest[0] = False
            out.append({
                "top_cos": float(self.cos[n, 0]) if v[0] else math.nan,
                "top_ratio": float(self.ratio[n, 0]) if v[0] else math.nan,
                "rest_cos": float(self.cos[n][rest].mean()) if rest.any() else math.nan,
                "rest_ratio": float(self.ratio[n][rest].mean()) if rest.any() else math.nan,
            })
        return out


def direction_metrics(tasks: LowRankSVD, A_star: torch.Tensor, B_star: torch.Tensor) -> Directions:
    """c_i and m_i of every task's singular directions under ``ΔW* = B* @ A*``.

    Args:
        tasks: the tasks' SVDs, U [N, d_out, k], S [N, k], V [N, d_in, k].
        A_star: [r*, d_in], B_star: [d_out, r*] (scaling folded into B*).
    """
    proj = B_star.double() @ (A_star.double() @ tasks.V)  # [N, d_out, k] = ΔW* v_i
    norm = proj.norm(dim=-2)  # [N, k]
    dot = (tasks.U * proj).sum(-2)  # [N, k] = u_iᵀ ΔW* v_i
    cos = torch.where(norm > 0, dot / torch.where(norm > 0, norm, 1.0), torch.zeros_like(dot))
    S = tasks.S
    valid = S > REL_TOL * S[..., :1]
    ratio = torch.where(valid, norm / torch.where(valid, S, 1.0), torch.zeros_like(norm))
    return Directions(cos, ratio, valid)


def module_directions(A: torch.Tensor, B: torch.Tensor, A_star: torch.Tensor, B_star: torch.Tensor) -> Directions:
    """Convenience: tasks' factors A [N, r, d_in], B [N, d_out, r] and merged A*, B*
    (scalings folded into the B's) -> :class:`Directions`."""
    return direction_metrics(lowrank_svd(B, A), A_star, B_star)


def nanmean(values) -> float:
    """Mean of the finite values (NaN when there are none)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def aggregate(per_module: dict[str, list[dict[str, float]]], modules: list[str]) -> list[dict[str, float]]:
    """Per task, the mean over ``modules`` of each metric (per_module: module -> per-task dicts)."""
    n_tasks = len(next(iter(per_module.values())))
    return [{k: nanmean(per_module[m][n][k] for m in modules) for k in KEYS} for n in range(n_tasks)]
