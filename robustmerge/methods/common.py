"""Tensor helpers shared by the rules: the one selection primitive (:func:`kth_smallest`, with
its reference :func:`kth_smallest_reference`), magnitude masks and pruning, task-order sums."""
from __future__ import annotations

import math

import torch


def kth_index(numel: int, keep: float) -> int:
    """k (1-based) of the threshold that keeps the top ``keep`` share of ``numel`` entries:
    ``int(numel * (1 - keep))`` in double precision, as the released code computes it
    (it can be one below the exact floor, e.g. int(90 * (1 - 0.3)) = 62)."""
    return int(numel * (1 - keep))


def kth_smallest(x: torch.Tensor, k: int) -> torch.Tensor:
    """The selection primitive: the k-th smallest value (1-based) of each row.

    Contract: ``x: [..., D]`` (any float dtype, any device), ``1 <= k <= D`` ->
    ``[...]`` in x's dtype, equal to :func:`kth_smallest_reference` (``sort`` then index
    ``k - 1``) and to ``x.kthvalue(k, dim=-1).values`` for every input without NaN (a zero
    may come back as +0.0 where kthvalue gives -0.0; the two compare equal). Every rule's
    threshold, order statistic and top-k share comes from here.

    Routes (all exact; the choice only changes the speed):
      * 16-bit floats whose sign bits are all clear (magnitudes): one counting pass per row.
        Non-negative 16-bit floats order like their int16 bit patterns and there are only
        32768 of those, so a histogram's cumulative count finds the k-th value (``bincount``
        itself refuses a row with a set sign bit; such rows take the routes below).
      * rows longer than 16·1024: a seeded random sample brackets the k-th value, one pass
        keeps the entries on the bracket's smaller side and the candidates inside the bracket
        are searched (when the bracket misses, rare, the full ``kthvalue`` runs).
      * otherwise ``kthvalue``.
    """
    flat = x.reshape(-1, x.shape[-1])  # [M, D]
    if is_16bit_float(flat):
        try:
            bits = [_kth_nonneg16(row, k) for row in flat.view(torch.int16)]  # M bit patterns
        except RuntimeError:  # bincount refuses negative bit patterns (signed values): the general route
            pass
        else:
            return torch.tensor(bits, dtype=torch.int16, device=x.device).view(x.dtype).reshape(x.shape[:-1])
    if flat.shape[1] > _BRACKET_MIN:
        return torch.stack([_kth_bracketed(row, k) for row in flat]).reshape(x.shape[:-1])
    return flat.kthvalue(k, dim=-1).values.reshape(x.shape[:-1])


def kth_smallest_reference(x: torch.Tensor, k: int) -> torch.Tensor:
    """What :func:`kth_smallest` computes, read off a full sort: x [..., D] -> [...]."""
    return x.sort(dim=-1).values[..., k - 1]


_BRACKET_MIN = 16 * 1024  # rows longer than this take the sampled bracket


def _kth_nonneg16(bits: torch.Tensor, k: int) -> int:
    """k-th smallest of the non-negative int16 bit patterns ``bits`` [D], as a bit pattern."""
    cum = torch.bincount(bits, minlength=1 << 15).cumsum(0)
    return int(torch.searchsorted(cum, torch.tensor(k, device=cum.device)))


def _kth_bracketed(v: torch.Tensor, k: int, sample: int = 1024) -> torch.Tensor:
    """k-th smallest of a long row v [D] through a sampled bracket (see :func:`kth_smallest`)."""
    n = v.numel()
    gen = torch.Generator(device=v.device).manual_seed(n * 31 + k)
    probe = v[torch.randint(0, n, (sample,), generator=gen, device=v.device)].sort().values
    p = k / n
    margin = int(4 * math.sqrt(sample * p * (1 - p))) + 8
    lo = probe[max(0, int(p * sample) - margin)]
    hi = probe[min(sample - 1, int(p * sample) + margin)]
    if 2 * k > n:
        side = v[v >= lo]  # the entries from the lower bracket up
        cand = side[side <= hi]
        below = n - side.numel()
    else:
        side = v[v <= hi]  # the entries up to the upper bracket
        cand = side[side >= lo]
        below = side.numel() - cand.numel()
    if below < k <= below + cand.numel():
        return cand.kthvalue(k - below).values
    return v.kthvalue(k).values


def work_dtype(x: torch.Tensor) -> torch.dtype:
    """The arithmetic dtype of the references: float64 for float64 inputs, else float32 (the
    fast routes' and the released code's accumulation dtype)."""
    return torch.promote_types(x.dtype, torch.float32)


def is_16bit_float(x: torch.Tensor) -> bool:
    """bfloat16 or float16: the dtypes whose rules work on int16 bit patterns."""
    return x.dtype.is_floating_point and x.element_size() == 2


def prune_reference(x: torch.Tensor, keep: float) -> torch.Tensor:
    """Magnitude pruning as the papers write it, per task matrix of x: [N, ...]:

        x̃_n = x_n ⊙ [|x_n| >= t_n],   t_n = the k-th smallest |x_n|,  k = kth_index(numel, keep)

    (ties at the threshold are kept; k = 0 keeps everything). Same dtype as x."""
    n = x.shape[0]
    k = kth_index(x[0].numel(), keep)
    if k <= 0:
        return x.clone()
    t = kth_smallest_reference(x.abs().reshape(n, -1), k)  # [N]
    return torch.where(x.abs() >= t.view(n, *([1] * (x.dim() - 1))), x, torch.zeros((), dtype=x.dtype))


