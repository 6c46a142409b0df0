"""Every registered merge rule's fast route against its ``reference`` (the plain formula in the
same file), for every preset and every value of every choice parameter (variants), on seeded
random stacks of several shapes with ties in magnitudes, ±0 and cancelling sums.

Contracts checked (as each rule file's docstring states them):
- float32, bfloat16 and float16 inputs: fast route == reference BIT FOR BIT (every rule claims it).
- float64 inputs: the reference computes and returns float64; the fast route (float32) agrees
  with it to float32 rounding, ``rtol=1e-5`` with ``atol=1e-5·max|ref|`` (PCB: ``rtol=1e-4``,
  its exp/tanh weights), except RobustMerge with S in the stored 16-bit dtype, which moves S by
  up to one half-precision step: ``rtol=1e-2`` (bf16) / ``2e-3`` (fp16), the tolerances of
  fixtures/official_merge/README.md, with ``atol`` the same share of max|ref| (entries where
  the tasks' contributions cancel carry the absolute error of the larger terms).
- Update-level settings (a merge space, ``Method.out_rank`` not None): the rule returns float64
  rank-R factors and the reference the dense float64 ΔW*; B'A' equals it within 1e-9 relative
  (Frobenius) on every input dtype, and a rule that refuses a shape refuses it in both routes.
"""
import pytest
import torch

from robustmerge.errors import MergeInputError
from robustmerge.methods import REGISTRY, ModuleContext

SHAPES = [(2, 4, 9, 7), (3, 8, 96, 80), (4, 16, 1100, 24)]  # (N, r, d_in, d_out); A of the last: D > 16·1024
EXTRA = {  # numeric settings beside the presets and choice values
    "robustmerge": [{"keep": 0.35, "clamp_ratio": 0.5, "lam": 1.5}, {"keep": 1.0}, {"s_dtype": "float32", "lam": 0.7}],
    "ties": [{"density": 0.5, "lam": 1.3}, {"density": 1.0}, {"trim": "model", "density": 0.3},
             {"variant": "peft", "sign": "frequency", "density": 0.3}, {"variant": "mergekit", "consensus": "count"},
             {"variant": "peft", "elect": "none", "density": 0.5, "lam": 0.7}, {"variant": "mergekit", "density": 1.0}],
    "dare": [{"drop": 0.3, "lam": 0.7}, {"drop": 0.0}, {"drop": 0.3, "rescale": "l1"}],
    "pcb": [{"ratio": 0.3, "clip": 0.05}, {"ratio": 1.0, "clip": 0.0, "lam": 0.9, "lambda_on": "product"},
            {"ratio": 0.3, "inter": "signed_minmax", "lam": 1.2}],
    "task_arithmetic": [{"lam": 0.7}, {"lam": 0.7, "lambda_on": "product"}, {"space": "core", "out_rank": 5}],
    "tsv": [{"space": "core", "lam": 0.6}, {"out_rank": 3}],
    "cart": [{"rank_fraction": 0.3, "residual_scale": 0.5}],
    "iso_c": [{"common_space_fraction": 0.5, "space": "full"}],
}


def cases():
    """(method, preset, overrides) for every rule: its default, every preset, every choice of
    every choice parameter, and the EXTRA settings."""
    out = []
    for name, m in sorted(REGISTRY.items()):
        settings = [(None, {})] + [(preset, {}) for preset in m.presets]
        settings += [(None, {p.name: c}) for p in m.params if p.choices for c in p.choices]
        settings += [(None, extra) for extra in EXTRA.get(name, [])]
        out += [(name, preset, params) for preset, params in settings]
    return out


def update_level(name, preset, params, n=2, r=4):
    m = REGISTRY[name]
    return m.out_rank(n, r, m.resolve(preset, params)) is not None


ALL_CASES = cases()
CASES = [c for c in ALL_CASES if not update_level(*c)]
UPDATE_CASES = [c for c in ALL_CASES if update_level(*c)]
UPDATE_IDS = [f"{n}-{pr or 'default'}-{','.join(f'{k}={v}' for k, v in pa.items()) or 'plain'}"
              for n, pr, pa in UPDATE_CASES]
IDS = [f"{n}-{pr or 'default'}-{','.join(f'{k}={v}' for k, v in pa.items()) or 'plain'}" for n, pr, pa in CASES]


