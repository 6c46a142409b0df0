"""Every case of fixtures/baselines (outputs of the public reference codes of TIES, DARE, PCB and
task arithmetic; see its README) through the PUBLIC CLI: the case's stacked factors become one
PEFT adapter folder per task (r = lora_alpha, so every task's scaling is 1 and the factors are
merged as stored), ``robustmerge merge --method ... --set ...`` merges them, and the merged
factors (the output config's scaling checked to be 1, so the factors carry λ on each as the
README compares them) must be within the case's tolerance of expected.safetensors:
max |got - expected| <= rtol_of_max · max |expected| per tensor, plus the exact zero set where
the case says ``support_exact``. New case folders are picked up by iterating the folder.

Also the DARE statistics: the drop share is p within a binomial bound, and the rescaled
survivors are unbiased (their mean over many seeds is the input within a stated bound).
"""
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import FIXTURES, needs_fixture
from robustmerge.cli import main
from robustmerge.methods import ModuleContext, get_method
from robustmerge.methods.dare import LEVELS, drop_level

ROOT = FIXTURES / "baselines"
CASES = sorted(p.name for p in ROOT.iterdir() if (p / "case.json").is_file()) if ROOT.is_dir() else ["<missing>"]


def cli_settings(case: dict, folder: Path) -> list[str]:
    """``--method/--preset/--set`` arguments that run the case's reference rule."""
    method, p, ref_file = case["method"], case["params"], case["reference"]["file"]
    if method == "ties":
        if "consensus_method" in p:  # mergekit: uniform weight cancels under normalize; λ = lambda
            sets = ["variant=mergekit", f"consensus={p['consensus_method']}", f"density={p['density']}",
                    f"lam={p['lambda']}"]
        elif "majority_sign_method" in p:  # PEFT: the uniform weight is an overall factor (λ)
            sets = ["variant=peft", f"sign={p['majority_sign_method']}", f"density={p['density']}",
                    f"lam={p['weight']}"]
        else:
            sets = ["variant=original", f"density={p['K']}", f"lam={p['lambda']}"]
        args = ["--method", "ties"]
    elif method == "magnitude_prune":
        args, sets = ["--method", "ties"], ["variant=peft", "elect=none", f"density={p['density']}",
                                            f"lam={p['weight']}"]
    elif method == "dare":
        rescale = ("l1" if p["rescale"] else "none") if "density" in p else "inverse"  # mergekit vs MergeLM
        args = ["--method", "dare"]
        sets = [f"drop={p['drop']}", f"rescale={rescale}", f"mask={folder / 'inputs.safetensors'}",
                f"lam={p.get('lambda', 1.0)}"]
    elif method == "pcb":
        preset = "vision" if "vision" in ref_file else "nlp" if "nlp" in ref_file else "pcb-merging"
        lam = p["lams"] if "lams" in p else p["lambda"]  # equal per-task lams = λ on each factor
        args, sets = ["--method", "pcb", "--preset", preset], [f"ratio={p['ratio']}", f"clip={p['clip']}",
                                                               f"lam={lam}"]
    elif method == "task_arithmetic":
        args, sets = ["--method", "task_arithmetic"], [f"lam={p['lambda']}"]
    else:
        pytest.fail(f"{folder.name}: no CLI mapping for method {method!r}; extend cli_settings")
    return args + [a for s in sets + ["lambda_on=both"] for a in ("--set", s)]


