"""RobustMerge (Zeng et al., NeurIPS 2025), on LoRA factors.

Paper, Eq. 2-5 / Algorithm 1, for one module with task factors ``A_n: [r, d_in]``,
``B_n: [d_out, r]``:

1. prune each matrix by magnitude (Eq. 2):   Ã_n = M(A_n) ⊙ A_n,  B̃_n = M(B_n) ⊙ B_n
2. complementary scaling from A (Eq. 3):      S_n[i] = Σ_j |A_n[i,j]| / Σ_j |Ã_n[i,j]|
   (released code only) clamp from below:    Ŝ_n = max(S_n, sort(S_n)[⌊r·(1-c)⌋])
3. cross-task normalisation (Eq. 4):          S̃_n[i] = Ŝ_n[i] / Σ_k Ŝ_k[i]
4. merge (Eq. 5):                             B* = λ_B Σ_n B̃_n diag(S̃_n),   A* = λ_A Σ_n Ã_n

``lambda_on='both'`` (released code): λ_A = λ_B = λ, so the update ΔW* = B*A* carries λ²;
``lambda_on='product'`` (paper): λ_A = 1, λ_B = λ.

Presets:
    official: keep=0.2, clamp_ratio=0.2, lam=2, lambda_on=both, s_dtype=stored — bit-compatible
              with the authors' released merge (summed and divided in the released order).
    paper:    keep=0.2, clamp_ratio=1 (no clamp), lam=2, lambda_on=product, s_dtype=float32.

Ablations (paper Tables 6 and 7), selected with ``variant`` (all other steps unchanged):
    full:          the method as above.
    no_prune_scale: no pruning and no scaling: Task Arithmetic on the factors (Table 6 row 1).
    prune_only:    prune, no scaling: A* = λ_A Σ_n Ã_n, B* = λ_B Σ_n B̃_n (Table 7 "no adaptation").
    no_norm:       prune & scale, S̃_n = Ŝ_n without the cross-task normalisation (Table 6 row 2):
                   B* = λ_B Σ_n B̃_n diag(Ŝ_n).
    scale_a_from_a: S from A applied to A, rows: A* = λ_A Σ_n diag(S̃_n) Ã_n, B* = λ_B Σ_n B̃_n (Table 7).
    scale_b_from_b: S from B's columns applied to B: S_n[i] = Σ_o |B_n[o,i]| / Σ_o |B̃_n[o,i]|,
                   B* = λ_B Σ_n B̃_n diag(S̃_n), A* = λ_A Σ_n Ã_n (Table 7).
    scale_both:    S_A from A applied to A and S_B from B applied to B (Table 7).
    (inter-parameter, the method itself, is ``full``: S from A applied to B.)

Rows whose whole mass is pruned (S = inf in the released code, which then writes NaN) get
the task's largest finite S; rows that are zero before pruning (rank padding) get S = 0.

Shapes: A [N, r, d_in], B [N, d_out, r] (stored dtype) -> A* [r, d_in], B* [d_out, r] float32.
Hyper-parameters (defaults): ``keep`` = 0.2, ``clamp_ratio`` = 0.2, ``lam`` = 2.0,
``lambda_on`` = 'both', ``s_dtype`` = 'stored', ``variant`` = 'full'; default preset ``official``.

Reference implementation reproduced: the authors' released merge,
``load_and_merge_pretrained_model`` in llava/model/builder.py of AuroraZengfh/RobustMerge @
1212802; its outputs are ``fixtures/official_merge/case_*`` (the ``official`` preset matches
them bit for bit, tests/test_merge_official.py; its arithmetic is written out in that folder's
README). :func:`reference` is the same merge written plainly (sort-based thresholds, Python
sums in task order, S and its normalising sum in ``s_dtype`` as released); the fast route
:func:`robustmerge` equals it bit for bit on float32 and 16-bit inputs, every variant.
"""
from __future__ import annotations

import logging

import torch

