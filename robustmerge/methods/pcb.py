"""PCB-merging (Du et al., NeurIPS 2024) on LoRA factors, per matrix, applied to the A stack
and the B stack separately. For X ∈ {A, B}, τ_n = vec(X_n) ∈ R^D:

1. outlier clip:  |τ̄_n| = clamp(|τ_n|, q_lo, q_hi) at sort indices ⌊D·ε⌋ and ⌊D(1-ε)⌋-1,
                  τ̄_n = sign(τ_n) |τ̄_n|                                  (ε = ``clip``)
2. intra-balance: β_intra,n = exp(N · minmax(|τ̄_n|)²)
3. inter-balance: β_inter,n = tanh(τ_n ⊙ Σ_k τ_k)
4. β_n = β_intra,n ⊙ β_inter,n, raised to its sort value at ⌊D(1-ratio)⌋ (keeps the top
   ``ratio`` share distinct), then w_n = minmax(β_n) ∈ [0, 1]
5. X* = λ · Σ_n w_n ⊙ τ̄_n / max(Σ_n w_n, 1e-12)

λ placement as lambda_on. Shapes: A [N, r, d_in], B [N, d_out, r] -> float32 [r, d_in], [d_out, r].
"""
from __future__ import annotations

import torch

from .common import is_16bit_float, kth_smallest, magnitude, minmax, thresholds16
from .registry import LAMBDA, LAMBDA_ON, ModuleContext, Param, register, scale_pair


def _sorted_at(x: torch.Tensor, index: int) -> torch.Tensor:
    """Per-row order statistic at 0-based ``index`` of the ascending sort: x [N, D] -> [N, 1]."""
    return torch.stack([kth_smallest(row, index + 1) for row in x]).unsqueeze(1)


def _clip_bounds(x: torch.Tensor, mag: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task |τ| at sort indices lo and hi, [N, 1] each (float32). 16-bit inputs: exact
    from one histogram of their magnitude bit patterns (float32 conversion keeps the order)."""
    if not is_16bit_float(x):
        return _sorted_at(mag, lo), _sorted_at(mag, hi)
    bits = magnitude(x).view(torch.int16).reshape(x.shape[0], -1)
    vals = torch.stack([thresholds16(bits, lo + 1), thresholds16(bits, hi + 1)], 1).view(x.dtype).float()  # [N, 2]
    return vals[:, :1], vals[:, 1:]


def pcb_combine(x: torch.Tensor, ratio: float, clip: float) -> torch.Tensor:
    """PCB-merge one stack x: [N, ...] -> [...] (float32, before λ)."""
    n, shape = x.shape[0], x.shape[1:]
    tau = x.float().reshape(n, -1)  # [N, D]
    d = tau.shape[1]
    mag = tau.abs()
    mag.clamp_(*_clip_bounds(x, mag, int(d * clip), int(d * (1 - clip)) - 1))
    tau_clip = torch.sign(tau).mul_(mag)
    intra = minmax(mag, dim=1).square_().mul_(n).exp_()  # [N, D]
    beta = intra.mul_((tau * tau.sum(0, keepdim=True)).tanh_())  # intra ⊙ inter
    beta.clamp_(min=_sorted_at(beta, min(int(d * (1 - ratio)), d - 1)))
    w = minmax(beta, dim=1)  # [N, D] in [0, 1]
    merged = tau_clip.mul_(w).sum(0) / w.sum(0).clamp(min=1e-12)
    return merged.reshape(shape)


@register(
    "pcb",
    summary="balance entries within and across tasks, keep the top ratio share, weighted mean scaled by λ",
    paper="Du et al., 'Parameter Competition Balancing for Model Merging' (PCB-merging), NeurIPS 2024; "
    "https://arxiv.org/abs/2410.02396",
    params=[
        Param("ratio", 0.1, "share of entries whose balancing weight is kept (PCB's pcb_ratio)", float, 0.0, 1.0, open_low=True),
        Param("clip", 1e-4, "outlier clip share at each end of |τ| before balancing", float, 0.0, 0.5, open_high=True),
        LAMBDA,
        LAMBDA_ON,
    ],
)
def pcb(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext) -> tuple[torch.Tensor, torch.Tensor]:
    a = pcb_combine(A, p["ratio"], p["clip"])  # [r, d_in]
    b = pcb_combine(B, p["ratio"], p["clip"])  # [d_out, r]
    return scale_pair(a, b, p["lam"], p["lambda_on"])
