"""robustmerge.analysis: spectra against dense SVDs, direction metrics against a dense naive
computation and on identical adapters, the ablation presets against naive loops, sweeps, and
the analyze / sweep CLI end to end on synthetic adapters."""
import csv
import json
import math
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from robustmerge import load_adapter_set, merge, merge_to_folder
from robustmerge.adapters import TensorFile
from robustmerge.analysis import (MergedAdapter, analyze, direction_metrics, layer_groups, lowrank_svd,
                                  pruning_spectra, run_sweeps, singular_values, sweep_tasks)
from robustmerge.cli import main
from robustmerge.methods import ModuleContext, get_method
from robustmerge.synthetic import LlamaShape, write_task_adapters

SHAPE = LlamaShape(layers=2, hidden=16, intermediate=24, mm_hidden=8)
PNGS = {"direction_by_task.png", "direction_by_layer_group.png", "direction_by_index.png", "spectra.png",
        "spectra_by_layer.png"}


def factors(n, d_out, d_in, r, seed=0, rank=None):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(n, r, d_in, generator=g, dtype=torch.float64)
    B = torch.randn(n, d_out, r, generator=g, dtype=torch.float64)
    if rank is not None:  # rank-deficient: the last r - rank columns of B repeat the first
        B[:, :, rank:] = B[:, :, :1]
    return A, B


# ---- spectra ------------------------------------------------------------------------------

@pytest.mark.parametrize("d_out,d_in,r,rank", [(48, 64, 6, None), (64, 40, 8, None), (10, 7, 8, None),
                                               (5, 40, 8, None), (30, 20, 6, 3)])
def test_lowrank_svd_matches_dense(d_out, d_in, r, rank):
    A, B = factors(3, d_out, d_in, r, seed=d_out + d_in, rank=rank)
    svd = lowrank_svd(B, A, scale=0.7)
    dense = 0.7 * B @ A  # [3, d_out, d_in]
    U, S, Vh = torch.linalg.svd(dense, full_matrices=False)
    k = svd.S.shape[-1]
    assert k == min(d_out, d_in, r)
    torch.testing.assert_close(svd.S, S[:, :k], rtol=1e-10, atol=1e-10 * S[:, :1].max().item())
    if S.shape[-1] > k:  # every other singular value of the dense update is 0
        assert S[:, k:].max().item() < 1e-10 * S.max().item()
    torch.testing.assert_close(svd.U @ torch.diag_embed(svd.S) @ svd.V.mT, dense, rtol=0, atol=1e-10)
    eye = torch.eye(k, dtype=torch.float64).expand(3, k, k)
    torch.testing.assert_close(svd.U.mT @ svd.U, eye, rtol=0, atol=1e-10)
    torch.testing.assert_close(svd.V.mT @ svd.V, eye, rtol=0, atol=1e-10)
    nz = (rank or k)  # the non-zero, distinct singular values: vectors agree up to sign
    align_u = (svd.U[..., :nz] * U[..., :nz]).sum(-2).abs()
    align_v = (svd.V[..., :nz] * Vh.mT[..., :nz]).sum(-2).abs()
    torch.testing.assert_close(align_u, torch.ones_like(align_u), rtol=0, atol=1e-8)
    torch.testing.assert_close(align_v, torch.ones_like(align_v), rtol=0, atol=1e-8)
    torch.testing.assert_close(singular_values(B, A, 0.7), svd.S, rtol=1e-12, atol=1e-14)


