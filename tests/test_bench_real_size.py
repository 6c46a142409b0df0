"""bench.real_size's pieces at tiny shapes (the 7B run itself is not part of the test suite)."""
from __future__ import annotations

import json

import pytest
import torch

from bench.real_size import agreement, lora_shape, main, sizes_of, write_random_base
from llava.model.builder import load_pretrained_model
from llava.model.tensor_files import TensorFiles
from llava.model.tiny import write_clip_tower
from robustmerge.synthetic import llava_run_config


def test_random_base_is_streamed_in_bf16_and_loads_strictly(tmp_path):
    sizes = sizes_of("tiny")
    write_clip_tower(tmp_path / "clip-tiny", sizes, seed=0)
    write_random_base(tmp_path / "base", sizes, "clip-tiny", seed=1)
    files = TensorFiles(tmp_path / "base")
    assert {info.dtype for info in files.infos.values()} == {torch.bfloat16}
    assert torch.equal(files.get("model.norm.weight"), torch.ones(sizes.hidden_size, dtype=torch.bfloat16))
    lm_head = files.get("lm_head.weight").float()
    assert 0.06 < lm_head.std().item() < 0.1  # N(0, 0.02²) scaled by 4
    _, model, _, _ = load_pretrained_model(tmp_path / "base", device="cpu", dtype="bf16")  # fails on any missing key
    assert model.dtype == torch.bfloat16 and model.config.vocab_size == sizes.vocab_size
    config = json.loads((tmp_path / "base" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16" and config["mm_vision_tower"] == "clip-tiny"


@pytest.mark.parametrize("shape", ["tiny", "7b"])
def test_adapter_config_describes_the_base(shape):
    """The synthetic adapters' config.json (copied into the merge) builds the base's architecture."""
    sizes, run = sizes_of(shape), llava_run_config(lora_shape(shape))
    assert (run["hidden_size"], run["intermediate_size"], run["num_hidden_layers"], run["num_attention_heads"],
            run["vocab_size"], run["mm_hidden_size"]) == (
        sizes.hidden_size, sizes.intermediate_size, sizes.num_layers, sizes.num_heads, sizes.vocab_size,
        sizes.vision_hidden_size)
    if shape == "7b":
        assert run["mm_vision_tower"] == "openai/clip-vit-large-patch14-336"


def test_agreement_counts():
    runner = {"bs1": [{"new_token_ids": [1, 2], "text": "a", "first_logits": [0.0, 1.0, 0.5]},
                      {"new_token_ids": [3], "text": "b", "first_logits": [2.0, 0.0, 0.0]}],
              "bs2_identical": 1}
    hf = {"loading": {"missing_keys": [], "unexpected_keys": []},
          "answers": [{"new_token_ids": [1, 2], "first_logits": [0.0, 1.25, 0.5, -9.0]},
                      {"new_token_ids": [4], "first_logits": [2.0, 0.0, 0.0, -9.0]}]}
    got = agreement({"runner": runner, "hf-load": hf})
    assert got == {"questions": 2, "bs2_identical_to_bs1": 1, "hf_tokens_identical_to_runner": 1,
                   "hf_loading_clean": True, "first_step_logits_max_abs_diff": 0.25, "runner_top1_margin_min": 0.5}


@pytest.mark.slow
def test_whole_benchmark_at_tiny_shape(tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["--shape", "tiny", "--root", str(tmp_path / "root"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["step"] for r in report["steps"]] == ["base", "adapters", "merge-official", "merge-ties", "runner",
                                                    "export-hf", "hf-load"]
    assert report["agreement"]["hf_tokens_identical_to_runner"] == 3 and report["agreement"]["hf_loading_clean"]
    assert not (tmp_path / "root").exists()  # cleaned up


def test_layers_override_keeps_the_widths():
    sizes = sizes_of("7b", layers=1)
    assert (sizes.num_layers, sizes.hidden_size, sizes.vocab_size, sizes.image_size) == (1, 4096, 32000, 336)
    assert lora_shape("7b", 1).layers == 1 and lora_shape("7b").layers == 32
