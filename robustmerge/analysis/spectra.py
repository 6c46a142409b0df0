"""Singular values and vectors of LoRA updates without dense SVDs.

For ``ΔW = B·A`` with ``B: [d_out, r]``, ``A: [r, d_in]`` (scaling folded into B):

    B  = Q_B R_B          thin QR, Q_B [d_out, p], R_B [p, r],  p = min(d_out, r)
    Aᵀ = Q_A R_A          thin QR, Q_A [d_in, q],  R_A [q, r],  q = min(d_in, r)
    ΔW = Q_B (R_B R_Aᵀ) Q_Aᵀ,   R_B R_Aᵀ = U_c Σ V_cᵀ   (SVD of the small [p, q] core)
    ΔW = (Q_B U_c) Σ (Q_A V_c)ᵀ

Q_B U_c and Q_A V_c have orthonormal columns, so this is an exact (thin) SVD of ΔW with
``k = min(p, q) <= r`` singular triplets; every other singular value is 0. Cost
O((d_in + d_out)·r²) time and O((d_in + d_out)·r) memory: no ``d_out × d_in`` matrix is ever
formed. Everything runs in float64.

Fig. 3a / Fig. 8 of the paper: :func:`pruning_spectra` gives, per task and module, the
singular values of the original update, of the magnitude-pruned update ``B̃·Ã`` and of the
pruned and complementary-scaled update ``B̃·diag(Ŝ)·Ã`` (the RobustMerge step before the
cross-task normalisation).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..methods.robustmerge import per_task_step


@dataclass(frozen=True)
class LowRankSVD:
    """``ΔW = U diag(S) Vᵀ`` (batched over leading dims).

    Attributes:
        U: [..., d_out, k] orthonormal columns (left singular vectors).
        S: [..., k] singular values, descending.
        V: [..., d_in, k] orthonormal columns (right singular vectors).
    """

    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor


def lowrank_svd(B: torch.Tensor, A: torch.Tensor, scale: float | torch.Tensor = 1.0) -> LowRankSVD:
    """Thin SVD of ``ΔW = scale · B @ A`` from the factors (see the module docstring).

    Args:
        B: [..., d_out, r].
        A: [..., r, d_in] (same leading dims as B).
        scale: a number, or a tensor broadcastable to the leading dims.
    Returns:
        :class:`LowRankSVD` in float64, ``k = min(d_out, d_in, r)``.
    """
    B = B.double()
    if isinstance(scale, torch.Tensor):
        B = B * scale.double().reshape(*scale.shape, 1, 1)
    elif scale != 1.0:
        B = B * scale
    Qb, Rb = torch.linalg.qr(B)  # [..., d_out, p], [..., p, r]
    Qa, Ra = torch.linalg.qr(A.double().mT)  # [..., d_in, q], [..., q, r]
    core = Rb @ Ra.mT  # [..., p, q]
    Uc, S, Vch = torch.linalg.svd(core, full_matrices=False)  # [..., p, k], [..., k], [..., k, q]
    return LowRankSVD(Qb @ Uc, S, Qa @ Vch.mT)


def singular_values(B: torch.Tensor, A: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Singular values of ``scale · B @ A``: [..., k] float64, descending (no vectors formed
    beyond the r × r core)."""
    B = B.double()
    if isinstance(scale, torch.Tensor):
        B = B * scale.double().reshape(*scale.shape, 1, 1)
    elif scale != 1.0:
        B = B * scale
    Rb = torch.linalg.qr(B, mode="r").R  # [..., p, r]
    Ra = torch.linalg.qr(A.double().mT, mode="r").R  # [..., q, r]
    return torch.linalg.svdvals(Rb @ Ra.mT)  # [..., k]


def pruning_params(keep: float | None = None, clamp_ratio: float | None = None) -> dict:
    """RobustMerge's parameters for the pruning spectra: its ``official`` preset (read from the
    registry), with ``keep`` / ``clamp_ratio`` overridden where given."""
    from ..methods import get_method

    overrides = {k: v for k, v in (("keep", keep), ("clamp_ratio", clamp_ratio)) if v is not None}
    return get_method("robustmerge").resolve("official", overrides)


def pruning_spectra(A: torch.Tensor, B: torch.Tensor, keep: float, clamp_ratio: float = 1.0) -> dict[str, torch.Tensor]:
    """Singular values of each task's update before and after pruning (paper Fig. 3a / Fig. 8).

    The pruned factors and Ŝ are RobustMerge's own per-task step
    (:func:`robustmerge.methods.robustmerge.per_task_step`: Eq. 2-3 and the released clamp),
    computed in float64.

    Args:
        A: [N, r, d_in], B: [N, d_out, r] with scaling folded into B.
    Returns:
        ``original``: σ(B_n A_n), ``pruned``: σ(B̃_n Ã_n), ``pruned_scaled``: σ(B̃_n diag(Ŝ_n) Ã_n),
        each [N, k] float64.
    """
    A_p, B_p, s = per_task_step(A.double(), B.double(), pruning_params(keep, clamp_ratio))
    return {
        "original": singular_values(B, A),
        "pruned": singular_values(B_p, A_p),
        "pruned_scaled": singular_values(B_p * s.unsqueeze(1), A_p),  # B̃ diag(Ŝ): scale B's columns
    }
