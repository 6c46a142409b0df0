"""DARE (Yu et al., ICML 2024) on LoRA factors, applied to the A stack and the B stack separately.

For each task matrix X_n ∈ {A_n, B_n} (A [N, r, d_in], B [N, d_out, r]), with
m ~ Bernoulli(1 - p) drawn per entry:

    X̂_n = m ⊙ X_n · 1/(1 - p)        (rescale='inverse', the paper's drop-and-rescale)
    X̂_n = m ⊙ X_n                    (rescale='none')
    X*  = λ Σ_n X̂_n                   (then Task Arithmetic; λ placement as lambda_on)

Hyper-parameters: ``drop`` = 0.5 (p), ``rescale`` = 'inverse', ``lam`` = 1.0, ``lambda_on`` = 'both'.
Output float32 [r, d_in], [d_out, r].

Each entry is dropped when a uniform 15-bit integer u (:func:`uniform15`: 16-bit lanes of a
CPU generator's 64-bit draws, seeded by (seed, module, factor)) is below round(p · 32768): p is
used at a resolution of 1/32768 (0.5, 0.25, 0.1 → 3277/32768 = 0.100006 …). The same output
bytes for the same seed on any device, in any module order and for any stored dtype. The
rescaled sum is accumulated in float32 in task order (:func:`~.common.ordered_sum`).
Reference implementation followed: MergeLM's ``mask_input_with_mask_rate(use_rescale=True)``
then ``task_arithmetic`` (yule-BUAA/MergeLM @ 6d49ad9), per matrix; its Bernoulli draw is
replaced by :func:`uniform15` (``fixtures/baselines/dare_*`` store the masks they used).
Fast route vs :func:`reference`: bit for bit.
"""
from __future__ import annotations

import torch

from .common import apply_mask, is_16bit_float, ordered_sum, work_dtype
from .registry import ModuleContext, Param, lambdas, per_factor

LEVELS = 1 << 15  # resolution of the drop probability


def uniform15(shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """int16 [shape] on the CPU, uniform in [0, 32767]: the 16-bit lanes of 64-bit draws, sign bit cleared."""
    numel = shape.numel()
    draws = torch.empty((numel + 3) // 4, dtype=torch.int64).random_(-(1 << 63), (1 << 63) - 1, generator=gen)
    return draws.view(torch.int16)[:numel].view(shape).bitwise_and_(0x7FFF)


def drop_level(drop: float) -> int:
    """An entry is dropped iff its u < drop_level(p) = round(p · 32768) (at most 32767)."""
    return min(round(drop * LEVELS), LEVELS - 1)


def reference(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext):
    """A* = λ_A Σ_n m_A,n ⊙ A_n / (1 - p),  B* likewise, m = [u >= round(p·32768)]."""
    rescale = 1.0 / (1.0 - p["drop"]) if p["rescale"] == "inverse" else 1.0

    def merged(X, factor):  # [N, ...] -> [...]
        kept = uniform15(X.shape, ctx.generator(factor)).to(X.device) >= drop_level(p["drop"])
        return sum(torch.where(m, x, 0.0).to(work_dtype(X)) * rescale for m, x in zip(kept, X))

    lam_a, lam_b = lambdas(p)
    return lam_a * merged(A, "A"), lam_b * merged(B, "B")


def dare_drop(x: torch.Tensor, drop: float, gen: torch.Generator) -> torch.Tensor:
    """x: [N, ...] with the dropped entries set to +0, in x's dtype (not rescaled)."""
    keep = uniform15(x.shape, gen).neg_().add_(drop_level(drop) - 1).bitwise_right_shift_(15).to(x.device)
    # (t - 1 - u) >> 15: all ones (-1) where u >= t, 0 where the entry is dropped
    if is_16bit_float(x):  # AND the bit patterns
        return keep.bitwise_and_(x.view(torch.int16)).view(x.dtype)
    return apply_mask(x, keep != 0)


@per_factor(paper="Yu et al., 'Language Models are Super Mario: Absorbing Abilities from Homologous Models as a "
            "Free Lunch' (DARE), ICML 2024; https://arxiv.org/abs/2311.03099",
            params=[Param("drop", 0.5, "drop probability p per entry (resolution 1/32768)", float, 0.0, 1.0,
                          open_high=True),
                    Param("rescale", "inverse", "survivor rescaling: 'inverse' (1/(1-p)) or 'none'", str,
                          choices=("inverse", "none"))],
            reference=reference)
def dare(X: torch.Tensor, p: dict, ctx: ModuleContext, factor: str) -> torch.Tensor:
    """randomly drop entries with probability p, rescale by 1/(1-p), sum scaled by λ"""
    rescale = 1.0 / (1.0 - p["drop"]) if p["rescale"] == "inverse" else 1.0
    return ordered_sum(dare_drop(X, p["drop"], ctx.generator(factor)), rescale)  # [...] float32
