"""A merged adapter folder loads with PEFT and changes a tiny Llama exactly as W0 + s·B*A* predicts."""
import copy
import json

import peft
import pytest
import torch
import transformers

from robustmerge import merge_to_folder
from robustmerge.synthetic import LlamaShape, write_task_adapters

SHAPE = LlamaShape(layers=2, hidden=32, intermediate=48, mm_hidden=16)


def tiny_llama(tmp_path):
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=SHAPE.hidden, intermediate_size=SHAPE.intermediate,
                                   num_hidden_layers=SHAPE.layers, num_attention_heads=4, num_key_value_heads=4,
                                   max_position_embeddings=64)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).eval()
    return model


def predicted_logits(base, folder, ids):
    """Apply W0 + scaling · B* A* by hand, from the files, and run the plain model."""
    from safetensors.torch import load_file

    cfg = json.loads((folder / "adapter_config.json").read_text())
    scaling = cfg["lora_alpha"] / cfg["r"]
    tensors = load_file(folder / "adapter_model.safetensors")
    model = copy.deepcopy(base)
    with torch.no_grad():
        for key, a in tensors.items():
            if ".lora_A." not in key:
                continue
            b = tensors[key.replace(".lora_A.", ".lora_B.")]
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            model.get_submodule(name).weight += scaling * (b @ a)
        return model(ids).logits


@pytest.mark.parametrize("method,preset", [("robustmerge", "official"), ("robustmerge", "paper"), ("ties", None),
                                           ("task_arithmetic", None), ("dare", None), ("pcb", None)])
def test_peft_loads_merge_and_logits_match(method, preset, tmp_path):
    base = tiny_llama(tmp_path)
    folders = write_task_adapters(tmp_path / "tasks", 3, SHAPE, r=4, alpha=8, seed=4, with_extras=False)
    out = tmp_path / "merged"
    merge_to_folder(folders, out, method, preset=preset)
    ids = torch.tensor([[1, 5, 9, 33, 2, 70, 11]])
    with torch.no_grad():
        base_logits = base(ids).logits
        want = predicted_logits(base, out, ids)
        peft_model = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(out)).eval()
        got = peft_model(ids).logits
    change = (want - base_logits).abs().max().item()
    assert change > 1e-3  # the merge does change the model
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * change)


def test_mixed_ranks_fold_scaling(tmp_path):
    """Tasks with different r / alpha / rsLoRA: scalings are folded into B, ranks padded, and the
    loaded update equals the sum of factors with each task's own scaling (Task Arithmetic, λ=1)."""
    base = tiny_llama(tmp_path)
    specs = [(4, 8, False), (6, 6, False), (2, 4, True)]
    folders = []
    for i, (r, alpha, rslora) in enumerate(specs):
        f = write_task_adapters(tmp_path / "tasks", 1, SHAPE, r=r, alpha=alpha, seed=10 + i, with_extras=False,
                                names=[f"t{i}"])[0]
        cfg = json.loads((f / "adapter_config.json").read_text())
        cfg["use_rslora"] = rslora
        (f / "adapter_config.json").write_text(json.dumps(cfg))
        folders.append(f)
    out = tmp_path / "merged"
    record = merge_to_folder(folders, out, "task_arithmetic")
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["r"] == 6 and cfg["lora_alpha"] == 6 and cfg["use_rslora"] is False
    assert any("folded" in line for line in record["harmonisation"])
    assert any("zero-padded to 6" in line for line in record["harmonisation"])

    from safetensors.torch import load_file

    merged = load_file(out / "adapter_model.safetensors")
    task_tensors = [load_file(f / "adapter_model.safetensors") for f in folders]
    key = "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"
    bkey = key.replace("lora_A", "lora_B")
    scal = [alpha / (r ** 0.5 if rs else r) for r, alpha, rs in specs]
    sum_b = sum(torch.nn.functional.pad(s * t[bkey], (0, 6 - t[bkey].shape[1])) for s, t in zip(scal, task_tensors))
    sum_a = sum(torch.nn.functional.pad(t[key], (0, 0, 0, 6 - t[key].shape[0])) for t in task_tensors)
    torch.testing.assert_close(merged[bkey] @ merged[key], sum_b @ sum_a, rtol=1e-5, atol=1e-8)
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        got = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(out)).eval()(ids).logits
        want = predicted_logits(base, out, ids)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
