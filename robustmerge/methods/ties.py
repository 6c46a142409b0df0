"""TIES-merging (Yadav et al., NeurIPS 2023; its three steps trim, elect, disjoint merge) on
LoRA factors, applied to the A stack and the B stack separately. For X ∈ {A, B}
(A [N, r, d_in], B [N, d_out, r]) with task matrices X_n:

1. trim:  X̂_n = X_n ⊙ [|X_n| >= t_n], t_n keeps the top ``density`` share of |X_n|
          (t_n = the k-th smallest |X_n|, k = int(numel·(1 - density)); ties at t_n are kept)
          trim='matrix': t_n over this matrix;
          trim='model':  t_n over all matrices of that factor kind (every A of task n, or
                         every B of task n) — the original's whole-task-vector trimming
                         applied per factor kind (exact, found by a streaming two-pass select).
2. elect: γ = sign(Σ_n X̂_n) per entry (summed as P + M, the float32 task-order sums of the
          positive and the negative parts); entries where the sum is 0 take the sign of the
          matrix total (the majority-mass sign).
3. disjoint mean: X* = λ · Σ_n X̂_n [sign(X̂_n) = γ] / max(1, #{n : sign(X̂_n) = γ, X̂_n ≠ 0})

Hyper-parameters: ``density`` = 0.2 (TIES's k = 20 %), ``trim`` = 'matrix', ``lam`` = 1.0,
``lambda_on`` = 'both'. Output float32 [r, d_in], [d_out, r].
Reference implementation followed: ``merge_methods('topk', resolve_method='mass',
merge_func='dis-mean')`` of prateeky2806/ties-merging @ 44e7891 (zero signs resolved to the
majority), per matrix as in ``fixtures/baselines/ties_original_*``.
Fast route vs :func:`reference`: bit for bit (trim='model' given the same thresholds in ``ctx.stats``).

``space`` = 'factors' (default, the above) | 'core' | 'knots' | 'full' (:mod:`robustmerge.spaces`):
TIES on the space's task matrices as core-space-merging's ``ties_merging`` (topK = 100·density;
keeps int(D·K)+1 entries per task, zero signs → sign of Σ γ), ``lam`` multiplies ΔW* once,
the output is a rank-N·r LoRA (``out_rank``); fixtures lora_native v02, v03 (core), v07 (knots).
"""
from __future__ import annotations

import torch

from .common import (StreamingKth, apply_mask, is_16bit_float, kth_index, kth_smallest_reference, ordered_sum,
                     prune_by_magnitude, work_dtype)
from .registry import ModuleContext, Param, lambdas, per_factor
from ..spaces import SpaceRoute, ties_in_space


def reference(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext):
    """Trim, elect, disjoint mean (module docstring), per stack; λ_A, λ_B as lambda_on."""

    def merged(X, factor):  # [N, ...] -> [...]
        n, shape = X.shape[0], [X.shape[0]] + [1] * (X.dim() - 1)
        k = kth_index(X[0].numel(), p["density"])
        if p["trim"] == "model":  # thresholds over the whole model, from prepare()
            t = ctx.stats[factor].to(X.device, work_dtype(X)).view(shape)
        else:
            t = kth_smallest_reference(X.abs().reshape(n, -1), k).view(shape) if k > 0 else 0.0
        T = torch.where(X.abs().to(work_dtype(X)) >= t, X, 0.0).to(work_dtype(X))  # trimmed [N, ...]
        P, M = sum(T_n.clamp(min=0) for T_n in T), sum(T_n.clamp(max=0) for T_n in T)
        total = P + M  # Σ_n T_n
        gamma = torch.where(total != 0, torch.sign(total), 1.0 if total.sum() >= 0 else -1.0)  # elected sign
        agree = (torch.sign(T) == gamma) & (T != 0)  # [N, ...]
        return sum(torch.where(a, T_n, 0.0) for a, T_n in zip(agree, T)) / agree.sum(0).clamp(min=1)

    lam_a, lam_b = lambdas(p)
    return lam_a * merged(A, "A"), lam_b * merged(B, "B")


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


@per_factor(paper="Yadav et al., 'TIES-Merging: Resolving Interference When Merging Models', NeurIPS 2023; "
            "https://arxiv.org/abs/2306.01708",
            params=[Param("density", 0.2, "share of entries kept per task when trimming (TIES's k)", float, 0.0, 1.0,
                          open_low=True),
                    Param("trim", "matrix", "trimming scope: 'matrix' (per task matrix) or 'model' (per task over all "
                          "A / all B)", str, choices=("matrix", "model"))],
            reference=reference, prepare=ties_prepare, space=SpaceRoute(ties_in_space))
def ties(X: torch.Tensor, p: dict, ctx: ModuleContext, factor: str) -> torch.Tensor:
    """trim to the top-density magnitudes, elect signs, disjoint mean, scaled by λ"""
    return ties_combine(ties_trim(X, p["density"], ctx.stats.get(factor)))  # [...] float32
