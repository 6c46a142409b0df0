"""Iso-C and Iso-CTS (Marczak et al., 'No Task Left Behind: Isotropic Model Merging with Common
and Task-Specific Subspaces', ICML 2025; https://arxiv.org/abs/2502.04959), in any merge space.

For the task matrices X_1..X_N (p × q) of the space (core: M_n; knots: V_n; full: ΔW_n),
m = min(p, q), Σ = Σ_n X_n = U diag(σ) Vᵀ:

- Iso-C (``common_space_fraction`` = 0):  M* = U · mean(σ) · Vᵀ (mean over all m values).
- Iso-CTS (f = ``common_space_fraction`` > 0; preset ``iso_cts``, f = 0.8 as the reference):
  k_c = int(m·f); T = round((m − k_c)/N)·N (half to even); k_c ← m − T; k_t = T/N.
  Common: top-k_c triplets of Σ; per task R_n = X_n − U_c U_cᵀ X_n and its top k_t triplets;
  Û = [task blocks | common], ŝ, V̂ likewise; M* = polar(Û) · mean(ŝ) · polar(V̂).
ΔW* = λ · L · M* · R. In core space Iso-C equals Core Space's ``sum`` + ``isotropize: true``;
dense Iso-C/CTS are well defined only when rank(Σ) = min(d_out, d_in) (N·r ≥ min(d)).

Shapes: A [N, r, d_in], B [N, d_out, r] -> A' [R, d_in], B' [d_out, R], R = out_rank or N·r.
Hyper-parameters: ``space`` = 'core', ``common_space_fraction`` = 0.0 (Iso-C; the reference's
Iso-CTS default is 0.8), ``out_rank`` = 0 (N·r), ``lam`` = 1.0 (multiplies ΔW* once).
Reference reproduced: danielm1405/iso-merging @ d34010a ``src/utils/iso.py`` (``iso_c``,
``iso_cts``) in full space; core-space-merging @ 85176fa ``isotropize`` in core space;
fixtures lora_native v05, v14 (core), v12, v13 (full, informational).
Fast route (from the factors) vs :func:`reference` (dense float64): equal to float64 round-off.
"""
from __future__ import annotations

import torch

from ..spaces import dense_in_space, out_rank, polar, run_in_space, space_params, svd, task_sum
from .registry import LAMBDA_UPDATE, ModuleContext, Param, register


def iso_merge(X: torch.Tensor, p: dict) -> torch.Tensor:
    """Iso-C / Iso-CTS on X [N, p, q] -> [p, q] (module docstring)."""
    f = p["common_space_fraction"]
    total = task_sum(X, p)
    u, s, vh = svd(total)
    if f == 0:
        return u @ (s.mean() * vh)
    n, m = X.shape[0], min(X.shape[1:])
    kc = int(m * f)
    t = round((m - kc) / n) * n
    kc, kt = m - t, t // n
    uc = u[:, :kc]
    us, ss, vs = [], [], []
    for i in range(n):
        ui, si, vi = svd(X[i] - uc @ (uc.T @ X[i]))
        us.append(ui[:, :kt]), ss.append(si[:kt]), vs.append(vi[:kt])
    U = torch.cat(us + [uc], dim=1)  # [p, m]
    S = torch.cat(ss + [s[:kc]])  # [m]
    V = torch.cat(vs + [vh[:kc]], dim=0)  # [m, q]
    return polar(U) @ (S.mean() * polar(V))


def reference(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext | None = None) -> torch.Tensor:
    """Dense float64 ΔW* [d_out, d_in]: Iso-C / Iso-CTS in the space built from dense SVDs."""
    return dense_in_space(A, B, p, iso_merge)


@register(paper="Marczak et al., 'No Task Left Behind: Isotropic Model Merging with Common and Task-Specific "
          "Subspaces', ICML 2025; https://arxiv.org/abs/2502.04959",
          params=[*space_params(), Param("common_space_fraction", 0.0, "Iso-CTS's f (0: Iso-C)", float, 0.0, 1.0,
                                         open_high=True), LAMBDA_UPDATE],
          presets={"iso_cts": {"common_space_fraction": 0.8}}, reference=reference, update_rank=out_rank)
def iso_c(A, B, p, ctx):
    """Iso-C / Iso-CTS: isotropic spectrum of the summed update, in core/knots/full space"""
    return run_in_space(A, B, p, iso_merge)
