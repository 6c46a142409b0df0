"""PCB-merging (Du et al., NeurIPS 2024; the steps of its method, numbered 1-5 here) on LoRA
factors, per matrix, applied to the A stack and the B stack separately. For X ∈ {A, B}
(A [N, r, d_in], B [N, d_out, r]), τ_n = vec(X_n) ∈ R^D:

1. outlier clip:  |τ̄_n| = clamp(|τ_n|, q_lo, q_hi) at sort indices ⌊D·ε⌋ and ⌊D(1-ε)⌋-1,
                  τ̄_n = sign(τ_n) |τ̄_n|                                  (ε = ``clip``)
2. intra-balance: β_intra,n = exp(N · minmax(|τ̄_n|)²)
3. inter-balance: β_inter,n = tanh(τ_n ⊙ Σ_k τ_k)   (NLP-code variant)
4. β_n = β_intra,n ⊙ β_inter,n, raised to its sort value at ⌊D(1-ratio)⌋ (keeps the top
   ``ratio`` share distinct), then w_n = minmax(β_n) ∈ [0, 1]
5. X* = λ · Σ_n w_n ⊙ τ̄_n / max(Σ_n w_n, 1e-12)

Hyper-parameters: ``ratio`` = 0.1 (pcb_ratio), ``clip`` = 1e-4, ``lam`` = 1.0, ``lambda_on`` = 'both'.
Output float32 [r, d_in], [d_out, r] (computed in float32 for every stored dtype).
Reference implementation followed: ``PCB_merge`` of duguodong7/pcb-merging @ 5897888
(``pcb-merging.py``, outlier clip 1e-4), per matrix as in ``fixtures/baselines/pcb_merge_*``.
Fast route vs :func:`reference`: bit for bit on float32 and 16-bit inputs.
"""
from __future__ import annotations

import torch

from .common import is_16bit_float, kth_smallest, kth_smallest_reference, magnitude, minmax, work_dtype
from .registry import ModuleContext, Param, lambdas, per_factor


def reference(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext | None = None):
    """Steps 1-5 of the module docstring, per stack; λ_A, λ_B as lambda_on."""

    def merged(X):  # [N, ...] -> [...]
        n = X.shape[0]
        tau = X.to(work_dtype(X)).reshape(n, -1)  # [N, D]
        d = tau.shape[1]
        lo = kth_smallest_reference(tau.abs(), int(d * p["clip"]) + 1)  # [N]
        hi = kth_smallest_reference(tau.abs(), int(d * (1 - p["clip"])))
        mag = tau.abs().clamp(lo[:, None], hi[:, None])  # |τ̄|
        intra = torch.exp(n * minmax(mag, dim=1) ** 2)
        inter = torch.tanh(tau * tau.sum(0, keepdim=True))
        beta = intra * inter
        floor = kth_smallest_reference(beta, min(int(d * (1 - p["ratio"])), d - 1) + 1)  # [N]
        w = minmax(beta.clamp(min=floor[:, None]), dim=1)
        return ((w * torch.sign(tau) * mag).sum(0) / w.sum(0).clamp(min=1e-12)).reshape(X.shape[1:])

    lam_a, lam_b = lambdas(p)
    return lam_a * merged(A), lam_b * merged(B)


def _clip_bounds(x: torch.Tensor, mag: torch.Tensor, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task |τ| at sort indices lo and hi, [N, 1] each (float32). 16-bit inputs select on
    their own magnitudes (the histogram route; float32 conversion keeps the order)."""
    src = magnitude(x).reshape(x.shape[0], -1) if is_16bit_float(x) else mag  # [N, D]
    return kth_smallest(src, lo + 1).float().unsqueeze(1), kth_smallest(src, hi + 1).float().unsqueeze(1)


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
    beta.clamp_(min=kth_smallest(beta, min(int(d * (1 - ratio)), d - 1) + 1).unsqueeze(1))
    w = minmax(beta, dim=1)  # [N, D] in [0, 1]
    merged = tau_clip.mul_(w).sum(0) / w.sum(0).clamp(min=1e-12)
    return merged.reshape(shape)


@per_factor(paper="Du et al., 'Parameter Competition Balancing for Model Merging' (PCB-merging), NeurIPS 2024; "
            "https://arxiv.org/abs/2410.02396",
            params=[Param("ratio", 0.1, "share of entries whose balancing weight is kept (PCB's pcb_ratio)", float,
                          0.0, 1.0, open_low=True),
                    Param("clip", 1e-4, "outlier clip share at each end of |τ| before balancing", float, 0.0, 0.5,
                          open_high=True)],
            reference=reference)
def pcb(X: torch.Tensor, p: dict, ctx: ModuleContext, factor: str) -> torch.Tensor:
    """balance entries within and across tasks, keep the top ratio share, weighted mean scaled by λ"""
    return pcb_combine(X, p["ratio"], p["clip"])  # [...] float32
