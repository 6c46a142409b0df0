"""Each merge rule against a deliberately naive reference written here (loops, float64),
plus the properties a merge must have: identical adapters, task order, kept shares, seeds."""
import itertools
import json
import math

import pytest
import torch

from robustmerge import load_adapter_set, merge, merge_to_folder
from robustmerge.methods import REGISTRY, ModuleContext, get_method
from robustmerge.methods.common import StreamingKth
from robustmerge.synthetic import LlamaShape, write_task_adapters

SHAPE = LlamaShape(layers=1, hidden=24, intermediate=40, mm_hidden=16)


def stacks(n=3, r=6, d_in=64, d_out=48, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, r, d_in, generator=g)
    B = torch.randn(n, d_out, r, generator=g) * 1e-2
    return A.to(dtype), B.to(dtype)


def run(name, A, B, preset=None, seed=0, stats=None, **params):
    m = get_method(name)
    p = m.resolve(preset, params)
    return m.rule(A, B, p, ModuleContext("m", seed, stats or {}))


# ---- naive references -----------------------------------------------------------------

def naive_prune(x, keep):
    """Keep |x| >= the k-th smallest |x| (k = int(numel·(1-keep)), 1-based), by sorting a list."""
    vals = sorted(abs(v) for v in x.flatten().tolist())
    k = int(len(vals) * (1 - keep))
    if k == 0:
        return x.clone().double()
    t = vals[k - 1]
    return torch.tensor([[v if abs(v) >= t else 0.0 for v in row] for row in x.tolist()], dtype=torch.float64)


def naive_robustmerge(A, B, keep, clamp_ratio, lam, on):
    n, r, _ = A.shape
    Ap = [naive_prune(A[i], keep) for i in range(n)]
    Bp = [naive_prune(B[i], keep) for i in range(n)]
    S = []
    for i in range(n):
        row = [sum(abs(v) for v in A[i, j].double().tolist()) / sum(abs(v) for v in Ap[i][j].tolist()) for j in range(r)]
        floor = sorted(row)[int(r * (1 - clamp_ratio))]
        S.append([max(v, floor) for v in row])
    a_star = sum(Ap) * (lam if on == "both" else 1.0)
    b_star = torch.zeros(B.shape[1:], dtype=torch.float64)
    for i in range(n):
        for j in range(r):
            b_star[:, j] += Bp[i][:, j] * S[i][j] / sum(S[k][j] for k in range(n))
    return a_star, lam * b_star


def naive_original_trim(x, density):
    """The original TIES trim: k = numel - int(numel·K), keep |x| >= the k-th smallest |x|."""
    vals = sorted(abs(v) for v in x.flatten().tolist())
    k = len(vals) - int(len(vals) * density)
    if k == 0:
        return x.clone().double()
    t = vals[k - 1]
    return torch.tensor([[v if abs(v) >= t else 0.0 for v in row] for row in x.tolist()], dtype=torch.float64)


def naive_ties(X, density):
    """The original TIES: its trim, s = sign(Σ trimmed), zero s -> sign of (#s>0 - #s<0) over
    the matrix (0 stays 0 and selects the negatives), disjoint mean."""
    n = X.shape[0]
    T = [naive_original_trim(X[i], density) for i in range(n)]
    out = torch.zeros(X.shape[1:], dtype=torch.float64)
    total = sum(T)
    count = int((total > 0).sum()) - int((total < 0).sum())
    majority = 1.0 if count > 0 else -1.0  # a tied count (0) selects the negative values
    for idx in itertools.product(*map(range, X.shape[1:])):
        s = math.copysign(1.0, total[idx]) if total[idx] != 0 else majority
        agree = [T[i][idx].item() for i in range(n) if T[i][idx] != 0 and math.copysign(1.0, T[i][idx]) == s]
        out[idx] = sum(agree) / max(1, len(agree))
    return out


