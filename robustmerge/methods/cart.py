"""CART, Centered Arithmetic with Rank-reduced Task vectors (Choi et al., 'Revisiting Weight
Averaging for Model Merging', 2024; https://arxiv.org/abs/2412.12153), in Core Space's definition.

For the task matrices X_1..X_N (p × q) of the space, k = ceil(rank_fraction · min(p, q)):

    θ̄ = (1/N) Σ_n X_n,   τ_n = X_n − θ̄,   M* = θ̄ + residual_scale · Σ_n trunc_k(τ_n)
    ΔW* = λ · L · M* · R                 (trunc_k: the top-k SVD triplets)

k uses the space's dimensions (core: N·r), so the same fraction is a different rank per space.
Shapes: A [N, r, d_in], B [N, d_out, r] -> A' [R, d_in], B' [d_out, R], R = out_rank or N·r.
Hyper-parameters: ``space`` = 'core', ``rank_fraction`` = 0.04 (cart_pruning_rank),
``residual_scale`` = 0.1 (cart_scaling_coeffs), ``out_rank`` = 0 (N·r), ``lam`` = 1.0.
Reference reproduced: core-space-merging @ 85176fa ``get_cart_delta_w``; fixture lora_native v06.
Fast route (from the factors) vs :func:`reference` (dense float64): equal to float64 round-off.
"""
from __future__ import annotations

import math

import torch

from ..spaces import dense_in_space, out_rank, run_in_space, space_params, svd, task_sum
from .registry import LAMBDA_UPDATE, ModuleContext, Param, register


def cart_merge(X: torch.Tensor, p: dict) -> torch.Tensor:
    """CART on X [N, p, q] -> [p, q] (module docstring)."""
    n = X.shape[0]
    mean = task_sum(X, p) / n
    k = math.ceil(p["rank_fraction"] * min(X.shape[1:]))
    low = X.new_zeros(X.shape[1:])
    for i in range(n):
        u, s, vh = svd(X[i] - mean)
        low = low + (u[:, :k] * s[:k]) @ vh[:k]
    return mean + p["residual_scale"] * low


def reference(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext | None = None) -> torch.Tensor:
    """Dense float64 ΔW* [d_out, d_in]: CART in the space built from dense SVDs."""
    return dense_in_space(A, B, p, cart_merge)


@register(paper="Choi et al., 'Revisiting Weight Averaging for Model Merging', 2024; https://arxiv.org/abs/2412.12153 "
          "(Core Space's definition: Panariello et al., NeurIPS 2025)",
          params=[*space_params(), Param("rank_fraction", 0.04, "share of min(p, q) kept per centred task", float,
                                         0.0, 1.0, open_low=True),
                  Param("residual_scale", 0.1, "scale of the low-rank centred residuals", float, 0.0), LAMBDA_UPDATE],
          reference=reference, update_rank=out_rank)
def cart(A, B, p, ctx):
    """CART: mean plus scaled low-rank centred task residuals, in core/knots/full space"""
    return run_in_space(A, B, p, cart_merge)
