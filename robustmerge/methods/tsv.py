"""TSV-M, Task Singular Vectors merging (Gargiulo et al., 'Task Singular Vectors: Reducing
Task Interference in Model Merging', CVPR 2025; https://arxiv.org/abs/2412.00081), LoRA-native
in Core Space (Panariello et al., NeurIPS 2025) or dense in full space as the TSV paper defines it.

For the task matrices X_1..X_N (p × q) of the chosen space (core: M_n = U_Bᵀ ΔW_n V_Aᵀ;
knots: the V_n blocks; full: ΔW_n), m = min(p, q), k = int(m · (1/N)):

    X_n = U_n diag(σ_n) V_nᵀ,   Û = [U_1[:, :k] | … | U_N[:, :k] | 0]  (p × m),
    ŝ = [σ_1[:k], …, σ_N[:k], 0…],  V̂ = [V_1[:, :k]ᵀ; …; V_N[:, :k]ᵀ; 0]  (m × q)
    M* = polar(Û) · diag(ŝ) · polar(V̂),   ΔW* = λ · L · M* · R      (polar(X) = U Vᵀ of X's SVD)

Shapes: A [N, r, d_in], B [N, d_out, r] -> A' [R, d_in], B' [d_out, R], R = out_rank or N·r
(float32; the scaling is the output config's). Hyper-parameters: ``space`` = 'core',
``out_rank`` = 0 (N·r), ``lam`` = 1.0 (λ, multiplies ΔW* once).
Reference reproduced: core-space-merging's ``MatrixPerLayerMerger.get_tsv_delta_w``
(apanariello4/core-space-merging @ 85176fa), identical to task_singular_vectors'
``compute_and_sum_svd_mem_reduction`` (@ a6c9718); fixtures lora_native v04 (core), v09 (full).
Fast route (from the factors) vs :func:`reference` (dense float64): equal to float64 round-off.
"""
from __future__ import annotations

import torch

from ..spaces import dense_in_space, out_rank, polar, run_in_space, space_params, svd
from .registry import LAMBDA_UPDATE, ModuleContext, register


def tsv_merge(X: torch.Tensor, p: dict) -> torch.Tensor:
    """TSV-M on X [N, p, q] -> [p, q] (module docstring)."""
    n, rows, cols = X.shape
    m = min(rows, cols)
    k = int(m * (1 / n))
    U, s, V = X.new_zeros(rows, m), X.new_zeros(m), X.new_zeros(m, cols)
    for i in range(n):
        u, sv, vh = svd(X[i])
        U[:, i * k:(i + 1) * k], s[i * k:(i + 1) * k], V[i * k:(i + 1) * k] = u[:, :k], sv[:k], vh[:k]
    return polar(U) @ torch.diag(s) @ polar(V)


def reference(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext | None = None) -> torch.Tensor:
    """Dense float64 ΔW* [d_out, d_in]: TSV-M in the space built from dense SVDs."""
    return dense_in_space(A, B, p, tsv_merge)


@register(paper="Gargiulo et al., 'Task Singular Vectors: Reducing Task Interference in Model Merging', CVPR 2025; "
          "https://arxiv.org/abs/2412.00081 (Core Space: Panariello et al., NeurIPS 2025)",
          params=[*space_params(), LAMBDA_UPDATE], reference=reference, update_rank=out_rank)
def tsv(A, B, p, ctx):
    """TSV-M: per-task singular vectors, orthogonalised, in core/knots/full space (rank N·r LoRA)"""
    return run_in_space(A, B, p, tsv_merge)
