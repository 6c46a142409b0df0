"""DARE (Yu et al., ICML 2024) on LoRA factors, applied to the A stack and the B stack separately.

For each task matrix X_n ∈ {A_n, B_n}, with m ~ Bernoulli(1 - p) drawn per entry:

    X̂_n = m ⊙ X_n · 1/(1 - p)        (rescale='inverse', the paper's)
    X̂_n = m ⊙ X_n                    (rescale='none')
    X*  = λ Σ_n X̂_n                   (then Task Arithmetic; λ placement as lambda_on)

Each entry is dropped when a uniform 15-bit integer u (16-bit lanes of a CPU generator's
64-bit draws, seeded by (seed, module, factor)) is below round(p · 32768): p is used at a
resolution of 1/32768 (0.5, 0.25, 0.1 → 3277/32768 = 0.100006 …). The same output bytes for
the same seed on any device, in any module order and for any stored dtype. The rescaled sum
is accumulated in float32 in task order (:func:`~.common.ordered_sum`).
"""
from __future__ import annotations

import torch

from .common import apply_mask, is_16bit_float, ordered_sum
from .registry import LAMBDA, LAMBDA_ON, ModuleContext, Param, register, scale_pair

LEVELS = 1 << 15  # resolution of the drop probability


def keep_bits(shape: torch.Size, drop: float, gen: torch.Generator) -> torch.Tensor:
    """int16 [shape] on the CPU: all ones (-1) where an entry is kept, 0 where it is dropped."""
    numel = shape.numel()
    draws = torch.empty((numel + 3) // 4, dtype=torch.int64).random_(-(1 << 63), (1 << 63) - 1, generator=gen)
    u = draws.view(torch.int16)[:numel].view(shape).bitwise_and_(0x7FFF)  # uniform in [0, 32767]
    t = min(round(drop * LEVELS), LEVELS - 1)
    return u.neg_().add_(t - 1).bitwise_right_shift_(15)  # (t - 1 - u) >> 15: -1 iff u >= t


def dare_drop(x: torch.Tensor, drop: float, gen: torch.Generator) -> torch.Tensor:
    """x: [N, ...] with the dropped entries set to +0, in x's dtype (not rescaled)."""
    keep = keep_bits(x.shape, drop, gen).to(x.device)
    if is_16bit_float(x):  # AND the bit patterns
        return keep.bitwise_and_(x.view(torch.int16)).view(x.dtype)
    return apply_mask(x, keep != 0)


@register(
    "dare",
    summary="randomly drop entries with probability p, rescale by 1/(1-p), sum scaled by λ",
    paper="Yu et al., 'Language Models are Super Mario: Absorbing Abilities from Homologous Models as a "
    "Free Lunch' (DARE), ICML 2024; https://arxiv.org/abs/2311.03099",
    params=[
        Param("drop", 0.5, "drop probability p per entry (resolution 1/32768)", float, 0.0, 1.0, open_high=True),
        Param("rescale", "inverse", "survivor rescaling: 'inverse' (1/(1-p)) or 'none'", str, choices=("inverse", "none")),
        LAMBDA,
        LAMBDA_ON,
    ],
)
def dare(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext) -> tuple[torch.Tensor, torch.Tensor]:
    rescale = 1.0 / (1.0 - p["drop"]) if p["rescale"] == "inverse" else 1.0
    a = ordered_sum(dare_drop(A, p["drop"], ctx.generator("A")), rescale)  # [r, d_in]
    b = ordered_sum(dare_drop(B, p["drop"], ctx.generator("B")), rescale)  # [d_out, r]
    return scale_pair(a, b, p["lam"], p["lambda_on"])
