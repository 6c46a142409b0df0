"""Every case of fixtures/lora_native through the public CLI: PEFT adapter folders made from the
case's factors (its r and alpha), ``robustmerge merge --method … --set …``, the written folder
read back, s_out·B'A' against ``<m>.delta`` at the case's tolerance (rel_fro and max_abs)."""
import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import FIXTURES, needs_fixture

ROOT = FIXTURES / "lora_native"
CASES = sorted(p.name for p in ROOT.iterdir() if p.is_dir()) if ROOT.is_dir() else []


def cli_args(case: dict) -> list[str]:
    """The case's reference call as our method and --set values."""
    method, space, p = case["method"], case["space"], case["params"]
    if method == "dc_merge":
        return ["dc_merge", "--set", f"smoothing={p['smoothing_strategy']}", "--set", f"rho={p['rho']}"]
    sets = {"space": space}
    if method == "sum":
        method = "iso_c" if p.get("isotropize") else "task_arithmetic"
    elif method == "ties":
        sets["density"] = p["topK"] / 100
    elif method == "cart":
        sets.update(rank_fraction=p["cart_pruning_rank"], residual_scale=p["cart_scaling_coeffs"])
    elif method == "iso_cts":
        method, sets["common_space_fraction"] = "iso_c", p["common_space_fraction"]
    assert not p.get("isotropize") or method == "iso_c", case["case"]
    out = [method]
    for k, v in sets.items():
        out += ["--set", f"{k}={v}"]
    return out


def write_adapters(tmp, case, inputs) -> list[str]:
    folders = []
    for n in range(case["N"]):
        folder = tmp / f"task{n}"
        folder.mkdir()
        tensors = {}
        for m in case["modules"]:
            base = f"base_model.model.model.layers.0.self_attn.{m}"
            tensors[f"{base}.lora_A.weight"] = inputs[f"{m}.A"][n].contiguous()
            tensors[f"{base}.lora_B.weight"] = inputs[f"{m}.B"][n].contiguous()
        save_file(tensors, str(folder / "adapter_model.safetensors"))
        (folder / "adapter_config.json").write_text(json.dumps({
            "peft_type": "LORA", "r": case["r"], "lora_alpha": case["alpha"], "target_modules": list(case["modules"]),
            "base_model_name_or_path": "none", "task_type": "CAUSAL_LM"}))
        folders.append(str(folder))
    return folders


def read_delta(out, module) -> torch.Tensor:
    cfg = json.loads((out / "adapter_config.json").read_text())
    t = load_file(str(out / "adapter_model.safetensors"))
    base = f"base_model.model.model.layers.0.self_attn.{module}"
    a, b = t[f"{base}.lora_A.weight"].double(), t[f"{base}.lora_B.weight"].double()
    assert a.shape[0] == b.shape[1] == cfg["r"]
    return cfg["lora_alpha"] / cfg["r"] * (b @ a)


@needs_fixture("lora_native")
@pytest.mark.parametrize("name", CASES)
def test_case_through_cli(tmp_path, name):
    case = json.loads((ROOT / name / "case.json").read_text())
    inputs = load_file(str(ROOT / name / "inputs.safetensors"))
    expected = load_file(str(ROOT / name / "expected.safetensors"))
    out = tmp_path / "merged"
    cmd = [sys.executable, "-m", "robustmerge", "merge", "--method", *cli_args(case),
           "--adapters", *write_adapters(tmp_path, case, inputs), "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    tol = case["tolerance"]
    for m in case["modules"]:
        got, exp = read_delta(out, m), expected[f"{m}.delta"]
        rel = ((got - exp).norm() / exp.norm()).item()
        assert rel <= tol["rel_fro"], (m, rel)
        assert (got - exp).abs().max().item() <= tol["rel_fro"] * exp.abs().max().item(), m
