"""TIES-merging (Yadav et al., NeurIPS 2023; its three steps trim, elect, disjoint merge) on
LoRA factors, applied per matrix to the A stack and the B stack separately (the scope of
``fixtures/baselines/README.md``). For X ∈ {A, B} (A [N, r, d_in], B [N, d_out, r]) with task
matrices x_n of D entries and K = ``density``; three reference codes, chosen by ``variant``:

``variant='original'`` (default) — prateeky2806/ties-merging @ 44e7891, src/utils/merge_utils.py,
``merge_methods('topk', ..., resolve_method='mass', merge_func='dis-mean')`` (``topk_values_mask``,
``resolve_sign`` + ``resolve_zero_signs(..., 'majority')``, ``disjoint_merge``); λ by the caller
(src/ties_merging.py):
  1. trim:  k = D - int(D·K), t_n = the k-th smallest |x_n| (torch.kthvalue), keep |x_n| >= t_n
            (int(D·K) + 1 entries, plus every entry tied with t_n; k = 0 keeps all)
  2. elect: s = sign(Σ_n x̂_n); entries with s = 0 get sign(Σ_entries s) (the count majority of
            the elected signs over the matrix; 0 stays 0)
  3. disjoint mean of the x̂_n that are > 0 where s > 0, < 0 otherwise (s = 0 selects the
     negatives), divided by their count (at least 1); × λ.

``variant='peft'`` — peft 0.21.2, src/peft/utils/merge_utils.py, ``ties(task_tensors, weights,
density, majority_sign_method)`` (``magnitude_based_pruning``, ``calculate_majority_sign_mask``,
``disjoint_merge``):
  1. trim:  exactly int(K·D) entries of largest |x_n| (topk; among equal |x| at the cut the
            lowest flat indices survive here — PEFT leaves that unspecified)
  2. elect: +1 where (``sign='total'``: Σ_n x̂_n; ``'frequency'``: Σ_n sign(x̂_n)) >= 0, else -1
  3. Σ_n x̂_n [sign(x̂_n) = γ] / max(1, #{n : sign(x̂_n) = γ}); a uniform weight w is λ.
  ``elect='none'`` is PEFT's ``magnitude_prune`` (the same trim, then Σ_n x̂_n; × λ).

``variant='mergekit'`` — arcee-ai/mergekit @ a6e4028, mergekit/merge_methods/
generalized_task_arithmetic.py ``GTATask.execute`` (method ``ties``, base tensor 0) with
mergekit/sparsify.py ``magnitude``: the same trim, weights before the election, consensus
``'sum'`` or ``'count'``, normalize on. With the uniform weight of this tool (w cancels under
normalize; λ = mergekit's ``lambda``) it equals ``peft`` entry for entry: ``consensus='sum'`` is
``sign='total'`` and ``'count'`` is ``'frequency'`` (fixtures/baselines README, difference 3).

Parameters a variant does not read are ignored (``sign`` is read by ``peft``, ``consensus`` by
``mergekit``, ``elect='none'`` by every variant: its trim, then the plain sum).
``trim='model'`` (variant 'original' only): t_n is the k-th smallest over all matrices of that
factor kind of task n (every A, or every B), with the original's k = D - int(D·K) for the total
D (exact, by a streaming two-pass select); election and zero-sign majority stay per matrix. A
model-scope adaptation, not a reproduction of any reference code.

Hyper-parameters: ``variant`` 'original', ``density`` 0.2 (TIES's K = 20 %), ``sign`` 'total',
``consensus`` 'sum', ``elect`` 'ties', ``trim`` 'matrix', ``lam`` 1.0, ``lambda_on`` 'both'.
Output float32 [r, d_in], [d_out, r]; sums in float32 in task order (float64 in the reference
for float64 inputs). Checked on every case of ``fixtures/baselines/ties_*`` and
``magnitude_prune_peft_k0.2`` (tests/test_baselines_fixtures.py).
Fast route vs :func:`reference`: bit for bit (trim='model' given the same thresholds in ``ctx.stats``).

``space`` = 'factors' (default, the above) | 'core' | 'knots' | 'full' (:mod:`robustmerge.spaces`):
TIES on the space's task matrices as core-space-merging's ``ties_merging`` (topK = 100·density;
keeps int(D·K)+1 entries per task, zero signs → sign of Σ γ), ``lam`` multiplies ΔW* once,
the output is a rank-N·r LoRA (``out_rank``); fixtures lora_native v02, v03 (core), v07 (knots).
"""
from __future__ import annotations

import torch