def write_task_folders(inputs: dict, root: Path) -> tuple[list[Path], list[str]]:
    """One PEFT adapter folder per task from the stacked ``<module>.A`` [N, r, d_in] /
    ``<module>.B`` [N, d_out, r] (stored dtype kept), r = lora_alpha (scaling 1)."""
    modules = sorted({k[:-2] for k in inputs if k.endswith((".A", ".B"))})
    n, r = inputs[modules[0] + ".A"].shape[:2]
    folders = []
    for t in range(n):
        folder = root / f"task{t}"
        folder.mkdir(parents=True)
        tensors = {}
        for m in modules:
            tensors[f"base_model.model.{m}.lora_A.weight"] = inputs[m + ".A"][t].contiguous()
            tensors[f"base_model.model.{m}.lora_B.weight"] = inputs[m + ".B"][t].contiguous()
        save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
        config = {"peft_type": "LORA", "r": int(r), "lora_alpha": int(r), "lora_dropout": 0.0, "bias": "none",
                  "target_modules": sorted({m.rsplit(".", 1)[1] for m in modules}), "task_type": "CAUSAL_LM",
                  "base_model_name_or_path": "fixture", "fan_in_fan_out": False, "use_rslora": False}
        (folder / "adapter_config.json").write_text(json.dumps(config))
        folders.append(folder)
    return folders, modules


@pytest.mark.parametrize("name", CASES)
@needs_fixture("baselines")
def test_case_through_the_cli(name, tmp_path, capsys):
    folder = ROOT / name
    case = json.loads((folder / "case.json").read_text())
    inputs, expected = load_file(folder / "inputs.safetensors"), load_file(folder / "expected.safetensors")
    tasks, modules = write_task_folders(inputs, tmp_path / "in")
    out = tmp_path / "merged"
    argv = ["merge", *cli_settings(case, folder), "--adapters", *map(str, tasks), "--out", str(out), "--no-hash",
            "--quiet"]
    assert main(argv) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["lora_alpha"] / config["r"] == 1.0 and not config.get("use_rslora")  # factors = ΔW's factors
    got = load_file(out / "adapter_model.safetensors")
    tol = case["tolerance"]
    assert tol["mode"] == "max_abs_rel"
    for m in modules:
        for factor in "AB":
            want = expected[f"{m}.{factor}"]  # float64
            have = got[f"base_model.model.{m}.lora_{factor}.weight"].double()
            assert have.shape == want.shape
            err = (have - want).abs().max().item()
            assert err <= tol["rtol_of_max"] * want.abs().max().item(), (m, factor, err)
            if tol.get("support_exact"):
                assert torch.equal(have == 0, want == 0), (m, factor, int(((have == 0) != (want == 0)).sum()))


def test_cases_are_found():
    """The case list is the folder's content (a missing fixture folder is reported by needs_fixture)."""
    if ROOT.is_dir():
        assert len(CASES) >= 20 and "ties_original_zero_sign" in CASES


# ---- DARE statistics ---------------------------------------------------------------------

def dare(X, seed, **params):
    """The merged A* of DARE on the A stack X (a dummy one-entry B stack beside it)."""
    m = get_method("dare")
    return m.rule(X, torch.ones(X.shape[0], 1, 1), m.resolve(None, params), ModuleContext("m", seed))[0]


@pytest.mark.parametrize("drop", [0.1, 0.3, 0.5, 0.9])
def test_dare_drop_share_is_binomial(drop):
    """One task of 2**20 non-zero entries: the dropped share is within 5 binomial standard
    deviations of p (1 - p is the survivors' probability), and survivors are x / (1 - p_m)
    with p_m = round(p·32768)/32768 exactly."""
    X = torch.rand(1, 1024, 1024, generator=torch.Generator().manual_seed(1)) + 0.5  # [1, 1024, 1024], no zeros
    got = dare(X, seed=11, drop=drop)
    share = (got == 0).double().mean().item()
    assert abs(share - drop) < 5 * math.sqrt(drop * (1 - drop) / X.numel())
    keep_p = 1 - drop_level(drop) / LEVELS
    kept = got != 0
    assert torch.equal(got[kept], (X[0] * (1.0 / keep_p))[kept])