def stacks(n, r, d_in, d_out, seed):
    """float32 A [N, r, d_in], B [N, d_out, r] with ties in magnitudes, ±0 and cancelling sums."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, r, d_in, generator=g) * 10.0 ** torch.randint(-2, 1, (n, r, 1), generator=g)
    B = torch.randn(n, d_out, r, generator=g) * 1e-2
    A[0, 0, :6] = A[1, 0, :6]  # equal entries across tasks
    A[:, 1, :8] = 0.5 * torch.tensor([1.0, -1.0]).repeat(4)  # tied magnitudes in every task, mixed signs
    A[n - 1, 2, :5] = -A[0, 2, :5]  # sums that cancel exactly
    A[1, 3, :4] = -0.0
    B[:, :4, 0] = 0.01 * torch.tensor([1.0, -1.0, 1.0, 1.0])  # tied magnitudes in B
    B[0, 4:6, 1] = -0.0
    return A, B


class OneModule:
    """The slice of an AdapterSet that ``prepare`` reads, for one module's stacks."""

    def __init__(self, A, B):
        self.n, self.modules, self._ab = A.shape[0], ["m"], (A, B)

    def factors(self, module):
        return self._ab


def both(name, preset, params, A, B):
    m = REGISTRY[name]
    p = m.resolve(preset, params)
    stats = m.prepare(OneModule(A, B), p) if m.prepare else {}
    ctx = ModuleContext("m", 3, stats)
    return m.rule(A, B, p, ctx), m.reference(A, B, p, ctx), p


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name,preset,params", CASES, ids=IDS)
def test_fast_route_equals_reference_bit_for_bit(name, preset, params, dtype, shape):
    A, B = (x.to(dtype) for x in stacks(*shape, seed=sum(shape)))
    (a, b), (ra, rb), _ = both(name, preset, params, A, B)
    assert a.dtype == b.dtype == ra.dtype == rb.dtype == torch.float32
    assert a.shape == ra.shape == A.shape[1:] and b.shape == rb.shape == B.shape[1:]
    for fast, ref in ((a, ra), (b, rb)):
        assert torch.equal(fast.view(torch.int32), ref.view(torch.int32)), (fast - ref).abs().max()


@pytest.mark.parametrize("shape", SHAPES[:2], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name,preset,params", CASES, ids=IDS)
def test_reference_in_float64(name, preset, params, dtype, shape):
    """The reference on the same values held in float64 returns float64, within the stated
    tolerance of the fast route."""
    A, B = (x.to(dtype) for x in stacks(*shape, seed=sum(shape) + 1))
    (a, b), _, p = both(name, preset, params, A, B)
    _, (ra, rb), _ = both(name, preset, params, A.double(), B.double())
    assert ra.dtype == rb.dtype == torch.float64
    rtol, atol = (1e-4 if name == "pcb" else 1e-5), 1e-5
    if name == "robustmerge" and p["s_dtype"] == "stored" and dtype != torch.float32 \
            and p["variant"] not in ("no_prune_scale", "prune_only"):
        rtol = atol = 1e-2 if dtype == torch.bfloat16 else 2e-3  # S one half-precision step off
    for fast, ref in ((a, ra), (b, rb)):
        torch.testing.assert_close(fast.double(), ref, rtol=rtol, atol=atol * ref.abs().max().item())


def test_every_rule_has_a_reference_of_its_own():
    """Every built-in rule file carries a reference beside its fast route (plug-in rules that
    are plain already may be their own reference)."""
    for name, m in REGISTRY.items():
        if m.rule.__module__.startswith("robustmerge.methods."):
            assert m.reference is not None and m.reference is not m.rule, name
            assert m.reference.__module__ == m.rule.__module__, name
            assert m.reference.__doc__, name


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name,preset,params", UPDATE_CASES, ids=UPDATE_IDS)
def test_update_level_rule_equals_dense_reference(name, preset, params, dtype, shape):
    A, B = (x.to(dtype) for x in stacks(*shape, seed=sum(shape)))
    m = REGISTRY[name]
    p = m.resolve(preset, params)
    ctx = ModuleContext("m", 3, {})
    try:
        a, b = m.rule(A, B, p, ctx)
    except MergeInputError:
        with pytest.raises(MergeInputError):
            m.reference(A, B, p, ctx)
        return
    ref = m.reference(A, B, p, ctx)
    rank = m.out_rank(A.shape[0], A.shape[1], p)
    assert a.dtype == b.dtype == ref.dtype == torch.float64
    assert a.shape == (rank, A.shape[2]) and b.shape == (B.shape[1], rank) and ref.shape == (B.shape[1], A.shape[2])
    assert ((b @ a - ref).norm() / ref.norm()).item() <= 1e-9
