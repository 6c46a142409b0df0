"""llava.model.adapter_swap: adapters swapped on one loaded base give the logits of a fresh load.

A tiny LLaVA and two random LoRA task folders (with projectors) are built in tmp_path, plus a
robustmerge merge of the two. Swapping A -> B -> merged -> A on one base must reproduce
`load_pretrained_model(folder, model_base=base)` of each (fp32 logits within 1e-5), and
detaching must leave every base tensor bit-for-bit as loaded.
"""

from __future__ import annotations

import torch
from PIL import Image, ImageDraw
import pytest

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import conv_templates
from llava.mm_utils import process_images, tokenizer_image_token
from llava.model.adapter_swap import AdapterSwapper, lora_module_names
from llava.model.builder import load_pretrained_model
from llava.model.errors import LlavaLoadError
from llava.model.tiny import TinySizes, make_tiny_llava, make_tiny_lora

TOL = 1e-5
SIZES = TinySizes(image_size=32, patch_size=8)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from robustmerge.driver import merge_to_folder

    root = tmp_path_factory.mktemp("swap")
    llava = make_tiny_llava(root / "tiny", SIZES, seed=3)
    a = make_tiny_lora(llava.base, root / "lora-a", seed=11, scale=0.2)
    b = make_tiny_lora(llava.base, root / "lora-b", seed=12, scale=0.2, weights_format="safetensors")
    merged = root / "merged"
    merge_to_folder([a, b], merged, "robustmerge", preset="official")
    return {"base": llava.base, "a": a, "b": b, "merged": merged}


def _inputs(tokenizer, processor, config) -> tuple[torch.Tensor, torch.Tensor]:
    conv = conv_templates["vicuna_v1"].copy()
    conv.append_message(conv.roles[0], "<image>\nWhat color is the shape?")
    conv.append_message(conv.roles[1], None)
    ids = torch.tensor([tokenizer_image_token(conv.get_prompt(), tokenizer, IMAGE_TOKEN_INDEX)])  # [1, L]
    img = Image.new("RGB", (32, 32), (200, 200, 200))
    ImageDraw.Draw(img).ellipse((6, 8, 22, 24), fill=(200, 30, 30))
    return ids, process_images([img], processor, config)  # [1, 3, 32, 32]


def _logits(model, tokenizer, processor) -> torch.Tensor:
    ids, pixels = _inputs(tokenizer, processor, model.config)
    with torch.no_grad():
        return model(input_ids=ids, images=pixels).logits[0]  # [T, V]


def _fresh_logits(folder, base) -> torch.Tensor:
    tokenizer, model, processor, _ = load_pretrained_model(folder, model_base=base, device="cpu", dtype="fp32")
    return _logits(model, tokenizer, processor)


def _state(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_swaps_match_fresh_loads_and_restore_the_base(tiny):
    swapper = AdapterSwapper(tiny["base"], device="cpu", dtype="fp32")
    before = _state(swapper.model)
    base_logits = _logits(swapper.model, swapper.tokenizer, swapper.image_processor)
    fresh = {name: _fresh_logits(tiny[name], tiny["base"]) for name in ("a", "b", "merged")}
    assert (fresh["a"] - fresh["b"]).abs().max() > 1e-2  # the adapters do change the model
    for name in ("a", "b", "merged", "a"):
        swapper.attach(tiny[name])  # attaching detaches the previous adapter first
        assert swapper.current == tiny[name]
        got = _logits(swapper.model, swapper.tokenizer, swapper.image_processor)
        assert (got - fresh[name]).abs().max().item() <= TOL, name
    swapper.detach()
    assert swapper.current is None
    after = _state(swapper.model)
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)  # bit for bit
    assert torch.equal(_logits(swapper.model, swapper.tokenizer, swapper.image_processor), base_logits)
    assert not any(".lora_" in name for name, _ in swapper.model.named_modules())


def test_context_manager_bundle_and_base_equals_fresh_base(tiny):
    swapper = AdapterSwapper(tiny["base"], device="cpu", dtype="fp32")
    tokenizer, model, processor, _ = load_pretrained_model(tiny["base"], device="cpu", dtype="fp32")
    with swapper.attached(tiny["b"], model_id="task-b") as bundle:
        assert bundle.model_id == "task-b" and bundle.model is swapper.model
        got = _logits(bundle.model, bundle.tokenizer, bundle.image_processor)
        assert (got - _fresh_logits(tiny["b"], tiny["base"])).abs().max().item() <= TOL
    assert swapper.current is None
    with swapper.attached(None) as bundle:  # the base alone
        assert torch.equal(_logits(bundle.model, bundle.tokenizer, bundle.image_processor),
                           _logits(model, tokenizer, processor))


def test_bad_folders_fail_clearly_and_leave_the_base_alone(tiny, tmp_path):
    swapper = AdapterSwapper(tiny["base"], device="cpu", dtype="fp32")
    before = _state(swapper.model)
    with pytest.raises(LlavaLoadError, match="adapter_config.json"):
        swapper.attach(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny["a"].iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = torch.load(broken / "adapter_model.bin", weights_only=True)
    weights.pop(next(k for k in weights if k.endswith("lora_B.weight")))  # an unpaired factor
    torch.save(weights, broken / "adapter_model.bin")
    with pytest.raises(LlavaLoadError):
        swapper.attach(broken)
    assert swapper.current is None
    after = _state(swapper.model)
    assert all(torch.equal(after[k], before[k]) for k in before)
    with pytest.raises(LlavaLoadError, match="not a full LLaVA model"):
        AdapterSwapper(tiny["a"])


def test_lora_module_names():
    keys = ["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
            "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
            "base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"]
    assert lora_module_names(keys) == ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"]
    with pytest.raises(LlavaLoadError, match="not a LoRA factor"):
        lora_module_names(["base_model.model.model.embed_tokens.lora_embedding_A"])