@pytest.mark.parametrize("drop", [0.3, 0.7])
def test_dare_is_unbiased(drop):
    """Mean over S = 2000 seeds of the rescaled survivors of a 64-entry x: per entry
    |mean - x| <= 5σ with σ = |x| sqrt(p_m / ((1 - p_m) S)) (each seed gives x/(1-p_m) with
    probability 1 - p_m, else 0), and the mean of mean/x over the 64 entries is 1 within
    5 sqrt(p_m / ((1 - p_m) S 64)). (The 6e-5 bias of a nominal 1/(1-p) is far below what S
    seeds resolve; the exact survivor value in the test above is what rules it out.)"""
    X = torch.linspace(0.5, 2.0, 64).reshape(1, 8, 8)
    S = 2000
    acc = torch.zeros(8, 8, dtype=torch.float64)
    for seed in range(S):
        acc += dare(X, seed=seed, drop=drop).double()
    mean = acc / S
    pm = drop_level(drop) / LEVELS
    sigma = X[0].double() * math.sqrt(pm / ((1 - pm) * S))
    assert bool(((mean - X[0]).abs() <= 5 * sigma).all())
    ratio = (mean / X[0]).mean().item()
    assert abs(ratio - 1) <= 5 * math.sqrt(pm / ((1 - pm) * S * 64))


# ---- the CLI surface of the variants -------------------------------------------------------

def test_methods_lists_the_variants(capsys):
    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    for needle in ("--set variant=<str>  default 'original', range {original, peft, mergekit}",
                   "--set sign=<str>  default 'total', range {total, frequency}",
                   "--set consensus=<str>  default 'sum', range {sum, count}",
                   "--set elect=<str>  default 'ties', range {ties, none}",
                   "--set rescale=<str>  default 'inverse', range {inverse, l1, none}",
                   "--set mask=<str>  default ''",
                   "--preset pcb-merging: ratio=0.1, clip=0.0001, inter=raw",
                   "--preset nlp: ratio=0.1, clip=0.01, inter=raw",
                   "--preset vision: ratio=0.05, clip=0.01, inter=signed_minmax"):
        assert needle in text, needle


def _mask_file(path, shapes, module="model.layers.0.self_attn.q_proj"):
    save_file({f"{module}.{f}.keep": torch.ones(s, dtype=torch.uint8) for f, s in shapes.items()}, str(path))
    return str(path)


def test_dare_mask_replay_and_its_errors(tmp_path):
    """A replayed mask is used as stored (all ones with rescale=inverse, p=0.3: X / 0.7 summed);
    a missing file, a missing key or a wrong shape is a user error naming the problem."""
    from robustmerge.errors import UserError

    m = get_method("dare")
    A = torch.randn(2, 3, 5, generator=torch.Generator().manual_seed(0))
    B = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(1))
    ctx = ModuleContext("base_model.model.model.layers.0.self_attn.q_proj")
    good = _mask_file(tmp_path / "m.safetensors", {"A": A.shape, "B": B.shape})
    a, _ = m.rule(A, B, m.resolve(None, {"drop": 0.3, "mask": good}), ctx)
    torch.testing.assert_close(a, A[0] / 0.7 + A[1] / 0.7)
    cases = [(str(tmp_path / "none.safetensors"), "does not exist"),
             (_mask_file(tmp_path / "k.safetensors", {"A": A.shape, "B": B.shape}, "other"), "has no"),
             (_mask_file(tmp_path / "s.safetensors", {"A": (2, 3, 6), "B": B.shape}), "has shape")]
    for path, message in cases:
        with pytest.raises(UserError, match=message):
            m.rule(A, B, m.resolve(None, {"drop": 0.3, "mask": path}), ctx)


def test_ties_model_trim_is_for_the_original_only():
    from robustmerge.errors import UserError

    class One:
        n, modules = 2, ["m"]

        def factors(self, module):
            return torch.ones(2, 2, 3), torch.ones(2, 4, 2)

    m = get_method("ties")
    with pytest.raises(UserError, match="variant='original' only"):
        m.prepare(One(), m.resolve(None, {"trim": "model", "variant": "peft"}))