from ..errors import MergeInputError
from .common import (StreamingKth, apply_mask, is_16bit_float, kth_smallest, kth_smallest_reference, magnitude,
                     ordered_sum, work_dtype)
from .registry import ModuleContext, Param, lambdas, per_factor
from ..spaces import SpaceRoute, ties_in_space


def original_k(numel: int, density: float) -> int:
    """The original's k: ``D - int(D·K)`` (int of the double product); the k-th smallest |x| is
    the threshold, so ``D - k + 1`` entries survive without ties (k = 0: keep everything)."""
    return numel - int(numel * density)


def topk_count(numel: int, density: float) -> int:
    """PEFT's and mergekit's kept count per task: exactly ``int(density · D)``."""
    return int(density * numel)


def _election_counts(p: dict) -> bool:
    """True when the variant elects on the count of signs (peft 'frequency', mergekit 'count')."""
    return (p["variant"] == "peft" and p["sign"] == "frequency") or \
        (p["variant"] == "mergekit" and p["consensus"] == "count")


def reference(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext):
    """Trim, elect, disjoint mean (module docstring) per stack, as the chosen variant; λ_A, λ_B."""

    def trimmed(X, factor):  # [N, ...] -> trimmed [N, ...] in the work dtype
        n, D = X.shape[0], X[0].numel()
        flat = X.reshape(n, -1).to(work_dtype(X))
        if p["variant"] == "original":
            k = original_k(D, p["density"])
            if p["trim"] == "model":
                t = ctx.stats[factor].to(X.device, flat.dtype)[:, None]
            else:
                t = kth_smallest_reference(flat.abs(), k)[:, None] if k > 0 else torch.zeros(n, 1, dtype=flat.dtype)
            keep = flat.abs() >= t
        else:  # the int(K·D) largest |x|, lowest index first among equals
            order = torch.sort(-flat.abs(), dim=1, stable=True).indices[:, :topk_count(D, p["density"])]
            keep = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True)
        return torch.where(keep, flat, 0.0).reshape(X.shape)

    def merged(X, factor):  # [N, ...] -> [...]
        T = trimmed(X, factor)
        if p["elect"] == "none":
            return sum(T_n for T_n in T)
        P, M = sum(T_n.clamp(min=0) for T_n in T), sum(T_n.clamp(max=0) for T_n in T)
        n_pos, n_neg = (T > 0).sum(0), (T < 0).sum(0)
        if p["variant"] == "original":
            s = torch.sign(P + M)
            s = torch.where(s != 0, s, torch.sign(s.sum()))  # zero signs: count majority (0 stays 0)
            up = s > 0
        else:
            up = (n_pos - n_neg if _election_counts(p) else P + M) >= 0
        return torch.where(up, P / n_pos.clamp(min=1), M / n_neg.clamp(min=1))

    lam_a, lam_b = lambdas(p)
    return lam_a * merged(A, "A"), lam_b * merged(B, "B")


def ties_combine(x: torch.Tensor, p: dict) -> torch.Tensor:
    """Elect signs and take the disjoint mean of trimmed x: [N, ...] -> [...] (float32).

    With P = Σ_n max(X̂_n, 0) and M = Σ_n min(X̂_n, 0) (float32, task order), the elected
    sign is that of P + M (or of #positive - #negative for the count elections) and the
    disjoint mean is P / #positive or M / #negative.
    """
    count = torch.int16 if x.shape[0] < (1 << 15) else torch.int32
    if is_16bit_float(x):  # split the signs on the bit patterns
        bits = x.view(torch.int16)
        neg_bits = bits & (bits >> 15)  # the entries with a set sign bit, 0 elsewhere
        pos, neg = (bits - neg_bits).view(x.dtype), neg_bits.view(x.dtype)
        n_pos = (bits > 0).sum(0, dtype=count)
        n_neg = (-bits > 0).sum(0, dtype=count)  # bits in [-32767, -1]: -0.0 (-32768) is not negative
    else:
        pos, neg = x.clamp(min=0), x.clamp(max=0)
        n_pos, n_neg = (x > 0).sum(0, dtype=count), (x < 0).sum(0, dtype=count)
    P, M = ordered_sum(pos), ordered_sum(neg)
    total = P + M
    if p["variant"] == "original":
        majority = int((total > 0).sum()) - int((total < 0).sum())  # Σ sign(total) over the matrix
        up = (total > 0) | ((total == 0) & (majority > 0))
    elif _election_counts(p):
        up = n_pos - n_neg >= 0
    else:
        up = total >= 0
    return torch.where(up, P / n_pos.clamp(min=1), M / n_neg.clamp(min=1))