class MaxNumel(TorchDispatchMode):
    """Records the largest tensor any operation produces."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


def test_spectra_never_form_the_dense_update():
    """7B-sized module (d_out 11008, d_in 4096, r 8), 4 tasks: dense would be 4 × 45M entries."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 8, 4096, generator=g)
    B = torch.randn(4, 11008, 8, generator=g)
    with MaxNumel() as probe:
        svd = lowrank_svd(B, A)
        s = singular_values(B, A)
        d = direction_metrics(svd, A[0], B[0])
        spectra = pruning_spectra(A, B, keep=0.2)
    assert 4 * 11008 * 8 <= probe.max_numel <= 4 * (11008 + 4096) * 8  # the probe sees the factors, nothing larger
    torch.testing.assert_close(s, svd.S)
    assert spectra["pruned"].shape == (4, 8)
    torch.testing.assert_close(d.cos[0], torch.ones(8, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(d.ratio[0], torch.ones(8, dtype=torch.float64), rtol=0, atol=1e-9)


def test_pruning_spectra_match_dense():
    from robustmerge.methods.common import apply_mask, magnitude_mask
    from robustmerge.methods.robustmerge import clamp_low, complementary_scale

    A, B = factors(2, 20, 30, 5, seed=3)
    sp = pruning_spectra(A, B, keep=0.3, clamp_ratio=0.4)
    Ap, Bp = apply_mask(A, magnitude_mask(A, 0.3)), apply_mask(B, magnitude_mask(B, 0.3))
    rows = (A.abs().sum(-1) / Ap.abs().sum(-1)).sort(-1).values  # Σ_j|A| / Σ_j|Ã| per rank row, ascending
    S = torch.maximum(A.abs().sum(-1) / Ap.abs().sum(-1), rows[:, int(5 * (1 - 0.4))].unsqueeze(1))  # [N, r], clamped
    torch.testing.assert_close(S, clamp_low(complementary_scale(A.abs(), Ap.abs(), torch.float64), 0.4))
    assert (S >= 1).all()  # pruning only removes mass
    for key, dense in (("original", B @ A), ("pruned", Bp @ Ap), ("pruned_scaled", Bp @ torch.diag_embed(S) @ Ap)):
        torch.testing.assert_close(sp[key], torch.linalg.svdvals(dense)[:, :5], rtol=1e-10, atol=1e-12)


# ---- direction metrics ------------------------------------------------------------------------

def test_direction_metrics_match_dense_naive():
    A, B = factors(3, 24, 18, 5, seed=11)
    a_star, b_star = 0.5 * A.sum(0), 0.8 * B.sum(0) + 0.1 * torch.randn(24, 5, dtype=torch.float64)
    d = direction_metrics(lowrank_svd(B, A), a_star, b_star)
    merged = b_star @ a_star
    for n in range(3):
        U, S, Vh = torch.linalg.svd(B[n] @ A[n])
        for i in range(5):
            w = merged @ Vh[i]
            cos = float(w @ U[:, i] / w.norm())
            assert d.cos[n, i].item() == pytest.approx(cos, abs=1e-9)
            assert d.ratio[n, i].item() == pytest.approx(float(w.norm() / S[i]), rel=1e-9)
    s = d.summary()
    assert s[1]["top_cos"] == pytest.approx(d.cos[1, 0].item())
    assert s[1]["rest_ratio"] == pytest.approx(d.ratio[1, 1:].mean().item())


def test_direction_metrics_edge_cases():
    A, B = factors(1, 12, 10, 4, seed=1, rank=2)  # σ_3 = σ_4 = 0: not counted in "rest"
    d = direction_metrics(lowrank_svd(B, A), A[0], B[0])
    assert d.valid[0].tolist() == [True, True, False, False]
    assert d.summary()[0] == pytest.approx({"top_cos": 1.0, "top_ratio": 1.0, "rest_cos": 1.0, "rest_ratio": 1.0})
    zero = direction_metrics(lowrank_svd(B, A), torch.zeros_like(A[0]), B[0])  # ΔW* = 0: cos 0, ratio 0
    assert zero.summary()[0] == {"top_cos": 0.0, "top_ratio": 0.0, "rest_cos": 0.0, "rest_ratio": 0.0}
    flipped = direction_metrics(lowrank_svd(B, A), -3 * A[0], B[0])
    assert flipped.summary()[0] == pytest.approx(
        {"top_cos": -1.0, "top_ratio": 3.0, "rest_cos": -1.0, "rest_ratio": 3.0})


@pytest.fixture(scope="module")
def identical_set(tmp_path_factory):
    """Four task adapters with identical factors (share=1), r=8, alpha=16 (scaling 2)."""
    root = tmp_path_factory.mktemp("identical")
    paths = write_task_adapters(root, 4, SHAPE, r=8, alpha=16, share=1.0, with_extras=False)
    return load_adapter_set(paths).materialize()


# (method, params, expected magnitude ratio): with N identical tasks ΔW* = c·ΔW exactly.
PRESERVING = [
    ("task_arithmetic", {"lam": 0.25, "lambda_on": "both"}, 1.0),  # (λN)² = 1
    ("task_arithmetic", {"lam": 1 / 16, "lambda_on": "product"}, 1.0),  # λN² = 1
    ("dare", {"drop": 0.0, "lam": 0.25}, 1.0),  # nothing dropped: task arithmetic
    ("ties", {"density": 1.0, "lam": 1.0}, 1.0),  # no trim; the disjoint mean of equal values
    ("robustmerge", {"keep": 1.0, "lam": 0.5}, 1.0),  # no pruning, S = 1, S̃ = 1/N: ΔW* = λ²N·ΔW
    ("robustmerge", {"keep": 1.0}, 16.0),  # the official λ = 2 on both factors: λ²N = 16
    ("robustmerge", {"keep": 1.0, "lam": 2.0, "lambda_on": "product", "clamp_ratio": 1.0}, 8.0),  # λN
]


@pytest.mark.parametrize("method,params,ratio", PRESERVING)
def test_direction_metrics_on_identical_adapters(identical_set, method, params, ratio):
    report = analyze(identical_set, [MergedAdapter.from_result(merge(identical_set, method, params=params))])
    (d,) = report["direction"].values()
    for per_task in d["tasks"].values():
        for scope in ("all", *report["layer_groups"]):
            v = per_task[scope]
            assert v["top_cos"] == pytest.approx(1.0, abs=1e-6)
            assert v["rest_cos"] == pytest.approx(1.0, abs=1e-5)
            assert v["top_ratio"] == pytest.approx(ratio, rel=1e-6)
            assert v["rest_ratio"] == pytest.approx(ratio, rel=1e-5)
    merged_sigma = torch.tensor(report["spectra"]["merged"][next(iter(report["direction"]))])
    torch.testing.assert_close(merged_sigma, ratio * torch.tensor(report["spectra"]["per_task"]["task0"]),
                               rtol=1e-5, atol=0)


def test_scalings_are_applied_when_tasks_differ(tmp_path):
    """Identical factors, alpha 8 and 16 (s = 2, 4): the set folds scalings into B; task
    arithmetic (λ = 1) gives ΔW* = (2 + 4)·B·2A = 12·BA, so m = 6 for the first task and 3 for
    the second, from memory and from the written folder (whose config makes the scaling 1)."""
    p1 = write_task_adapters(tmp_path, 1, SHAPE, r=4, alpha=8, share=1.0, with_extras=False, names=["s2"])
    p2 = write_task_adapters(tmp_path, 1, SHAPE, r=4, alpha=16, share=1.0, with_extras=False, names=["s4"])
    adapters = load_adapter_set(p1 + p2).materialize()
    assert adapters.fold_scaling
    merge_to_folder(adapters, tmp_path / "ta", "task_arithmetic")
    merged = [MergedAdapter.from_result(merge(adapters, "task_arithmetic"), "memory"),
              MergedAdapter.from_folder(tmp_path / "ta", adapters)]
    report = analyze(adapters, merged)
    for label in ("memory", "ta"):
        tasks = report["direction"][label]["tasks"]
        assert tasks["s2"]["all"] == pytest.approx({"top_cos": 1, "top_ratio": 6, "rest_cos": 1, "rest_ratio": 6},
                                                   rel=1e-5)
        assert tasks["s4"]["all"]["rest_ratio"] == pytest.approx(3.0, rel=1e-5)


def test_official_merge_of_identical_adapters_is_not_exact(identical_set):
    """Pruning (keep 0.2) changes the directions: cos < 1 for some singular directions."""
    report = analyze(identical_set, [MergedAdapter.from_result(merge(identical_set, "robustmerge"))])
    (d,) = report["direction"].values()
    assert d["mean"]["all"]["rest_cos"] < 0.99
    assert 0 < d["mean"]["all"]["top_cos"] <= 1.0


# ---- ablation presets against naive formulas ----------------------------------------------------

def naive_prune(x, keep):
    vals = sorted(abs(v) for v in x.flatten().tolist())
    k = int(len(vals) * (1 - keep))
    t = vals[k - 1] if k > 0 else -1.0
    return torch.tensor([[v if abs(v) >= t else 0.0 for v in row] for row in x.tolist()], dtype=torch.float64)


def naive_scale(rows, rows_pruned, clamp_ratio):
    """S[i] = Σ|x[i,:]| / Σ|x̃[i,:]| per row, raised to sorted(S)[int(r(1 - c))]."""
    s = [sum(abs(v) for v in rows[i].tolist()) / sum(abs(v) for v in rows_pruned[i].tolist())
         for i in range(rows.shape[0])]
    floor = sorted(s)[int(len(s) * (1 - clamp_ratio))]
    return [max(v, floor) for v in s]


def naive_ablation(A, B, variant, keep=0.2, clamp_ratio=0.2, lam=2.0):
    """Table 6/7 formulas, official settings (λ on both factors), as plain loops in float64."""
    n, r = A.shape[0], A.shape[1]
    A, B = A.double(), B.double()
    if variant == "no_prune_scale":  # A* = λ Σ A_n, B* = λ Σ B_n
        return lam * A.sum(0), lam * B.sum(0)
    Ap = [naive_prune(A[i], keep) for i in range(n)]
    Bp = [naive_prune(B[i], keep) for i in range(n)]
    SA = [naive_scale(A[i], Ap[i], clamp_ratio) for i in range(n)]  # from A's rows
    SB = [naive_scale(B[i].T, Bp[i].T, clamp_ratio) for i in range(n)]  # from B's columns

    def norm(S):  # S̃_n[j] = S_n[j] / Σ_k S_k[j]
        return [[S[i][j] / sum(S[k][j] for k in range(n)) for j in range(r)] for i in range(n)]

    a_rows = {"scale_a_from_a": norm(SA), "scale_both": norm(SA)}.get(variant)
    b_cols = {"full": norm(SA), "no_norm": SA, "scale_b_from_b": norm(SB), "scale_both": norm(SB)}.get(variant)
    a_star = torch.zeros_like(A[0])
    b_star = torch.zeros_like(B[0])
    for i in range(n):
        for j in range(r):
            a_star[j, :] += Ap[i][j, :] * (a_rows[i][j] if a_rows else 1.0)
            b_star[:, j] += Bp[i][:, j] * (b_cols[i][j] if b_cols else 1.0)
    return lam * a_star, lam * b_star


ABLATIONS = [("ablation-t6-no-prune-scale", "no_prune_scale"), ("ablation-t6-no-norm", "no_norm"),
             ("ablation-t6-full", "full"), ("ablation-t7-a-to-a", "scale_a_from_a"),
             ("ablation-t7-b-to-b", "scale_b_from_b"), ("ablation-t7-both", "scale_both"),
             ("ablation-t7-inter", "full")]


@pytest.mark.parametrize("preset,variant", ABLATIONS)
def test_ablation_presets_match_naive_formulas(preset, variant):
    g = torch.Generator().manual_seed(4)
    A = torch.randn(3, 6, 64, generator=g)
    B = torch.randn(3, 48, 6, generator=g) * 1e-2
    m = get_method("robustmerge")
    p = m.resolve(preset)
    assert p["variant"] == variant
    assert (p["keep"], p["clamp_ratio"], p["lam"], p["lambda_on"], p["s_dtype"]) == (0.2, 0.2, 2.0, "both", "stored")
    a, b = m.rule(A, B, p, ModuleContext("m"))
    na, nb = naive_ablation(A, B, variant)
    torch.testing.assert_close(a.double(), na, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b.double(), nb, rtol=1e-5, atol=1e-8)


def test_ablation_full_presets_are_the_official_merge():
    g = torch.Generator().manual_seed(5)
    A, B = torch.randn(3, 6, 64, generator=g).bfloat16(), (torch.randn(3, 48, 6, generator=g) * 1e-2).bfloat16()
    m = get_method("robustmerge")
    ref = m.rule(A, B, m.resolve("official"), ModuleContext("m"))
    for preset in ("ablation-t6-full", "ablation-t7-inter"):
        got = m.rule(A, B, m.resolve(preset), ModuleContext("m"))
        assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


# ---- layer groups -----------------------------------------------------------------------------

def test_layer_groups():
    mods = [f"base_model.model.model.layers.{i}.mlp.down_proj" for i in range(10)] + ["model.mm_projector.lin"]
    g = layer_groups(mods, 3)
    assert list(g) == ["layers 0-2", "layers 3-5", "layers 6-9", "other"]
    assert g["layers 6-9"] == mods[6:10] and g["other"] == mods[10:]
    assert list(layer_groups(mods[:2], 3)) == ["layer 0", "layer 1"]


# ---- sweeps -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def task_paths(tmp_path_factory):
    return write_task_adapters(tmp_path_factory.mktemp("tasks"), 3, SHAPE, r=4, alpha=8, seed=1)


def test_sweeps_reuse_loaded_adapters_and_call_evaluate(task_paths, monkeypatch):
    adapters = load_adapter_set(task_paths).materialize()
    get = TensorFile.get

    def no_reread(self, key, *args, **kwargs):  # LoRA weights come from memory (projector .bin files are read anyway)
        if self.path.suffix == ".safetensors":
            pytest.fail(f"re-read {key} from {self.path}")
        return get(self, key, *args, **kwargs)

    monkeypatch.setattr(TensorFile, "get", no_reread)
    calls = []

    def evaluate(result):  # stands in for "attach to the loaded base model and score"
        calls.append([t.name for t in result.plan.adapters.tasks])
        return {"val/score": float(sum(t.abs().sum() for t in result.tensors.values()))}

    sweeps = run_sweeps(adapters, "robustmerge", evaluate=evaluate, prune_values=[0.1, 0.5, 1.0],
                        lam_values=[1.0, 2.0])
    assert list(sweeps) == ["prune", "lambda", "tasks"]
    prune = sweeps["prune"]["rows"]
    assert [r["keep"] for r in prune] == [0.1, 0.5, 1.0]
    assert [r["pruned_share"] for r in prune] == pytest.approx([0.9, 0.5, 0.0])
    assert [r["n_tasks"] for r in sweeps["tasks"]["rows"]] == [2, 3]
    assert sweeps["tasks"]["rows"][0]["tasks"] == "task0+task1"
    assert calls[-2:] == [["task0", "task1"], ["task0", "task1", "task2"]]
    assert len(calls) == 3 + 2 + 2
    for rows in (s["rows"] for s in sweeps.values()):
        for r in rows:
            assert {"dir_top_cos", "dir_top_ratio", "dir_rest_cos", "dir_rest_ratio", "val/score"} <= set(r)
            assert -1 <= r["dir_top_cos"] <= 1
    lam = sweeps["lambda"]["rows"]  # λ on both factors: ΔW* ∝ λ², so the ratio quadruples
    assert lam[1]["dir_top_ratio"] == pytest.approx(4 * lam[0]["dir_top_ratio"], rel=1e-6)
    assert lam[1]["dir_top_cos"] == pytest.approx(lam[0]["dir_top_cos"], abs=1e-9)


def test_task_sweep_weight_metrics_cover_the_merged_tasks(tmp_path):
    paths = write_task_adapters(tmp_path, 3, SHAPE, r=4, alpha=8, share=1.0, with_extras=False)
    adapters = load_adapter_set(paths).materialize()
    rows = sweep_tasks(adapters, "task_arithmetic", [2, 3], params={"lam": 1.0})
    assert [r["dir_top_ratio"] for r in rows] == pytest.approx([4.0, 9.0], rel=1e-6)  # (λk)² for k identical tasks
    assert all(r["dir_rest_cos"] == pytest.approx(1.0, abs=1e-6) for r in rows)


# ---- CLI end to end ---------------------------------------------------------------------------

def test_analyze_cli_end_to_end(task_paths, tmp_path, capsys):
    merged_dir = tmp_path / "merged-official"
    merge_to_folder(task_paths, merged_dir, "robustmerge", preset="official")
    out = tmp_path / "analysis"
    rc = main(["analyze", "--adapters", *map(str, task_paths), "--merged", str(merged_dir),
               "--merge", "robustmerge:official", "--merge", "task_arithmetic,lam=0.5", "--out", str(out), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert {p.name for p in out.iterdir()} == PNGS | {"analysis.json", "README.md"}
    for name in PNGS:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (out / name).stat().st_size > 10_000
    report = json.loads((out / "analysis.json").read_text())
    assert {"schema_version", "tasks", "merged", "rank", "n_modules", "settings", "layer_groups", "spectra",
            "direction"} <= set(report)
    assert report["tasks"] == ["task0", "task1", "task2"] and report["n_modules"] == 14 and report["rank"] == 4
    labels = ["merged-official", "robustmerge:official", "task_arithmetic,lam=0.5"]
    assert list(report["direction"]) == labels
    assert list(report["layer_groups"]) == ["layer 0", "layer 1"]
    assert {"per_task", "merged", "pruning", "by_layer", "by_layer_group", "per_module"} <= set(report["spectra"])
    assert set(report["spectra"]["pruning"]) == {"original", "pruned", "pruned_scaled"}
    for lab in labels:
        d = report["direction"][lab]
        assert {"tasks", "mean", "by_projection", "by_index", "per_module"} <= set(d)
        assert set(d["mean"]) == {"all", "layer 0", "layer 1"}
        assert set(d["mean"]["all"]) == {"top_cos", "top_ratio", "rest_cos", "rest_ratio"}
    # the folder (scaling read from its config) and the in-memory merge give the same numbers
    a, b = report["direction"]["merged-official"], report["direction"]["robustmerge:official"]
    for t in report["tasks"]:
        assert a["tasks"][t]["all"] == pytest.approx(b["tasks"][t]["all"], rel=1e-6)
    readme = (out / "README.md").read_text()
    for name in PNGS | {"analysis.json"}:
        assert f"]({name})" in readme
    assert "cos(ΔW* v_i, u_i)" in readme and "| merged-official |" in readme
    assert "merged-official: cos largest" in capsys.readouterr().out


def test_analyze_cli_errors_and_no_figures(task_paths, tmp_path, capsys, monkeypatch):
    out = tmp_path / "a"
    assert main(["analyze", "--adapters", *map(str, task_paths), "--merged", str(tmp_path / "nope"),
                 "--out", str(out), "-q"]) == 2
    assert "nope" in capsys.readouterr().err and not out.exists()
    assert main(["analyze", "--adapters", *map(str, task_paths), "--merge", "bogus", "--out", str(out), "-q"]) == 2
    assert "unknown merge method 'bogus'" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # as if the plot extra were missing
    assert main(["analyze", "--adapters", *map(str, task_paths), "--out", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "plot extra" in err and "--no-figures" in err and not out.exists()
    assert main(["analyze", "--adapters", *map(str, task_paths), "--out", str(out), "--no-figures", "-q"]) == 0
    assert {p.name for p in out.iterdir()} == {"analysis.json", "README.md"}
    report = json.loads((out / "analysis.json").read_text())
    assert report["direction"] == {} and len(report["spectra"]["per_task"]["task1"]) == 4


def test_sweep_cli_end_to_end(task_paths, tmp_path, capsys):
    out = tmp_path / "sweeps"
    rc = main(["sweep", "--adapters", *map(str, task_paths), "--preset", "paper", "--prune-values", "0.2", "0.5",
               "--lam-values", "1", "2", "--out", str(out), "-q"])
    assert rc == 0, capsys.readouterr().err
    names = {"prune", "lambda", "tasks"}
    assert {p.name for p in out.iterdir()} == {f"{n}.{e}" for n in names for e in ("csv", "png")} | {
        "sweeps.json", "README.md"}
    with open(out / "prune.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["keep"]) for r in rows] == [0.2, 0.5] and rows[0]["preset"] == "paper"
    assert all(math.isfinite(float(r["dir_rest_cos"])) for r in rows)
    readme = (out / "README.md").read_text()
    assert "](prune.png)" in readme and "](tasks.csv)" in readme
    out2 = tmp_path / "variants"
    rc = main(["sweep", "--adapters", *map(str, task_paths), "--param", "variant", "--values", "full", "no_norm",
               "--out", str(out2), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert (out2 / "variant.png").is_file() and (out2 / "variant.csv").read_text().count("\n") == 3
    assert main(["sweep", "--adapters", *map(str, task_paths), "--param", "nope", "--values", "1",
                 "--out", str(tmp_path / "x"), "-q"]) == 2
    assert "cannot sweep 'nope'" in capsys.readouterr().err
