"""Task Arithmetic (Ilharco et al., ICLR 2023; task addition θ + λ Σ_n τ_n) on LoRA factors,
as the RobustMerge paper ran it (Appendix D): applied to the A stack and the B stack separately.

    A* = λ_A Σ_n A_n,   B* = λ_B Σ_n B_n         (λ_A = λ_B = λ for lambda_on='both';
                                                  λ_A = 1, λ_B = λ for 'product')

Shapes: A [N, r, d_in], B [N, d_out, r] -> A* [r, d_in], B* [d_out, r], float32.
Hyper-parameters: ``lam`` = 1.0 (λ), ``lambda_on`` = 'both'.
Reference implementation followed: MergeLM's ``MergingMethod.task_arithmetic``
(yule-BUAA/MergeLM @ 6d49ad9: ``(X_0 + ... + X_{N-1}) · λ``), applied per matrix as in
``fixtures/baselines/task_arithmetic_*`` (the RobustMerge paper publishes no baseline code).
Fast route vs :func:`reference`: bit for bit (both sum in float32 in task order).

``space`` = 'factors' (default, the above) | 'core' | 'knots' | 'full' (:mod:`robustmerge.spaces`):
ΔW* = λ · L · Σ_n X_n · R (core: equals Σ_n ΔW_n exactly; Core Space's ``sum``), written as a
rank-N·r LoRA (``out_rank``); fixtures lora_native v01 (core), v08 (knots).
"""
from __future__ import annotations

import torch

from .common import ordered_sum, work_dtype
from .registry import ModuleContext, lambdas, per_factor
from ..spaces import SpaceRoute, task_sum


def reference(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext | None = None):
    """A* = λ_A Σ_n A_n,  B* = λ_B Σ_n B_n, summed in task order (float64 for float64 inputs)."""
    lam_a, lam_b = lambdas(p)
    return lam_a * sum(a.to(work_dtype(A)) for a in A), lam_b * sum(b.to(work_dtype(B)) for b in B)


@per_factor(paper="Ilharco et al., 'Editing Models with Task Arithmetic', ICLR 2023; https://arxiv.org/abs/2212.04089",
            params=[], reference=reference, space=SpaceRoute(task_sum))
def task_arithmetic(X: torch.Tensor, p: dict, ctx: ModuleContext, factor: str) -> torch.Tensor:
    """sum the task factors, scaled by λ"""
    return ordered_sum(X, 1.0)  # [...] float32