def ties_trim(x: torch.Tensor, p: dict, thresholds: torch.Tensor | None) -> torch.Tensor:
    """Trim x: [N, ...] per task as the variant says (thresholds [N] given for trim='model')."""
    n, D = x.shape[0], x[0].numel()
    view = (n, *([1] * (x.dim() - 1)))
    mag = magnitude(x)  # |x| in x's dtype, [N, ...]
    if p["variant"] != "original":
        return apply_mask(x, topk_mask(mag, topk_count(D, p["density"])))
    if thresholds is not None:
        return apply_mask(x, mag.float() >= thresholds.to(x.device).view(view))
    k = original_k(D, p["density"])
    if k <= 0:
        return x
    return apply_mask(x, mag >= kth_smallest(mag.reshape(n, -1), k).view(view))


def topk_mask(mag: torch.Tensor, m: int) -> torch.Tensor:
    """bool [N, ...]: exactly the m largest of each task's mag [N, ...]; among entries equal to
    the m-th largest, the lowest flat indices (those a stable sort puts first)."""
    n, D = mag.shape[0], mag[0].numel()
    flat = mag.reshape(n, -1)  # [N, D]
    if m <= 0:
        return torch.zeros_like(mag, dtype=torch.bool)
    if m >= D:
        return torch.ones_like(mag, dtype=torch.bool)
    t = kth_smallest(flat, D - m + 1)[:, None]  # the m-th largest, [N, 1]
    above, tied = flat > t, flat == t
    room = m - above.sum(1, keepdim=True)  # how many tied entries still fit
    return (above | (tied & (tied.cumsum(1) <= room))).reshape(mag.shape)


def ties_prepare(adapters, p: dict) -> dict:
    """For trim='model': exact per-task thresholds over every A and every B of the model."""
    if p["trim"] != "model":
        return {}
    if p["variant"] != "original":
        raise MergeInputError(f"ties: trim='model' is defined for variant='original' only, not {p['variant']!r}")
    stats = {}
    for factor in ("A", "B"):
        selectors = [StreamingKth() for _ in range(adapters.n)]
        numel = 0
        for pass_no in (1, 2):
            for module in adapters.modules:
                x = adapters.factors(module)[0 if factor == "A" else 1]  # [N, ...]
                if pass_no == 1:
                    numel += x[0].numel()
                for n, sel in enumerate(selectors):
                    (sel.count if pass_no == 1 else sel.collect)(x[n])
            if pass_no == 1:
                k = original_k(numel, p["density"])
                for sel in selectors:
                    sel.locate(max(k, 1))
        k = original_k(numel, p["density"])
        stats[factor] = torch.tensor([sel.value() if k > 0 else 0.0 for sel in selectors])
    return stats


@per_factor(paper="Yadav et al., 'TIES-Merging: Resolving Interference When Merging Models', NeurIPS 2023; "
            "https://arxiv.org/abs/2306.01708",
            params=[Param("variant", "original", "reference code followed: 'original' (prateeky2806/ties-merging), "
                          "'peft' (peft merge_utils.ties) or 'mergekit' (GTATask ties)", str,
                          choices=("original", "peft", "mergekit")),
                    Param("density", 0.2, "share of entries kept per task when trimming (TIES's K)", float, 0.0, 1.0,
                          open_low=True),
                    Param("sign", "total", "variant=peft: majority sign from the summed values ('total') or the "
                          "sign count ('frequency')", str, choices=("total", "frequency")),
                    Param("consensus", "sum", "variant=mergekit: sign consensus 'sum' or 'count'", str,
                          choices=("sum", "count")),
                    Param("elect", "ties", "'ties' (elect and disjoint mean) or 'none' (trim then sum: PEFT's "
                          "magnitude_prune with variant=peft)", str, choices=("ties", "none")),
                    Param("trim", "matrix", "variant=original: trimming scope 'matrix' (per task matrix) or 'model' "
                          "(per task over all A / all B)", str, choices=("matrix", "model"))],
            reference=reference, prepare=ties_prepare, space=SpaceRoute(ties_in_space))
def ties(X: torch.Tensor, p: dict, ctx: ModuleContext, factor: str) -> torch.Tensor:
    """trim to the top-density magnitudes, elect signs, disjoint mean, scaled by λ (variant original|peft|mergekit)"""
    trimmed = ties_trim(X, p, ctx.stats.get(factor))
    if p["elect"] == "none":
        return ordered_sum(trimmed)  # [...] float32
    return ties_combine(trimmed, p)  # [...] float32
