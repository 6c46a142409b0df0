"""Task Arithmetic (Ilharco et al., ICLR 2023) on LoRA factors, as the RobustMerge paper ran it
(Appendix D): applied to the A stack and the B stack separately.

    A* = λ_A Σ_n A_n,   B* = λ_B Σ_n B_n         (λ_A = λ_B = λ for lambda_on='both';
                                                  λ_A = 1, λ_B = λ for 'product')

Shapes: A [N, r, d_in], B [N, d_out, r] -> A* [r, d_in], B* [d_out, r], float32.
"""
from __future__ import annotations

import torch

from .common import ordered_sum
from .registry import LAMBDA, LAMBDA_ON, ModuleContext, register, scale_pair


@register(
    "task_arithmetic",
    summary="sum the task factors, scaled by λ",
    paper="Ilharco et al., 'Editing Models with Task Arithmetic', ICLR 2023; https://arxiv.org/abs/2212.04089",
    params=[LAMBDA, LAMBDA_ON],
)
def task_arithmetic(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext) -> tuple[torch.Tensor, torch.Tensor]:
    return scale_pair(ordered_sum(A, 1.0), ordered_sum(B, 1.0), p["lam"], p["lambda_on"])
