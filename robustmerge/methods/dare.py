"""DARE (Yu et al., ICML 2024) on LoRA factors, applied per matrix to the A stack and the B
stack separately. For each task matrix X_n ∈ {A_n, B_n} (A [N, r, d_in], B [N, d_out, r]),
with a keep mask m_n (drawn, or replayed from ``mask``):

    X̂_n = m_n ⊙ X_n / (1 - p_m)                     (rescale='inverse', drop-and-rescale)
    X̂_n = m_n ⊙ X_n · ‖X_n‖₁ / ‖m_n ⊙ X_n‖₁          (rescale='l1', skipped if a norm < 1e-7)
    X̂_n = m_n ⊙ X_n                                 (rescale='none')
    X*  = λ Σ_n X̂_n                                  (then Task Arithmetic; λ placement as lambda_on)

Hyper-parameters: ``drop`` = 0.5 (p), ``rescale`` = 'inverse', ``mask`` = '' (draw),
``lam`` = 1.0, ``lambda_on`` = 'both'. Output float32 [r, d_in], [d_out, r].

Drawn masks: an entry is dropped when a uniform 15-bit integer u (:func:`uniform15`: 16-bit
lanes of a CPU generator's 64-bit draws, seeded by (seed, module, factor)) is below
L = round(p · 32768), so the drop probability is p_m = L / 32768 (0.3 → 9830/32768 =
0.2999878), and 'inverse' divides by 1 - p_m, the mask's own keep probability, which makes
the merge unbiased (E[X̂_n] = X_n exactly; dividing by the nominal 1 - p instead, as this tool
did before, biased it by |p - p_m|/(1 - p) <= 1/(65536 (1 - p)) relative, 1.7e-5 at
p = 0.3). The same output bytes for the same seed on any device, in any module order and for
any stored dtype.

Replayed masks (``mask=<file.safetensors>``): uint8 tensors ``<module>.A.keep`` [N, r, d_in]
and ``<module>.B.keep`` [N, d_out, r] (1 = kept; ``<module>`` the model's name, e.g.
``model.layers.0.self_attn.q_proj``, or the PEFT name), the layout of
``fixtures/baselines/dare_*/inputs.safetensors``; 'inverse' then divides by the nominal 1 - p,
as the references do with their own draws. The rescaled sum is accumulated in float32 in
task order (:func:`~.common.ordered_sum`).

References followed: 'inverse' — MergeLM's ``mask_input_with_mask_rate(use_rescale=True,
mask_strategy='random')`` then ``MergingMethod.task_arithmetic`` (yule-BUAA/MergeLM @ 6d49ad9,
model_merging_methods/mask_weights_utils.py, merging_methods.py; PEFT ``dare_linear`` gives
the same on the same mask); 'l1' and 'none' — mergekit's ``dare_linear`` (arcee-ai/mergekit @
a6e4028, generalized_task_arithmetic.py ``GTATask.execute``, sparsify.py
``rescaled_masked_tensor`` with RescaleNorm.l1, or rescale false), weight 1, normalize off.
Checked on ``fixtures/baselines/dare_*`` (tests/test_baselines_fixtures.py).
Fast route vs :func:`reference`: bit for bit.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import MergeInputError
from ..taskfolder import module_name
from .common import apply_mask, is_16bit_float, ordered_sum, work_dtype
from .registry import ModuleContext, Param, lambdas, per_factor

LEVELS = 1 << 15  # resolution of the drop probability
L1_EPS = 1e-7  # mergekit's rescaled_masked_tensor: no rescale when either norm is below this


def uniform15(shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """int16 [shape] on the CPU, uniform in [0, 32767]: the 16-bit lanes of 64-bit draws, sign bit cleared."""
    numel = shape.numel()
    draws = torch.empty((numel + 3) // 4, dtype=torch.int64).random_(-(1 << 63), (1 << 63) - 1, generator=gen)
    return draws.view(torch.int16)[:numel].view(shape).bitwise_and_(0x7FFF)


def drop_level(drop: float) -> int:
    """An entry is dropped iff its u < drop_level(p) = round(p · 32768) (at most 32767)."""
    return min(round(drop * LEVELS), LEVELS - 1)


def keep_probability(p: dict) -> float:
    """The keep probability the masks were drawn with: 1 - round(p·32768)/32768 for drawn
    masks, the nominal 1 - p for replayed ones."""
    return 1.0 - p["drop"] if p["mask"] else 1.0 - drop_level(p["drop"]) / LEVELS


def stored_mask(p: dict, ctx: ModuleContext, factor: str, shape: torch.Size) -> torch.Tensor:
    """bool [N, ...] keep mask of one factor from the ``mask`` file (MergeInputError if absent or misshapen)."""
    from safetensors import safe_open

    if not Path(p["mask"]).is_file():
        raise MergeInputError(f"dare: mask file {p['mask']} does not exist; give a safetensors file of keep masks")
    names = [f"{name}.{factor}.keep" for name in dict.fromkeys((module_name(ctx.module), ctx.module))]
    with safe_open(p["mask"], framework="pt") as f:
        key = next((k for k in names if k in set(f.keys())), None)
        if key is None:
            raise MergeInputError(f"dare: mask file {p['mask']} has no {names[0]!r}; it needs one "
                                  "'<module>.A.keep' and '<module>.B.keep' per module")
        keep = f.get_tensor(key)
    if keep.shape != shape:
        raise MergeInputError(f"dare: mask {key!r} in {p['mask']} has shape {list(keep.shape)}, "
                              f"the stacked factors {list(shape)}")
    return keep != 0


def keep_mask(X: torch.Tensor, p: dict, ctx: ModuleContext, factor: str) -> torch.Tensor:
    """bool [N, ...] on X's device: the replayed mask, or [u >= round(p·32768)] drawn."""
    if p["mask"]:
        return stored_mask(p, ctx, factor, X.shape).to(X.device)
    return (uniform15(X.shape, ctx.generator(factor)) >= drop_level(p["drop"])).to(X.device)