from .common import magnitude, ordered_sum, prune_by_magnitude, prune_reference, work_dtype
from .registry import LAMBDA_ON, ModuleContext, Param, lambdas, register

log = logging.getLogger(__name__)

VARIANTS = ("full", "no_prune_scale", "prune_only", "no_norm", "scale_a_from_a", "scale_b_from_b", "scale_both")


def complementary_scale(abs_x: torch.Tensor, abs_kept: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Eq. 3: S[n, i] = Σ_j |x[n, i, j]| / Σ_j |x̃[n, i, j]|, each sum and the division in
    ``dtype`` (the released code sums in the stored dtype). The division and its edge rules
    are :func:`scale_from_sums`, which the fast route shares.

    Args:
        abs_x, abs_kept: [N, r, D], the magnitudes before and after pruning.
    Returns:
        [N, r] in ``dtype``; 0 for all-zero rows, the task's largest finite value for rows
        that lost all their mass.
    """
    return scale_from_sums(abs_x.sum(-1, dtype=dtype), abs_kept.sum(-1, dtype=dtype))


def scale_from_sums(total: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
    """Eq. 3 from its row sums [N, r] (Σ_j |x|, Σ_j |x̃|): S = total / kept, 0 for all-zero
    rows, the task's largest finite S for rows that lost all their mass."""
    s = total / kept
    lost = (kept == 0) & (total > 0)
    if lost.any():
        log.warning("%d rank rows lost all mass to pruning; they take their task's largest finite S", int(lost.sum()))
        finite_max = torch.where(torch.isfinite(s), s, torch.zeros_like(s)).amax(-1, keepdim=True)
        s = torch.where(lost, finite_max.expand_as(s), s)
    return torch.where(total == 0, torch.zeros_like(s), s)


def _scale_of_rows(x: torch.Tensor, x_pruned: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """:func:`complementary_scale` of x: [N, r, D] and its pruned x̃ for the fast route: one
    scratch buffer holds both magnitudes in turn (16-bit: sign bits cleared)."""
    scratch = magnitude(x)
    total = scratch.sum(-1, dtype=dtype)  # [N, r], accumulated and returned in dtype (no upcast copy)
    return scale_from_sums(total, magnitude(x_pruned, out=scratch).sum(-1, dtype=dtype))


def s_dtype_of(x: torch.Tensor, p: dict) -> torch.dtype:
    """The dtype the reference computes S in: the stored one ('stored', released) or its
    arithmetic dtype (float32; float64 for float64 inputs)."""
    return x.dtype if p["s_dtype"] == "stored" else work_dtype(x)


def per_task_step(A: torch.Tensor, B: torch.Tensor, p: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-task step before merging, plainly (Eq. 2-3 and the released clamp):

        Ã_n = M(A_n) ⊙ A_n,  B̃_n = M(B_n) ⊙ B_n,  Ŝ_n = clamp(Σ_j|A_n[i,j]| / Σ_j|Ã_n[i,j]|)

    Args:
        A: [N, r, d_in], B: [N, d_out, r]; p: the rule's parameters (keep, clamp_ratio, s_dtype).
    Returns:
        Ã [N, r, d_in], B̃ [N, d_out, r] (input dtype), Ŝ [N, r] (in :func:`s_dtype_of`).
    """
    A_p, B_p = prune_reference(A, p["keep"]), prune_reference(B, p["keep"])  # Eq. 2
    s = clamp_low(complementary_scale(A.abs(), A_p.abs(), s_dtype_of(A, p)), p["clamp_ratio"])  # Eq. 3 + clamp
    return A_p, B_p, s


def reference(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext | None = None):
    """RobustMerge as the module docstring writes it, every variant, in the released order:

        A* = Σ_n λ_A Ã_n [diag(S̃_n) rows],   B* = Σ_n λ_B Ŝ_n B̃_n / Σ_k Ŝ_k   (Eq. 4-5)

    (the normalising sum of Eq. 4 factored out of Eq. 5's sum, as released; equal in exact
    arithmetic). Float64 for float64 inputs, else float32 with S in ``s_dtype``.
    """
    lam_a, lam_b = lambdas(p)
    v = p["variant"]
    if v == "no_prune_scale":
        return _weighted(A, None, lam_a, True, 1), _weighted(B, None, lam_b, True, 2)
    A_p, B_p, s_a = per_task_step(A, B, p)
    s_b = None
    if v in ("scale_b_from_b", "scale_both"):  # S from B's columns (Table 7)
        s_b = clamp_low(complementary_scale(B.abs().mT, B_p.abs().mT, s_dtype_of(B, p)), p["clamp_ratio"])
    w_a = s_a if v in ("scale_a_from_a", "scale_both") else None  # what scales A's rows
    w_b = {"full": s_a, "no_norm": s_a, "scale_b_from_b": s_b, "scale_both": s_b}.get(v)  # ... and B's columns
    return _weighted(A_p, w_a, lam_a, True, 1), _weighted(B_p, w_b, lam_b, v != "no_norm", 2)


def _weighted(X: torch.Tensor, S: torch.Tensor | None, lam: float, normalise: bool, dim: int) -> torch.Tensor:
    """Σ_n (λ S_n) ⊙ X_n [/ Σ_k S_k], S [N, r] along ``dim`` of X (1: rows, 2: columns); Σ_n λ X_n without S."""
    work = work_dtype(X)
    if S is None:
        return sum(lam * x.to(work) for x in X)
    shape = [X.shape[0], 1, 1]
    shape[dim] = S.shape[1]
    S = S.view(shape)  # [N, r, 1] or [N, 1, r]
    num = sum(x.to(work) * (lam * s.to(work)) for x, s in zip(X, S))
    if not normalise:
        return num
    den = S.sum(0)  # Σ_k S_k, in S's dtype
    return torch.where(den > 0, num / den, 0.0)


def clamp_low(s: torch.Tensor, clamp_ratio: float) -> torch.Tensor:
    """Raise each task's S to its order statistic at 0-based index ⌊r·(1-clamp_ratio)⌋ of
    the ascending sort (clamp_ratio=1: index 0, no effect). Zero rows (padding) stay 0.

    Args:
        s: [N, r].
    """
    r = s.shape[1]
    floor = s.sort(dim=-1).values[:, int(r * (1 - clamp_ratio))].unsqueeze(1)  # [N, 1]
    ceil = s.amax(dim=-1, keepdim=True)  # the released upper bound: index r-1
    return torch.where(s == 0, s, torch.clamp(s, floor, ceil))


def weighted_sum(x: torch.Tensor, s: torch.Tensor, lam: float, normalise: bool, dim: int) -> torch.Tensor:
    """λ Σ_n s_n ⊙ x_n [/ Σ_n s_n], in the released order.

    The numerator is accumulated in float32 in task order from ``(λ·s_n)·x_n`` (s and x
    upcast); the denominator is ``torch.sum`` over tasks in s's dtype. ``dim`` is the axis of
    x that s runs along (1 for rows of A [N, r, D], 2 for columns of B [N, D, r]).
    """
    shape = [x.shape[0]] + [1] * (x.dim() - 1)
    shape[dim] = s.shape[1]
    s = s.view(shape)  # [N, r, 1] or [N, 1, r]
    ls = lam * s.float()  # λ·s_n, float32
    num = torch.zeros(x.shape[1:], dtype=torch.float32, device=x.device)  # +0 start, as released
    for n in range(x.shape[0]):
        num.add_(x[n] * ls[n])  # x upcast exactly, one float32 product per entry, then one add (no FMA)
    if not normalise:
        return num
    den = torch.sum(s, dim=0)  # stored dtype, as released
    return torch.where(den > 0, num / torch.where(den > 0, den, 1), torch.zeros_like(num))


@register(
    paper="Zeng et al., 'Parameter Efficient Merging for Multimodal Large Language Models with Complementary "
    "Parameter Adaptation' (RobustMerge), NeurIPS 2025, Eq. 2-5; https://arxiv.org/abs/2502.17159",
    params=[
        Param("keep", 0.2, "share of entries kept per task matrix (the released 'mask_ratio')", float, 0.0, 1.0, open_low=True),
        Param("clamp_ratio", 0.2, "S floor at sort index ⌊r·(1-clamp_ratio)⌋; 1 disables the clamp", float, 0.0, 1.0, open_low=True),
        Param("lam", 2.0, "λ, the scale of the merge (the released 'fuse_weight')", float, low=0.0),
        LAMBDA_ON,
        Param("s_dtype", "stored", "dtype of S and its normalising sum: 'stored' (released) or 'float32'", str,
              choices=("stored", "float32")),
        Param("variant", "full", "ablation variant (paper Tables 6-7): " + ", ".join(VARIANTS), str, choices=VARIANTS),
    ],
    presets={
        "official": dict(keep=0.2, clamp_ratio=0.2, lam=2.0, lambda_on="both", s_dtype="stored"),
        "paper": dict(keep=0.2, clamp_ratio=1.0, lam=2.0, lambda_on="product", s_dtype="float32"),
        # Ablations of paper Tables 6-7: the official settings with one step changed (formulas
        # under "Ablations" in the module docstring and in docs/analysis.md).
        **{f"ablation-{name}": dict(keep=0.2, clamp_ratio=0.2, lam=2.0, lambda_on="both", s_dtype="stored",
                                    variant=variant)
           for name, variant in (("t6-no-prune-scale", "no_prune_scale"), ("t6-no-norm", "no_norm"),
                                 ("t6-full", "full"), ("t7-none", "prune_only"), ("t7-a-to-a", "scale_a_from_a"),
                                 ("t7-b-to-b", "scale_b_from_b"), ("t7-both", "scale_both"),
                                 ("t7-inter", "full"))},
    },
    default_preset="official",
    reference=reference,
)
def robustmerge(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext) -> tuple[torch.Tensor, torch.Tensor]:
    """prune A and B by magnitude, rescale B's rank columns by A's lost mass, normalise across tasks, sum

    The fast route of :func:`reference`: A [N, r, d_in], B [N, d_out, r] -> A* [r, d_in],
    B* [d_out, r] float32 (16-bit pruning on bit patterns, float32 task-order sums in place).
    """
    lam_a, lam_b = lambdas(p)
    variant = p["variant"]
    if variant == "no_prune_scale":
        return ordered_sum(A, lam_a), ordered_sum(B, lam_b)
    A_p = prune_by_magnitude(A, p["keep"])  # [N, r, d_in]
    B_p = prune_by_magnitude(B, p["keep"])  # [N, d_out, r]
    if variant == "prune_only":
        return ordered_sum(A_p, lam_a), ordered_sum(B_p, lam_b)
    dtype = A.dtype if p["s_dtype"] == "stored" else torch.float32
    s_a = s_b = None
    if variant in ("full", "no_norm", "scale_a_from_a", "scale_both"):
        s_a = clamp_low(_scale_of_rows(A, A_p, dtype), p["clamp_ratio"])  # [N, r]
    if variant in ("scale_b_from_b", "scale_both"):
        s_b = clamp_low(_scale_of_rows(B.mT, B_p.mT, dtype), p["clamp_ratio"])  # [N, r]
    if variant in ("full", "no_norm"):
        return ordered_sum(A_p, lam_a), weighted_sum(B_p, s_a, lam_b, variant == "full", dim=2)
    a_star = weighted_sum(A_p, s_a, lam_a, True, dim=1) if s_a is not None and variant != "scale_b_from_b" \
        else ordered_sum(A_p, lam_a)
    b_star = weighted_sum(B_p, s_b, lam_b, True, dim=2) if s_b is not None else ordered_sum(B_p, lam_b)
    return a_star, b_star