def naive_pcb(X, ratio, clip):
    n = X.shape[0]
    tau = X.double().reshape(n, -1)
    d = tau.shape[1]
    out_num = torch.zeros(d, dtype=torch.float64)
    out_den = torch.zeros(d, dtype=torch.float64)
    col_sum = tau.sum(0)
    for i in range(n):
        mags = sorted(tau[i].abs().tolist())
        lo, hi = mags[int(d * clip)], mags[int(d * (1 - clip)) - 1]
        mag = [min(max(abs(v), lo), hi) for v in tau[i].tolist()]
        mn, mx = min(mag), max(mag)
        beta = [math.exp(n * ((m - mn) / (mx - mn)) ** 2) * math.tanh(tau[i, j].item() * col_sum[j].item())
                for j, m in enumerate(mag)]
        floor = sorted(beta)[min(int(d * (1 - ratio)), d - 1)]
        beta = [max(b, floor) for b in beta]
        bmn, bmx = min(beta), max(beta)
        for j in range(d):
            w = (beta[j] - bmn) / (bmx - bmn)
            out_num[j] += w * math.copysign(mag[j], tau[i, j].item())
            out_den[j] += w
    return (out_num / out_den.clamp(min=1e-12)).reshape(X.shape[1:])


# ---- rules against the naive references ----------------------------------------------

@pytest.mark.parametrize("keep,clamp_ratio,lam,on", [(0.2, 0.2, 2.0, "both"), (0.35, 1.0, 1.5, "product"), (1.0, 0.5, 1.0, "both")])
def test_robustmerge_matches_naive(keep, clamp_ratio, lam, on):
    A, B = stacks()
    a, b = run("robustmerge", A, B, keep=keep, clamp_ratio=clamp_ratio, lam=lam, lambda_on=on, s_dtype="float32")
    na, nb = naive_robustmerge(A, B, keep, clamp_ratio, lam, on)
    torch.testing.assert_close(a.double(), na, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b.double(), nb, rtol=1e-5, atol=1e-9)


