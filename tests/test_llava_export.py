"""Dense export of base + merged adapter, in the original and the transformers-native layout.

The transformers-native export is loaded with `transformers.LlavaForConditionalGeneration`
and its `AutoProcessor`, and must reproduce this project's prompt ids, pixel values, logits
(<= 1e-4) and greedy tokens on the fixture prompts.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FIXTURES, needs_fixture
from PIL import Image
from safetensors import safe_open

from llava.model.builder import load_pretrained_model

TINY = FIXTURES / "llava_tiny"
BASE = TINY / "llava-v1.5-tiny"
LOGIT_TOL = 1e-4

pytestmark = needs_fixture("llava_tiny")  # every test here reads the tiny fixture models


@pytest.fixture(scope="module")
def llava_exported(tmp_path_factory):
    """base + lora-merged-ab exported once in both layouts through the CLI."""
    from llava.model.export import main

    out = tmp_path_factory.mktemp("export") / "merged-ab"
    argv = ["--model-path", str(TINY / "lora-merged-ab"), "--model-base", str(BASE), "--out", str(out),
            "--layout", "both", "--dtype", "fp32"]  # fmt: skip
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def llava_merged():
    """This project's model: base + lora-merged-ab, merged, fp32."""
    return load_pretrained_model(TINY / "lora-merged-ab", BASE, device="cpu", dtype="fp32")


def _image(pair) -> Image.Image:
    return Image.open(TINY / "reference" / pair["image"]).convert("RGB")


def test_hf_export_matches_project_model(llava_exported, llava_merged, llava_ref):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    ref, tensors = llava_ref
    _, ours, _, _ = llava_merged
    hf, info = LlavaForConditionalGeneration.from_pretrained(llava_exported / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    processor = AutoProcessor.from_pretrained(llava_exported / "hf")
    image_id = hf.config.image_token_index
    assert image_id == 512 and processor.tokenizer.convert_ids_to_tokens(image_id) == "<image>"
    for i, pair in enumerate(ref["pairs"][:4]):  # the image pairs
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": pair["question"]}]}]
        assert processor.apply_chat_template(messages, add_generation_prompt=True) == pair["prompt"]
        enc = processor(images=_image(pair), text=pair["prompt"], return_tensors="pt")
        expanded = [t for x in pair["input_ids"] for t in ([image_id] * 64 if x == -200 else [x])]
        assert enc.input_ids[0].tolist() == expanded
        assert (enc.pixel_values - tensors[f"pair{i}.pixel_values"]).abs().max().item() <= 1e-6
        with torch.no_grad():
            hf_logits = hf(input_ids=enc.input_ids, pixel_values=enc.pixel_values).logits[0]  # [T, 513]
            our_logits = ours(input_ids=torch.tensor([pair["input_ids"]]), images=enc.pixel_values).logits[0]
        assert (hf_logits[:, :512] - our_logits).abs().max().item() <= LOGIT_TOL
        assert (hf_logits[:, :512] - tensors[f"pair{i}.merged_ab.logits"]).abs().max().item() <= LOGIT_TOL
        assert (hf_logits.argmax(-1) != image_id).all()
        out = hf.generate(**enc, do_sample=False, max_new_tokens=16)
        assert out[0, enc.input_ids.shape[1] :].tolist() == pair["outputs"]["merged_ab"]["greedy16"]["new_token_ids"]


def test_llava_layout_export_round_trips(llava_exported, llava_merged, llava_ref):
    ref, tensors = llava_ref
    folder = llava_exported / "llava"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "llava_llama" and config["architectures"] == ["LlavaLlamaForCausalLM"]
    assert config["rope_theta"] == 10000.0 and config["rope_scaling"] is None  # readable by transformers 4.3x
    assert config["mm_vision_tower"] == "clip-tiny" and (folder / "clip-tiny" / "model.safetensors").is_file()
    assert (folder / "tokenizer.model").read_bytes() == (BASE / "tokenizer.model").read_bytes()
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.mm_projector.0.weight" in keys and not any("vision_tower" in k for k in keys)
    _, merged, _, _ = llava_merged
    _, dense, processor, _ = load_pretrained_model(folder, None, device="cpu", dtype="fp32")
    for name, value in merged.state_dict().items():
        assert torch.equal(value, dense.state_dict()[name]), name
    pair = ref["pairs"][3]
    pixels = processor(images=_image(pair), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        a = dense(input_ids=torch.tensor([pair["input_ids"]]), images=tensors["pair3.pixel_values"]).logits[0]
    assert (a - tensors["pair3.merged_ab.logits"]).abs().max().item() <= LOGIT_TOL
    assert pixels.shape == (1, 3, 64, 64)


def test_export_refuses_to_overwrite(llava_exported):
    from llava.model.export import main

    argv = ["--model-path", str(BASE), "--out", str(llava_exported / "hf"), "--layout", "hf"]
    assert main(argv) == 2


def test_bf16_export_dtype(tmp_path):
    from llava.model.export import export_model

    out = export_model(BASE, tmp_path / "bf16", "llava", dtype="bf16")
    assert json.loads((out / "config.json").read_text())["torch_dtype"] == "bfloat16"
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("lm_head.weight").dtype == torch.bfloat16
    _, model, _, _ = load_pretrained_model(out, None, device="cpu", dtype="bf16")
    assert model.dtype == torch.bfloat16
