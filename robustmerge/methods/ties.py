"""TIES-merging (Yadav et al., NeurIPS 2023) on LoRA factors, applied to the A stack and the
B stack separately. For X ∈ {A, B} with task matrices X_n:

1. trim:  X̂_n = X_n ⊙ [|X_n| >= t_n], t_n keeps the top ``density`` share of |X_n|
          trim='matrix': t_n over this matrix;
          trim='model':  t_n over all matrices of that factor kind (every A of task n, or
                         every B of task n) — the original's whole-task-vector trimming
                         applied per factor kind (exact, found by a streaming two-pass select).
2. elect: γ = sign(Σ_n X̂_n) per entry (summed as P + M, the float32 task-order sums of the
          positive and the negative parts); entries where the sum is 0 take the sign of the
          matrix total (the majority-mass sign).
3. disjoint mean: X* = λ · Σ_n X̂_n [sign(X̂_n) = γ] / max(1, #{n : sign(X̂_n) = γ, X̂_n ≠ 0})

λ placement as lambda_on. Shapes: A [N, r, d_in], B [N, d_out, r] -> float32 [r, d_in], [d_out, r].
"""
from __future__ import annotations

import torch

from .common import StreamingKth, apply_mask, is_16bit_float, kth_index, ordered_sum, prune_by_magnitude
from .registry import LAMBDA, LAMBDA_ON, ModuleContext, Param, register, scale_pair


def ties_combine(x: torch.Tensor) -> torch.Tensor:
    """Elect signs and take the disjoint mean of trimmed x: [N, ...] -> [...] (float32).

    With P = Σ_n max(X̂_n, 0) and M = Σ_n min(X̂_n, 0) (float32, task order), the elected
    sign is that of P + M and the disjoint mean is P / #positive or M / #negative.
    """
    count = torch.int16 if x.shape[0] < (1 << 15) else torch.int32
    if is_16bit_float(x):  # split the signs on the bit patterns
        bits = x.view(torch.int16)
        neg_bits = bits & (bits >> 15)  # the entries with a set sign bit, 0 elsewhere
        pos, neg = (bits - neg_bits).view(x.dtype), neg_bits.view(x.dtype)
        n_pos = (bits > 0).sum(0, dtype=count)
        n_neg = (-bits > 0).sum(0, dtype=count)  # bits in [-32767, -1]: -0.0 (-32768) is not negative
    else:
        pos, neg = x.clamp(min=0), x.clamp(max=0)
        n_pos, n_neg = (x > 0).sum(0, dtype=count), (x < 0).sum(0, dtype=count)
    P, M = ordered_sum(pos), ordered_sum(neg)
    total = P + M
    majority = bool(total.sum() >= 0)  # the sign for entries whose sum is 0
    up = (total > 0) | ((total == 0) & majority)
    return torch.where(up, P / n_pos.clamp(min=1), M / n_neg.clamp(min=1))


def ties_trim(x: torch.Tensor, density: float, thresholds: torch.Tensor | None) -> torch.Tensor:
    """Trim x: [N, ...] per task: per matrix, or with given per-task thresholds [N]."""
    if thresholds is None:
        return prune_by_magnitude(x, density)
    t = thresholds.to(x.device).view(-1, *([1] * (x.dim() - 1)))
    return apply_mask(x, x.abs().float() >= t)


def ties_prepare(adapters, p: dict) -> dict:
    """For trim='model': exact per-task thresholds over every A and every B of the model."""
    if p["trim"] != "model":
        return {}
    stats = {}
    for factor in ("A", "B"):
        selectors = [StreamingKth() for _ in range(adapters.n)]
        numel = 0
        for pass_no in (1, 2):
            for module in adapters.modules:
                x = adapters.factors(module)[0 if factor == "A" else 1]  # [N, ...]
                if pass_no == 1:
                    numel += x[0].numel()
                for n, sel in enumerate(selectors):
                    (sel.count if pass_no == 1 else sel.collect)(x[n])
            if pass_no == 1:
                k = kth_index(numel, p["density"])
                for sel in selectors:
                    sel.locate(max(k, 1))
        k = kth_index(numel, p["density"])
        stats[factor] = torch.tensor([sel.value() if k > 0 else 0.0 for sel in selectors])
    return stats


@register(
    "ties",
    summary="trim to the top-density magnitudes, elect signs, disjoint mean, scaled by λ",
    paper="Yadav et al., 'TIES-Merging: Resolving Interference When Merging Models', NeurIPS 2023; "
    "https://arxiv.org/abs/2306.01708",
    params=[
        Param("density", 0.2, "share of entries kept per task when trimming (TIES's k)", float, 0.0, 1.0, open_low=True),
        Param("trim", "matrix", "trimming scope: 'matrix' (per task matrix) or 'model' (per task over all A / all B)",
              str, choices=("matrix", "model")),
        LAMBDA,
        LAMBDA_ON,
    ],
    prepare=ties_prepare,
)
def ties(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext) -> tuple[torch.Tensor, torch.Tensor]:
    a = ties_combine(ties_trim(A, p["density"], ctx.stats.get("A")))  # [r, d_in]
    b = ties_combine(ties_trim(B, p["density"], ctx.stats.get("B")))  # [d_out, r]
    return scale_pair(a, b, p["lam"], p["lambda_on"])
