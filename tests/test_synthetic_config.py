"""Synthetic task folders carry the full LLaVA config a real training run writes, so a merge
of them loads on the matching base like a merge of trained adapters."""
from __future__ import annotations

import dataclasses
import json

import torch

from llava.model.builder import load_pretrained_model
from llava.model.tiny import make_tiny_llava
from robustmerge.adapters import load_adapter_set
from robustmerge.driver import merge_to_folder
from robustmerge.synthetic import LLAVA_7B, LlamaShape, write_task_adapters

# The keys of liuhaotian/llava-v1.5-7b-lora's config.json (LLaVA-1.5 train.py, transformers 4.37)
RUN_KEYS = {
    "_name_or_path", "architectures", "bos_token_id", "eos_token_id", "freeze_mm_mlp_adapter", "hidden_act",
    "hidden_size", "image_aspect_ratio", "initializer_range", "intermediate_size", "max_position_embeddings",
    "mm_hidden_size", "mm_patch_merge_type", "mm_projector_lr", "mm_projector_type", "mm_use_im_patch_token",
    "mm_use_im_start_end", "mm_vision_select_feature", "mm_vision_select_layer", "mm_vision_tower", "model_type",
    "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "pad_token_id", "pretraining_tp",
    "rms_norm_eps", "rope_scaling", "rope_theta", "tie_word_embeddings", "tokenizer_model_max_length",
    "tokenizer_padding_side", "torch_dtype", "transformers_version", "tune_mm_mlp_adapter", "use_cache",
    "use_mm_proj", "vocab_size",
}


def test_task_folder_config_is_a_full_llava_run_config(tmp_path):
    shape = dataclasses.replace(LLAVA_7B, layers=1)  # 7B widths, one layer
    folder = write_task_adapters(tmp_path, 1, shape, r=2)[0]
    config = json.loads((folder / "config.json").read_text())
    assert set(config) == RUN_KEYS
    assert config["mm_vision_tower"] == "openai/clip-vit-large-patch14-336" and config["image_aspect_ratio"] == "pad"
    assert (config["num_attention_heads"], config["vocab_size"], config["max_position_embeddings"]) == (32, 32000, 4096)
    assert config["model_type"] == "llava_llama" and config["mm_vision_select_layer"] == -2


def test_merge_of_synthetic_adapters_loads_on_the_tiny_base(tmp_path):
    """Default LlamaShape = the tiny model: the merged folder's (copied) config builds the
    tiny architecture, and the merged LoRA changes the logits."""
    tiny = make_tiny_llava(tmp_path / "model", seed=0)
    tasks = write_task_adapters(tmp_path / "tasks", 2, LlamaShape(), r=4)
    merged = tmp_path / "merged"
    merge_to_folder(load_adapter_set(tasks), merged, method="task_arithmetic", hash_inputs=False)
    assert json.loads((merged / "config.json").read_text())["mm_vision_tower"] == "clip-tiny"
    _, model, _, _ = load_pretrained_model(merged, tiny.base, device="cpu", dtype="fp32")
    _, base, _, _ = load_pretrained_model(tiny.base, device="cpu", dtype="fp32")
    assert model.config.vocab_size == 512 and model.config.num_attention_heads == 4
    ids = torch.tensor([[1, 5, 9, 23, 40]])
    with torch.no_grad():
        assert not torch.equal(model(input_ids=ids).logits, base(input_ids=ids).logits)
