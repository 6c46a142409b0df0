"""LoRA-native merge spaces: each task's update expressed in a small basis built from the
stacked factors, a rule applied there, the result written back as a rank-N·r LoRA.

For one module with A [N, r, d_in] and B [N, d_out, r] (task scaling already in B, or common
to all tasks and restored by the output config), ΔW_n = B_n A_n. Every space is a triple
(L, X, R) with ΔW_n = L · X_n · R and the merged update ΔW* = L · rule(X_1..X_N) · R:

- ``core`` (Core Space, Panariello et al., NeurIPS 2025; apanariello4/core-space-merging
  ``get_core_matrices``): B_cat = [B_1 | … | B_N] (d_out × N·r), A_cat = [A_1; …; A_N]
  (N·r × d_in); L = U_B = left singular vectors of B_cat (d_out × c_out), R = V_A = right
  singular vectors of A_cat as rows (c_in × d_in), X_n = M_n = (U_Bᵀ B_n)(A_n V_Aᵀ)
  (c_out × c_in), c_out = min(d_out, N·r), c_in = min(d_in, N·r). The singular vectors
  themselves (not any orthonormal basis of the span) are used: core TIES depends on them.
- ``knots`` (KnOTS, Stoica et al., ICLR 2025, as core-space-merging's merge_space='knots'):
  SVD of [ΔW_1 | … | ΔW_N] = U diag(S) [V_1 … V_N] computed from the factors (SVD of B_cat,
  thin QR of each A_nᵀ, SVD of a c_out × N·r core); components with S ≤ 1e-5 dropped;
  L = U diag(S) applied after the rule, X_n = V_n (k × d_in), R = identity.
- ``full``: X_n = ΔW_n dense (d_out × d_in); for references and small shapes only.

No d_out × d_in matrix is formed outside ``full``: the largest objects are the stacks
(d_out × N·r, N·r × d_in), the cores ((N·r)² per task) and the KnOTS blocks (k × d_in).
Output (:func:`to_factors`): B' = λ · L · M*, A' = R (core), rank c_in padded with zero rows to
N·r; ``out_rank`` = R_out keeps the best rank-R_out approximation of ΔW* exactly (an SVD of
the core, since L and R are orthonormal); in ``full`` space the SVD of the dense ΔW* is kept
to rank R_out (exact whenever rank(ΔW*) ≤ R_out).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .errors import MergeInputError
from .methods.registry import Param

SPACES = ("core", "knots", "full")
KNOTS_MIN_SINGULAR = 1e-5  # the reference's absolute threshold


def space_params(default: str = "core", with_factors: bool = False) -> list[Param]:
    """``space`` and ``out_rank`` parameters of the update-level rules."""
    choices = (("factors",) if with_factors else ()) + SPACES
    return [Param("space", default, "merge space: " + "|".join(choices) + " ('factors': per-factor, rank r)",
                  str, choices=choices),
            Param("out_rank", 0, "rank of the written adapter (0: N·r); a smaller value keeps the best "
                  "rank-R approximation of ΔW*", int, low=0)]


def out_rank(n: int, r: int, p: dict) -> int | None:
    """Rank of the written adapter for update-level parameters (None: a per-factor route)."""
    if p.get("space", "core") == "factors":
        return None
    return p["out_rank"] or n * r


@dataclass
class Space:
    """ΔW_n = L · X_n · R: L [d_out, a] or None (identity), X [N, a, b], R [b, d_in] or None;
    ``post`` [a] (KnOTS's S) multiplies the rule's result row-wise before L."""

    L: torch.Tensor | None
    X: torch.Tensor
    R: torch.Tensor | None
    post: torch.Tensor | None = None


def _stacks64(A: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return A.double(), B.double()  # [N, r, d_in], [N, d_out, r]


def core_space(A: torch.Tensor, B: torch.Tensor) -> Space:
    """Core Space bases and cores from the factors (float64)."""
    A, B = _stacks64(A, B)
    n, d_out, r = B.shape
    b_cat = B.permute(1, 0, 2).reshape(d_out, n * r)  # [d_out, N·r]
    a_cat = A.reshape(n * r, -1)  # [N·r, d_in]
    U = torch.linalg.svd(b_cat, full_matrices=False).U  # [d_out, c_out]
    V = torch.linalg.svd(a_cat, full_matrices=False).Vh  # [c_in, d_in]
    M = (U.T @ B) @ (A @ V.T)  # [N, c_out, r] @ [N, r, c_in] -> [N, c_out, c_in]
    return Space(U, M, V)


def knots_space(A: torch.Tensor, B: torch.Tensor) -> Space:
    """KnOTS's SVD of [ΔW_1 | … | ΔW_N] from the factors (float64)."""
    A, B = _stacks64(A, B)
    n, d_out, r = B.shape
    b_cat = B.permute(1, 0, 2).reshape(d_out, n * r)  # [d_out, N·r]
    ub, sb, wbh = torch.linalg.svd(b_cat, full_matrices=False)  # [d_out, c], [c], [c, N·r]
    qs, rs = torch.linalg.qr(A.transpose(1, 2))  # A_nᵀ = Q_n R_n: [N, d_in, q], [N, q, r]
    q = qs.shape[2]
    blocks = torch.block_diag(*[rn.T for rn in rs])  # blockdiag(R_nᵀ): [N·r, N·q]
    core = (sb[:, None] * wbh) @ blocks  # [c, N·q]
    p_, s, hh = torch.linalg.svd(core, full_matrices=False)  # [c, k], [k], [k, N·q]
    keep = s > KNOTS_MIN_SINGULAR
    p_, s, hh = p_[:, keep], s[keep], hh[keep]
    V = torch.stack([hh[:, i * q:(i + 1) * q] @ qs[i].T for i in range(n)])  # [N, k, d_in]
    return Space(ub @ p_, V, None, post=s)


def full_space(A: torch.Tensor, B: torch.Tensor) -> Space:
    """Dense task vectors (d_out × d_in each): reference and small shapes only."""
    A, B = _stacks64(A, B)
    return Space(None, B @ A, None)  # [N, d_out, d_in]


def make_space(name: str, A: torch.Tensor, B: torch.Tensor) -> Space:
    return {"core": core_space, "knots": knots_space, "full": full_space}[name](A, B)


def to_factors(sp: Space, merged: torch.Tensor, rank: int, lam: float,
               truncate: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """ΔW* = λ · L · (post ⊙ merged) · R as float64 factors (A' [rank, d_in], B' [d_out, rank]).

    Without ``truncate`` the factors are exact (B' = L·M*, A' = R; KnOTS: B' = L·diag(S),
    A' = M*) and padded with zeros to ``rank``; with it (or in full space) the best rank-
    ``rank`` approximation, from an SVD of the small middle factor (L, R orthonormal)."""
    m = merged if sp.post is None else sp.post[:, None] * merged  # [a, b]
    if truncate or m.shape[0] > rank and m.shape[1] > rank or (sp.L is None and sp.R is None):
        P, S, Qh = torch.linalg.svd(m, full_matrices=False)
        k = min(rank, S.numel())
        b, a = P[:, :k] * S[:k], Qh[:k]  # [a, k], [k, b]
    elif sp.R is None:  # KnOTS: A' = the merged blocks
        b, a = torch.eye(m.shape[0], dtype=m.dtype), m
    else:
        b, a = m, torch.eye(m.shape[1], dtype=m.dtype)
    b = b if sp.L is None else sp.L @ b  # [d_out, k]
    a = a if sp.R is None else a @ sp.R  # [k, d_in]
    if a.shape[0] > rank:
        raise MergeInputError(f"merged update has rank {a.shape[0]} > out_rank {rank}")
    pad = rank - a.shape[0]
    a = torch.cat([a, a.new_zeros(pad, a.shape[1])])
    b = torch.cat([b, b.new_zeros(b.shape[0], pad)], dim=1)
    return a.contiguous(), (lam * b).contiguous()  # float64: the written adapter keeps float64


def run_in_space(A: torch.Tensor, B: torch.Tensor, p: dict, merge: Callable[[torch.Tensor, dict], torch.Tensor]):
    """The fast route of an update-level rule: space, rule on the X_n, factors out."""
    n, r = A.shape[0], A.shape[1]
    sp = make_space(p["space"], A, B)
    merged = merge(sp.X, p)  # [a, b]
    rank = out_rank(n, r, p)
    return to_factors(sp, merged, rank, p["lam"], truncate=bool(p["out_rank"]))


def dense_in_space(A: torch.Tensor, B: torch.Tensor, p: dict, merge: Callable[[torch.Tensor, dict], torch.Tensor]):
    """The plain reference: dense float64 task vectors, the space's bases from dense SVDs
    (core: the stacks' singular vectors; knots: SVD of [ΔW_1 | … | ΔW_N]), the rule, the dense
    ΔW* = λ·L·M*·R and, with out_rank (or in full space), its best rank-R approximation."""
    A, B = _stacks64(A, B)
    n, d_out, r = B.shape
    dW = [B[i] @ A[i] for i in range(n)]  # N × [d_out, d_in]
    space = p["space"]
    if space == "core":
        U = torch.linalg.svd(torch.cat(list(B), dim=1), full_matrices=False).U
        V = torch.linalg.svd(torch.cat(list(A), dim=0), full_matrices=False).Vh
        delta = U @ merge(torch.stack([U.T @ d @ V.T for d in dW]), p) @ V
    elif space == "knots":
        U, S, Vh = torch.linalg.svd(torch.cat(dW, dim=1), full_matrices=False)
        keep = S > KNOTS_MIN_SINGULAR
        U, S, Vh = U[:, keep], S[keep], Vh[keep]
        blocks = torch.stack([Vh[:, i * A.shape[2]:(i + 1) * A.shape[2]] for i in range(n)])
        delta = U @ (S[:, None] * merge(blocks, p))
    else:
        delta = merge(torch.stack(dW), p)
    if p["out_rank"] or space == "full":
        P, S, Qh = torch.linalg.svd(delta, full_matrices=False)
        k = out_rank(n, r, p)
        delta = (P[:, :k] * S[:k]) @ Qh[:k]
    return p["lam"] * delta


# ---- rules on the X_n (shared by the rule files) -------------------------------------------

def svd(x: torch.Tensor):
    return torch.linalg.svd(x, full_matrices=False)


def polar(x: torch.Tensor) -> torch.Tensor:
    """The orthogonal factor U Vᵀ of x's thin SVD."""
    u, _, vh = svd(x)
    return u @ vh


def task_sum(X: torch.Tensor, p: dict) -> torch.Tensor:
    """Σ_n X_n, in task order."""
    return sum(X[i] for i in range(X.shape[0]))


def ties_entries(X: torch.Tensor, density: float) -> torch.Tensor:
    """TIES on the flattened X_n as core-space-merging's ``ties_merging`` (topK = 100·density):
    k = D − int(D·K), τ_n = k-th smallest |X_n|, keep |X_n| ≥ τ_n (int(D·K)+1 entries);
    γ = sign(Σ_n T_n), 0 → sign(Σ γ); mean of the entries with the elected sign."""
    n = X.shape[0]
    flat = X.reshape(n, -1)  # [N, D]
    d = flat.shape[1]
    k = d - int(d * density)
    if k >= 1:
        tau = flat.abs().kthvalue(k, dim=1).values  # [N]
        flat = torch.where(flat.abs() >= tau[:, None], flat, 0.0)
    gamma = torch.sign(flat.sum(0))
    gamma = torch.where(gamma == 0, torch.sign(gamma.sum()), gamma)
    agree = ((flat > 0) & (gamma > 0)) | ((flat < 0) & (gamma < 0))
    out = (flat * agree).sum(0) / agree.sum(0).clamp(min=1)
    return out.reshape(X.shape[1:])


class SpaceRoute:
    """The update-level route of a per-factor baseline (task_arithmetic, ties): ``merge(X, p)``
    run in ``p['space']``; plugged in by :func:`robustmerge.methods.registry.per_factor`."""

    params = space_params("factors", with_factors=True)

    def __init__(self, merge: Callable[[torch.Tensor, dict], torch.Tensor]):
        self.merge = merge

    def rule(self, A, B, p, ctx):
        return run_in_space(A, B, p, self.merge)

    def reference(self, A, B, p, ctx=None):
        return dense_in_space(A, B, p, self.merge)

    @staticmethod
    def update_rank(n: int, r: int, p: dict) -> int | None:
        return out_rank(n, r, p)


def ties_in_space(X: torch.Tensor, p: dict) -> torch.Tensor:
    """TIES on the space's X_n with K = ``density`` (:func:`ties_entries`)."""
    return ties_entries(X, p["density"])