def test_robustmerge_paper_preset_values():
    m = get_method("robustmerge")
    p = m.resolve("paper")
    assert (p["clamp_ratio"], p["lambda_on"], p["s_dtype"], p["lam"]) == (1.0, "product", "float32", 2.0)
    A, B = stacks(seed=5)
    a, b = run("robustmerge", A, B, preset="paper")
    na, nb = naive_robustmerge(A, B, 0.2, 1.0, 2.0, "product")
    torch.testing.assert_close(b.double(), nb, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(a.double(), na, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("lam,on", [(1.0, "both"), (0.7, "both"), (0.7, "product")])
def test_task_arithmetic_matches_naive(lam, on):
    A, B = stacks()
    a, b = run("task_arithmetic", A, B, lam=lam, lambda_on=on)
    na = sum(A[i].double() for i in range(A.shape[0])) * (lam if on == "both" else 1)
    nb = sum(B[i].double() for i in range(B.shape[0])) * lam
    torch.testing.assert_close(a.double(), na, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b.double(), nb, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("density", [0.2, 0.5, 1.0])
def test_ties_matches_naive(density):
    A, B = stacks(n=4, r=4, d_in=9, d_out=7)
    a, b = run("ties", A, B, density=density, lam=1.3)
    torch.testing.assert_close(a.double(), 1.3 * 1.3 * naive_ties(A, density) / 1.3, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(b.double(), 1.3 * naive_ties(B, density), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("ratio,clip", [(0.1, 1e-4), (0.3, 0.05), (1.0, 0.0)])
def test_pcb_matches_naive(ratio, clip):
    A, B = stacks(n=3, r=4, d_in=10, d_out=8, seed=2)
    a, b = run("pcb", A, B, ratio=ratio, clip=clip, lam=0.9, lambda_on="product")
    torch.testing.assert_close(a.double(), naive_pcb(A, ratio, clip), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(b.double(), 0.9 * naive_pcb(B, ratio, clip), rtol=1e-5, atol=1e-9)


def ref(name, A, B, preset=None, seed=0, **params):
    m = get_method(name)
    return m.reference(A, B, m.resolve(preset, params), ModuleContext("m", seed, {}))


def test_references_in_float64_match_the_naive_loops():
    """The readable references themselves, in float64, against the naive loops above (the
    fast routes equal the references bit for bit: tests/test_rule_parity.py)."""
    A, B = stacks(n=4, r=4, d_in=9, d_out=7)
    A, B = A.double(), B.double()
    close = dict(rtol=1e-12, atol=1e-15)
    A6, B6 = (x.double() for x in stacks())  # no rank row loses all its mass here
    a, b = ref("robustmerge", A6, B6, keep=0.35, clamp_ratio=0.5, lam=1.5, lambda_on="product", s_dtype="stored")
    assert a.dtype == b.dtype == torch.float64
    na, nb = naive_robustmerge(A6, B6, 0.35, 0.5, 1.5, "product")
    torch.testing.assert_close(a, na, **close)
    torch.testing.assert_close(b, nb, **close)
    a, b = ref("ties", A, B, density=0.5, lam=1.3)
    torch.testing.assert_close(a, 1.3 * naive_ties(A, 0.5), **close)
    torch.testing.assert_close(b, 1.3 * naive_ties(B, 0.5), **close)
    a, b = ref("pcb", A, B, ratio=0.3, clip=0.05, lam=0.9, lambda_on="product")
    torch.testing.assert_close(a, naive_pcb(A, 0.3, 0.05), **close)
    torch.testing.assert_close(b, 0.9 * naive_pcb(B, 0.3, 0.05), **close)
    a, b = ref("task_arithmetic", A, B, lam=0.7)
    torch.testing.assert_close(a, 0.7 * sum(A[i] for i in range(4)), **close)
    A2, B2 = (x.double() for x in stacks(n=2, r=16, d_in=200, d_out=150))
    A2[1], B2[1] = 0, 0  # only task 0 contributes: every entry is 0 or X/(1-p)
    keep_p = 1 - round(0.3 * 32768) / 32768  # the drawn masks' keep probability (p at 1/32768)
    for got, x in zip(ref("dare", A2, B2, drop=0.3, seed=7), (A2[0], B2[0])):
        survivors = got != 0
        torch.testing.assert_close(got[survivors], x[survivors] * (1 / keep_p), rtol=1e-15, atol=0)
        assert abs((1 - survivors.double().mean().item()) - 0.3) < 5 * math.sqrt(0.3 * 0.7 / x.numel())


def test_dare_drops_and_rescales():
    A, B = stacks(n=2, r=16, d_in=200, d_out=150)
    A[1], B[1] = 0, 0  # only task 0 contributes: every entry is 0 or X/(1-p)
    a, b = run("dare", A, B, drop=0.3, seed=7)
    for got, x in ((a, A[0]), (b, B[0])):
        survivors = got != 0
        torch.testing.assert_close(got[survivors], x[survivors] / (1 - round(0.3 * 32768) / 32768))
        share = 1 - survivors.float().mean().item()
        sd = math.sqrt(0.3 * 0.7 / x.numel())
        assert abs(share - 0.3) < 5 * sd
    a0, b0 = run("dare", A, B, drop=0.0)
    ta_a, ta_b = run("task_arithmetic", A, B)
    assert torch.equal(a0, ta_a) and torch.equal(b0, ta_b)
    a_none, _ = run("dare", A, B, drop=0.3, seed=7, rescale="none")
    torch.testing.assert_close(a_none * (a != 0), a * (1 - round(0.3 * 32768) / 32768))


@pytest.mark.parametrize("name,params", [("ties", {"density": 0.3}), ("dare", {"drop": 0.3}), ("dare", {"drop": 0.5}),
                                         ("robustmerge", {"s_dtype": "float32"}),
                                         ("robustmerge", {"s_dtype": "float32", "variant": "scale_b_from_b"}),
                                         ("robustmerge", {"s_dtype": "float32", "variant": "scale_both"}),
                                         ("pcb", {})])
def test_16bit_routes_equal_float32_routes(name, params):
    """Rules that work on 16-bit bit patterns give exactly what their float route gives for
    the same values held in float32 (ties at the thresholds, -0.0 and zero sums included)."""
    A, B = stacks(n=4, r=8, d_in=96, d_out=80, seed=5)
    A[0, 0, :12] = A[1, 0, :12]  # equal entries across tasks
    A[2, 1, :20] = -A[3, 1, :20]  # sums that cancel exactly
    A[1, 2, :8] = -0.0
    A16, B16 = A.bfloat16(), B.bfloat16()
    a16, b16 = run(name, A16, B16, seed=3, **params)
    a32, b32 = run(name, A16.float(), B16.float(), seed=3, **params)
    assert torch.equal(a16, a32) and torch.equal(b16, b32)
    if name == "ties":
        torch.testing.assert_close(a16.double(), naive_ties(A16.double(), 0.3), rtol=1e-6, atol=1e-7)


# ---- properties ----------------------------------------------------------------------

def identical(n=4):
    A, B = stacks(n=1)
    return A.expand(n, -1, -1).clone(), B.expand(n, -1, -1).clone()


def test_identical_adapters():
    A, B = identical(4)
    a, b = run("robustmerge", A, B, preset="official")  # S̃ = 1/N for every task
    torch.testing.assert_close(b, 2.0 * naive_prune(B[0], 0.2).float(), rtol=1e-6, atol=0)
    torch.testing.assert_close(a, 2.0 * 4 * naive_prune(A[0], 0.2).float(), rtol=1e-6, atol=0)
    a, b = run("task_arithmetic", A, B, lam=0.25)
    torch.testing.assert_close(a, A[0] * 4 * 0.25)
    torch.testing.assert_close(b, B[0] * 4 * 0.25)
    a, b = run("ties", A, B, density=0.3)  # disjoint mean of equal values = the trimmed value
    torch.testing.assert_close(a.double(), naive_original_trim(A[0], 0.3))
    a, b = run("pcb", A, B, ratio=1.0, clip=0.0)  # equal weights: the task itself, except where
    nonzero = a != 0  # min-max normalisation gives the smallest balancing weight 0 in every task
    assert (~nonzero).sum() == 1
    torch.testing.assert_close(a[nonzero], A[0][nonzero], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name", ["robustmerge", "task_arithmetic", "ties", "pcb"])
def test_task_order_does_not_matter(name):
    A, B = stacks(n=4)
    a, b = run(name, A, B)
    perm = torch.tensor([2, 0, 3, 1])
    pa, pb = run(name, A[perm], B[perm])
    torch.testing.assert_close(pa, a, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(pb, b, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("keep", [0.1, 0.2, 0.5, 0.9])
def test_kept_share(keep):
    """Masks keep |x| >= the k-th smallest: numel - k + 1 entries, plus any ties at the threshold."""
    from robustmerge.methods.common import magnitude_mask

    A, _ = stacks(n=3, r=8, d_in=50)
    counts = magnitude_mask(A, keep).reshape(3, -1).sum(1)
    k = int(A[0].numel() * (1 - keep))
    assert counts.tolist() == [A[0].numel() - k + 1] * 3  # the k-th smallest itself is kept; no ties here
    A[0, 0, :10] = 100.0  # ten tied values at the top are all kept, although 9 would do
    assert magnitude_mask(A, 0.02)[0].sum() == 10


def test_streaming_kth_equals_kthvalue():
    g = torch.Generator().manual_seed(3)
    chunks = [torch.randn(s, generator=g) * 10 ** torch.randint(-4, 2, (1,), generator=g).item() for s in (100, 37, 512, 3)]
    chunks.append(torch.zeros(20))
    chunks.append(torch.full((15,), 0.125))
    allv = torch.cat([c.abs() for c in chunks])
    for k in (1, 5, 20, 21, 300, allv.numel()):
        sel = StreamingKth()
        for c in chunks:
            sel.count(c)
        sel.locate(k)
        for c in chunks:
            sel.collect(c)
        assert sel.value() == allv.kthvalue(k).values.item()


def _awkward(numel, dtype, seed):
    """Values with ties, ±0, subnormals and a wide range of magnitudes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(numel, generator=g) * 10.0 ** torch.randint(-6, 3, (numel,), generator=g)
    x[torch.randint(0, numel, (numel // 10,), generator=g)] = 0.0
    x[torch.randint(0, numel, (numel // 20,), generator=g)] = -0.0
    x[torch.randint(0, numel, (numel // 10,), generator=g)] = 0.5
    x[:50] = torch.finfo(dtype).smallest_normal / 4  # subnormals
    return x.to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kth_selection_equals_kthvalue(dtype):
    """The one selection primitive agrees with kthvalue and with its sort-based reference on
    every k tried: both halves of the range (the sampled bracket's two sides), the 16-bit
    histogram route (magnitudes), signed 16-bit rows, and batched short rows."""
    from robustmerge.methods.common import kth_smallest, kth_smallest_reference

    x = _awkward(50_000, dtype, seed=7)  # > 16 · 1024: the bracketed route
    for k in (1, 2, 5, 4_999, 25_000, 25_001, 40_000, 49_999, 50_000):
        ref = x.float().kthvalue(k).values
        assert kth_smallest(x.float(), k) == ref
        assert kth_smallest(x, k).dtype == dtype
        assert kth_smallest(x, k).float() == ref, k  # signed: sampled bracket / kthvalue on 16-bit values
        mag = x.abs()
        want = mag.float().kthvalue(k).values.to(dtype)
        got = kth_smallest(mag, k)  # 16-bit magnitudes: the histogram route
        assert got == want and got == kth_smallest_reference(mag, k), k
        if dtype != torch.float32:
            assert got.view(torch.int16) == want.view(torch.int16)  # the same bit pattern
    rows = x[:3 * 999].reshape(3, 999)  # batched short rows: one value per row
    for k in (1, 500, 999):
        assert torch.equal(kth_smallest(rows, k), rows.kthvalue(k, dim=-1).values)
        assert torch.equal(kth_smallest(rows.abs(), k), kth_smallest_reference(rows.abs(), k))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("keep", [1e-4, 0.2, 0.5, 0.999, 1.0])
def test_prune_by_magnitude_is_mask_bit_for_bit(dtype, keep):
    """The integer route on 16-bit bit patterns prunes exactly as |x| >= kthvalue does,
    bytes included (kept -0.0 stays -0.0, pruned entries are +0.0)."""
    from robustmerge.methods.common import apply_mask, magnitude, magnitude_mask, prune_by_magnitude

    x = _awkward(3 * 40 * 70, dtype, seed=11).reshape(3, 40, 70)
    x[1] *= 1e-3  # tasks with different scales get their own thresholds
    before = x.clone()
    pruned = prune_by_magnitude(x, keep)
    want = apply_mask(x, magnitude_mask(x, keep))
    assert pruned.dtype == dtype
    assert torch.equal(x.view(torch.uint8), before.view(torch.uint8))  # the input is left alone
    ibits = torch.int32 if dtype == torch.float32 else torch.int16
    assert torch.equal(pruned.view(ibits), want.view(ibits))
    assert torch.equal(magnitude(x).view(ibits), x.abs().view(ibits))
    k = int(40 * 70 * (1 - keep))
    for n in range(3):  # the k-th smallest and everything above it survive (ties included)
        t = x[n].abs().float().reshape(-1).kthvalue(k).values if k > 0 else 0.0
        assert int((pruned[n] != 0).sum()) == int((x[n].abs().float() >= t).logical_and(x[n] != 0).sum())


def test_ties_model_trim_uses_global_thresholds(tmp_path):
    folders = write_task_adapters(tmp_path, 3, SHAPE, r=4, seed=1, with_extras=False)
    ad = load_adapter_set(folders)
    res = merge(ad, "ties", params={"trim": "model", "density": 0.25})
    for factor, idx in (("A", 0), ("B", 1)):
        flat = torch.cat([ad.factors(m)[idx].reshape(3, -1) for m in ad.modules], dim=1)  # [N, all]
        k = flat.shape[1] - int(flat.shape[1] * 0.25)  # the original TIES's k
        t = flat.abs().kthvalue(k, dim=1).values
        stats = get_method("ties").prepare(ad, get_method("ties").resolve(None, {"trim": "model", "density": 0.25}))
        assert torch.equal(stats[factor], t)
    module = ad.modules[2]
    A, B = ad.factors(module)
    a_key = ad.tasks[0].modules[module][0]
    stats = get_method("ties").prepare(ad, get_method("ties").resolve(None, {"trim": "model", "density": 0.25}))
    trimmed = torch.where(A.abs() >= stats["A"].view(3, 1, 1), A, 0)
    total = trimmed.sum(0)
    agree = (torch.sign(trimmed) == torch.sign(total)) & (trimmed != 0)
    torch.testing.assert_close(res.tensors[a_key], (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1))


def test_dare_seed_gives_identical_bytes(tmp_path):
    folders = write_task_adapters(tmp_path / "in", 3, SHAPE, r=4, seed=2)
    outs = []
    for i, seed in enumerate((5, 5, 6)):
        out = tmp_path / f"out{i}"
        merge_to_folder(folders, out, "dare", params={"drop": 0.4}, seed=seed)
        outs.append((out / "adapter_model.safetensors").read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


@pytest.mark.parametrize("name", ["robustmerge", "task_arithmetic", "ties", "pcb"])
def test_deterministic_methods_give_identical_bytes(name, tmp_path):
    folders = write_task_adapters(tmp_path / "in", 2, SHAPE, r=4, seed=3)
    merge_to_folder(folders, tmp_path / "o1", name)
    merge_to_folder(folders, tmp_path / "o2", name)
    for f in ("adapter_model.safetensors", "non_lora_trainables.bin", "adapter_config.json"):
        assert (tmp_path / "o1" / f).read_bytes() == (tmp_path / "o2" / f).read_bytes()


# ---- ablation variants of RobustMerge (paper Tables 6-7) against their formulas -----------

def _prune_and_s(A, B, keep=0.2, clamp_ratio=0.2):
    n, r = A.shape[:2]
    Ap = torch.stack([naive_prune(A[i], keep) for i in range(n)])
    Bp = torch.stack([naive_prune(B[i], keep) for i in range(n)])

    def s_of(x, xp):  # [N, r, D]
        s = x.double().abs().sum(-1) / xp.abs().sum(-1)
        floor = s.sort(-1).values[:, int(r * (1 - clamp_ratio))].unsqueeze(1)
        return torch.maximum(s, floor)
    return Ap, Bp, s_of(A, Ap), s_of(B.transpose(1, 2), Bp.transpose(1, 2))


def test_ablation_variants():
    A, B = stacks(n=3, seed=9)
    Ap, Bp, sA, sB = _prune_and_s(A, B)
    nA, nB = sA / sA.sum(0), sB / sB.sum(0)
    lam = 2.0
    expect = {
        "no_prune_scale": (lam * A.double().sum(0), lam * B.double().sum(0)),
        "prune_only": (lam * Ap.sum(0), lam * Bp.sum(0)),
        "no_norm": (lam * Ap.sum(0), lam * (Bp * sA[:, None, :]).sum(0)),
        "full": (lam * Ap.sum(0), lam * (Bp * nA[:, None, :]).sum(0)),
        "scale_a_from_a": (lam * (Ap * nA[:, :, None]).sum(0), lam * Bp.sum(0)),
        "scale_b_from_b": (lam * Ap.sum(0), lam * (Bp * nB[:, None, :]).sum(0)),
        "scale_both": (lam * (Ap * nA[:, :, None]).sum(0), lam * (Bp * nB[:, None, :]).sum(0)),
    }
    for variant, (ea, eb) in expect.items():
        a, b = run("robustmerge", A, B, variant=variant, s_dtype="float32")
        torch.testing.assert_close(a.double(), ea, rtol=1e-5, atol=1e-7, msg=variant)
        torch.testing.assert_close(b.double(), eb, rtol=1e-5, atol=1e-7 * eb.abs().max().item(), msg=variant)


# ---- a new rule is one new file (plug-in path) ------------------------------------------------

TOY_RULE = '''"""Toy rule: the mean of the task factors (an example plug-in, no paper).

    A* = (1/N) Σ_n A_n,   B* = (1/N) Σ_n B_n

Shapes: A [N, r, d_in], B [N, d_out, r] -> float32 [r, d_in], [d_out, r]. Parameters: none.
Plain already, so the rule is its own reference.
"""
import torch

from robustmerge.methods import register


@register(paper="none (an example rule)", params=[])
def toy(A, B, p, ctx):
    """mean of the task factors"""
    return A.mean(0, dtype=torch.float32), B.mean(0, dtype=torch.float32)
'''


def _cli(args, env_path, cwd):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "ROBUSTMERGE_RULES_PATH": str(env_path)}
    return subprocess.run([sys.executable, "-m", "robustmerge", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_toy_rule_from_the_plugin_path_lists_and_merges_through_the_cli(tmp_path):
    from safetensors.torch import load_file

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "toy.py").write_text(TOY_RULE)
    listed = _cli(["methods"], rules, tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "toy: mean of the task factors\n  paper: none (an example rule)\n" in listed.stdout
    assert "robustmerge: prune A and B by magnitude" in listed.stdout  # the built-in rules are still there
    folders = write_task_adapters(tmp_path / "in", 2, SHAPE, r=4, seed=4)
    done = _cli(["merge", "--method", "toy", "--adapters", *folders, "--out", tmp_path / "out", "-q"], rules, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "merged 2 adapters with toy [] ->" in done.stdout
    got = load_file(tmp_path / "out" / "adapter_model.safetensors")
    inputs = [load_file(f / "adapter_model.safetensors") for f in folders]
    assert list(got) == list(inputs[0]) and len(got) == 2 * 7  # every A and B of the 7 modules, input key order
    for key, merged in got.items():
        assert torch.equal(merged, (inputs[0][key] + inputs[1][key]) / 2), key
    key = next(k for k in got if "lora_A" in k)  # one entry by hand, in Python floats
    a0, a1, m = inputs[0][key][1, 2].item(), inputs[1][key][1, 2].item(), got[key][1, 2].item()
    assert m == pytest.approx((a0 + a1) / 2, rel=1e-6) and m != 0
    record = json.loads((tmp_path / "out" / "merge_record.json").read_text())
    assert (record["method"], record["params"]) == ("toy", {})


def test_rule_files_are_auto_registered():
    """Every module of robustmerge/methods (but common and registry) registers its rule: no
    import list to edit."""
    import pkgutil

    import robustmerge.methods as methods

    modules = {m.name for m in pkgutil.iter_modules(methods.__path__)} - {"common", "registry"}
    assert {m.rule.__module__.rsplit(".", 1)[-1] for m in REGISTRY.values()} >= modules
    assert modules == {"cart", "dare", "dc_merge", "iso_c", "pcb", "robustmerge", "task_arithmetic", "ties", "tsv"}


def test_public_api_takes_no_performance_plumbing():
    import inspect

    for fn in (merge, merge_to_folder):
        assert not {"hasher", "workers", "pool"} & set(inspect.signature(fn).parameters), fn.__name__