def magnitude_mask(x: torch.Tensor, keep: float, absx: torch.Tensor | None = None) -> torch.Tensor:
    """Per-task magnitude mask over all entries of each task's matrix.

    Args:
        x: [N, ...] stacked matrices (any float dtype; compared in that dtype).
        keep: share of entries to keep, in (0, 1].
        absx: ``x.abs()`` when the caller has it already.
    Returns:
        bool [N, ...]: ``|x| >= t_n`` with ``t_n`` the k-th smallest ``|x_n|``,
        k = :func:`kth_index` (ties at the threshold are kept; k = 0 keeps everything).
    """
    absx = x.abs() if absx is None else absx
    n = x.shape[0]
    flat = absx.reshape(n, -1)  # [N, D]
    k = kth_index(flat.shape[1], keep)
    if k <= 0:
        return torch.ones_like(x, dtype=torch.bool)
    thresh = kth_smallest(flat, k).view([n] + [1] * (x.dim() - 1))  # [N, 1, ...]
    if is_16bit_float(flat):  # compare bit patterns: the same order, and cheaper
        return absx.view(torch.int16) >= thresh.view(torch.int16)
    return absx >= thresh


def magnitude(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """|x|, bit-identical to ``x.abs()`` (16-bit floats: the sign bit cleared, which is
    cheaper), written into ``out`` (same shape and dtype) when given."""
    if is_16bit_float(x):
        bits = torch.bitwise_and(x.view(torch.int16), 0x7FFF, out=None if out is None else out.view(torch.int16))
        return bits.view(x.dtype)
    return torch.abs(x, out=out)


def prune_by_magnitude(x: torch.Tensor, keep: float) -> torch.Tensor:
    """Magnitude-prune each task matrix of x: [N, ...]: x̃ = x ⊙ :func:`magnitude_mask` (x, keep),
    bit for bit (kept entries and the sign of zeros unchanged, pruned entries +0).

    16-bit floats take an all-integer route on the bit patterns, in one new buffer: |x| =
    bits & 0x7FFF, the threshold t_n from a histogram, then in place the keep mask
    ((t_n - 1 - |x|) >> 15, all ones where |x| >= t_n) ANDed with the bits. ``x̃`` may be
    ``x`` itself when nothing is pruned.
    """
    if not is_16bit_float(x):
        return apply_mask(x, magnitude_mask(x, keep))
    n = x.shape[0]
    k = kth_index(x[0].numel(), keep)
    if k <= 0:
        return x
    mag = magnitude(x)  # |x| for now; [N, ...]
    t = kth_smallest(mag.reshape(n, -1), k).view(torch.int16) - 1  # t_n - 1 >= -1: t_n - 1 - |x| cannot overflow
    out = mag.view(torch.int16)
    out.neg_().add_(t.view(n, *([1] * (x.dim() - 1)))).bitwise_right_shift_(15)  # the keep mask
    return out.bitwise_and_(x.view(torch.int16)).view(x.dtype)


def ordered_sum(x: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """Σ_n λ·x_n of x: [N, ...] in float32, accumulated in task order with the rounding of
    the released code (each λ·x_n rounded to float32, then added).

    The accumulator starts at +0 as the released code's did (so zeros come out as +0.0).
    When λ is a power of two (or 1) scaling commutes with rounding, so the sum is taken
    first and scaled once, in place.
    """
    exact = lam != 0 and math.frexp(lam)[0] == 0.5
    acc = torch.zeros(x.shape[1:], dtype=torch.float32, device=x.device)
    for n in range(x.shape[0]):
        acc.add_(x[n] if exact else x[n].to(torch.float32, copy=True).mul_(lam))
    return acc.mul_(lam) if exact and lam != 1 else acc


def apply_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero the entries outside ``mask``, keeping the dtype."""
    return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))


def minmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """(x - min) / (max - min) along ``dim``; 0 where the range is 0 (x - min is 0 there)."""
    lo, hi = torch.aminmax(x, dim=dim, keepdim=True)
    span = hi - lo
    return (x - lo).div_(torch.where(span > 0, span, 1))


class StreamingKth:
    """:func:`kth_smallest` of the |values| of a stream of tensors (e.g. every module of a
    model), without concatenating them: two passes, O(65536) memory plus one bucket.

    Non-negative float32 values order like their int32 bit patterns, so pass 1 counts the
    values per bucket of the top 16 bits, and pass 2 collects the bucket that holds the
    k-th value, which :func:`kth_smallest` selects within it.
    """

    BITS = 15  # int32 >> 15 leaves 16 bits for the bucket (sign bit is 0)

    def __init__(self) -> None:
        self.hist = torch.zeros(1 << 16, dtype=torch.int64)
        self.bucket: int | None = None
        self.below = 0
        self.chunks: list[torch.Tensor] = []

    @staticmethod
    def _bits(x: torch.Tensor) -> torch.Tensor:
        return x.detach().abs().float().reshape(-1).cpu().view(torch.int32)

    def count(self, x: torch.Tensor) -> None:
        """Pass 1: add a tensor's values to the histogram."""
        self.hist += torch.bincount(self._bits(x) >> self.BITS, minlength=1 << 16)

    def locate(self, k: int) -> None:
        """Between passes: find the bucket that holds the k-th smallest value (1-based)."""
        cum = self.hist.cumsum(0)
        self.k = k
        self.bucket = int(torch.searchsorted(cum, torch.tensor(k)))
        self.below = int(cum[self.bucket - 1]) if self.bucket > 0 else 0
        self.chunks = []

    def collect(self, x: torch.Tensor) -> None:
        """Pass 2: keep the values that fall in the located bucket."""
        bits = self._bits(x)
        self.chunks.append(bits[(bits >> self.BITS) == self.bucket])

    def value(self) -> float:
        """The k-th smallest |value| (float32)."""
        vals = torch.cat(self.chunks).view(torch.float32)
        return float(kth_smallest(vals, self.k - self.below))
