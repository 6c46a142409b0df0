"""DARE (Yu et al., ICML 2024) on LoRA factors, applied to the A stack and the B stack separately.

For each task matrix X_n ∈ {A_n, B_n}, with m ~ Bernoulli(1 - p) drawn per entry:

    X̂_n = m ⊙ X_n / (1 - p)          (rescale='inverse', the paper's)
    X̂_n = m ⊙ X_n                    (rescale='none')
    X*  = λ Σ_n X̂_n                   (then Task Arithmetic; λ placement as lambda_on)

The masks come from a CPU generator seeded by (seed, module, factor) — the same output bytes
for the same seed on any device and in any module order.
"""
from __future__ import annotations

import torch

from .common import apply_mask, ordered_sum
from .registry import LAMBDA, LAMBDA_ON, ModuleContext, Param, register, scale_pair


def dare_drop(x: torch.Tensor, drop: float, rescale: str, gen: torch.Generator) -> torch.Tensor:
    """Drop entries of x: [N, ...] with probability ``drop``; rescale the survivors."""
    keep = torch.rand(x.shape, generator=gen) >= drop  # CPU draw: device-independent
    out = apply_mask(x.float(), keep.to(x.device))
    return out / (1.0 - drop) if rescale == "inverse" else out


@register(
    "dare",
    summary="randomly drop entries with probability p, rescale by 1/(1-p), sum scaled by λ",
    paper="Yu et al., 'Language Models are Super Mario: Absorbing Abilities from Homologous Models as a "
    "Free Lunch' (DARE), ICML 2024; https://arxiv.org/abs/2311.03099",
    params=[
        Param("drop", 0.5, "drop probability p per entry", float, 0.0, 1.0, open_high=True),
        Param("rescale", "inverse", "survivor rescaling: 'inverse' (1/(1-p)) or 'none'", str, choices=("inverse", "none")),
        LAMBDA,
        LAMBDA_ON,
    ],
)
def dare(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext) -> tuple[torch.Tensor, torch.Tensor]:
    a = dare_drop(A, p["drop"], p["rescale"], ctx.generator("A"))  # [N, r, d_in]
    b = dare_drop(B, p["drop"], p["rescale"], ctx.generator("B"))  # [N, d_out, r]
    return scale_pair(ordered_sum(a, 1.0), ordered_sum(b, 1.0), p["lam"], p["lambda_on"])