def reference(A: torch.Tensor, B: torch.Tensor, p: dict, ctx: ModuleContext):
    """A* = λ_A Σ_n rescale_n · m_A,n ⊙ A_n,  B* likewise (module docstring)."""

    def merged(X, factor):  # [N, ...] -> [...]
        kept = keep_mask(X, p, ctx, factor)
        total = 0
        for m, x in zip(kept, X):
            y = torch.where(m, x, 0.0).to(work_dtype(X))
            if p["rescale"] == "inverse":
                y = y * (1.0 / keep_probability(p))
            elif p["rescale"] == "l1":
                before, after = x.to(work_dtype(X)).abs().sum(), y.abs().sum()
                if before >= L1_EPS and after >= L1_EPS:
                    y = y * (before / after)
            total = total + y
        return total

    lam_a, lam_b = lambdas(p)
    return lam_a * merged(A, "A"), lam_b * merged(B, "B")


def dare_drop(x: torch.Tensor, drop: float, gen: torch.Generator) -> torch.Tensor:
    """x: [N, ...] with the dropped entries set to +0, in x's dtype (not rescaled)."""
    keep = uniform15(x.shape, gen).neg_().add_(drop_level(drop) - 1).bitwise_right_shift_(15).to(x.device)
    # (t - 1 - u) >> 15: all ones (-1) where u >= t, 0 where the entry is dropped
    if is_16bit_float(x):  # AND the bit patterns
        return keep.bitwise_and_(x.view(torch.int16)).view(x.dtype)
    return apply_mask(x, keep != 0)


def l1_sum(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_n y_n · ‖x_n‖₁/‖y_n‖₁ in float32, task order (a task keeps y_n where a norm < 1e-7)."""
    acc = torch.zeros(x.shape[1:], dtype=torch.float32, device=x.device)
    for x_n, y_n in zip(x, y):
        y_n = y_n.float()
        before, after = x_n.float().abs().sum(), y_n.abs().sum()
        acc.add_(y_n * (before / after) if before >= L1_EPS and after >= L1_EPS else y_n)
    return acc


@per_factor(paper="Yu et al., 'Language Models are Super Mario: Absorbing Abilities from Homologous Models as a "
            "Free Lunch' (DARE), ICML 2024; https://arxiv.org/abs/2311.03099",
            params=[Param("drop", 0.5, "drop probability p per entry (drawn masks: resolution 1/32768)", float, 0.0,
                          1.0, open_high=True),
                    Param("rescale", "inverse", "survivor rescaling: 'inverse' (1/(1-p), MergeLM), 'l1' (match each "
                          "task matrix's L1 norm, mergekit) or 'none'", str, choices=("inverse", "l1", "none")),
                    Param("mask", "", "safetensors file of keep masks '<module>.A.keep' / '<module>.B.keep' (uint8 "
                          "[N, ...]) to replay instead of drawing; '' draws", str)],
            reference=reference)
def dare(X: torch.Tensor, p: dict, ctx: ModuleContext, factor: str) -> torch.Tensor:
    """randomly drop entries with probability p, rescale (1/(1-p), L1 or none), sum scaled by λ"""
    if p["mask"]:
        dropped = apply_mask(X, stored_mask(p, ctx, factor, X.shape).to(X.device))
    else:
        dropped = dare_drop(X, p["drop"], ctx.generator(factor))  # [N, ...] in X's dtype
    if p["rescale"] == "l1":
        return l1_sum(X, dropped)  # [...] float32
    return ordered_sum(dropped, 1.0 / keep_probability(p) if p["rescale"] == "inverse" else 1.0)
