"""The streamed dense export: same bytes as merging in memory, shards, file modes, and memory
that stays near one tensor's size whatever the model's size.

"Today's export" (before streaming) loaded the merged model with `load_pretrained_model`
(PEFT merge in float32), cast its state dict and saved it with safetensors; the tests rebuild
that reference in memory and compare bytes (llava layout) or tensors (hf layout, whose key
names are now the published llava-hf ones).
"""
from __future__ import annotations

import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save

from bench.measure import run_module_measured
from llava.model.builder import load_pretrained_model
from llava.model.export import export_model, hf_name, main
from llava.model.tensor_files import TensorFiles, parse_size
from llava.model.tiny import TinySizes, make_tiny_llava, make_tiny_lora


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    model = make_tiny_llava(root / "model", seed=0)
    lora = make_tiny_lora(model.base, root / "lora", seed=5, scale=0.3, weights_format="safetensors")
    return model, lora


def _merged_state(lora, base, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The pre-streaming export's tensors: the loader's merged model, tower excluded, cast."""
    _, model, _, _ = load_pretrained_model(lora, base, device="cpu", dtype="fp32")
    return {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items() if ".vision_tower." not in k}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_llava_layout_is_byte_identical_to_in_memory_merge(tiny, tmp_path, dtype):
    model, lora = tiny
    out = export_model(lora, tmp_path / "out", "llava", model_base=model.base, dtype=dtype)
    expected = save(_merged_state(lora, model.base, dtype), metadata={"format": "pt"})
    assert (out / "model.safetensors").read_bytes() == expected


def test_hf_layout_tensors_are_the_merged_ones_under_llava_hf_names(tiny, tmp_path):
    model, lora = tiny
    out = export_model(lora, tmp_path / "hf", "hf", model_base=model.base, dtype="bf16")
    got = load_file(str(out / "model.safetensors"))
    state = _merged_state(lora, model.base, torch.bfloat16)
    tower = {k.removeprefix("vision_model."): v for k, v in load_file(str(model.tower / "model.safetensors")).items()}
    assert sorted(got) == sorted([hf_name(k) for k in state] + [f"vision_tower.vision_model.{k}" for k in tower])
    assert {k.split(".")[0] for k in got} == {"language_model", "multi_modal_projector", "vision_tower"}
    assert "language_model.model.layers.0.self_attn.q_proj.weight" in got
    assert "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight" in got
    assert "multi_modal_projector.linear_2.bias" in got and "language_model.lm_head.weight" in got
    for key, value in state.items():
        name = hf_name(key)
        if key in ("model.embed_tokens.weight", "lm_head.weight"):  # one <image> row appended: the mean
            assert torch.equal(got[name][:-1], value)
            assert torch.equal(got[name][-1], value.mean(dim=0))
        else:
            assert torch.equal(got[name], value), key
    for key, value in tower.items():
        assert torch.equal(got[f"vision_tower.vision_model.{key}"], value.to(torch.bfloat16)), key
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert "extra_special_tokens" not in config and config["additional_special_tokens"] == ["<image>"]
    assert config["added_tokens_decoder"]["512"]["content"] == "<image>"
    assert (out / "tokenizer.model").read_bytes() == (model.base / "tokenizer.model").read_bytes()
    for name in ("preprocessor_config.json", "processor_config.json", "chat_template.jinja", "chat_template.json",
                 "special_tokens_map.json", "tokenizer.json", "generation_config.json"):
        assert (out / name).is_file(), name


def test_shards_and_index_load_like_one_file(tiny, tmp_path):
    from transformers import LlavaForConditionalGeneration

    model, lora = tiny
    one = export_model(lora, tmp_path / "one", "hf", model_base=model.base, dtype="fp32")
    argv = ["--model-path", str(lora), "--model-base", str(model.base), "--out", str(tmp_path / "many"),
            "--layout", "hf", "--dtype", "fp32", "--max-shard-size", "200KB"]
    assert main(argv) == 0
    many = tmp_path / "many"
    shards = sorted(p.name for p in many.glob("model-*.safetensors"))
    assert len(shards) >= 4 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert not (many / "model.safetensors").exists()
    for shard in shards:
        assert (many / shard).stat().st_size <= 200_000 + 70_000  # one tensor may overshoot (largest 131 KB)
    index = json.loads((many / "model.safetensors.index.json").read_text())
    single = load_file(str(one / "model.safetensors"))
    assert sorted(index["weight_map"]) == sorted(single)
    assert index["metadata"]["total_size"] == sum(v.numel() * v.element_size() for v in single.values())
    files = TensorFiles(many)
    for key, value in single.items():
        assert torch.equal(files.get(key), value), key
    a = LlavaForConditionalGeneration.from_pretrained(one).state_dict()
    b, info = LlavaForConditionalGeneration.from_pretrained(many, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.items())


def test_files_follow_the_umask(tiny, tmp_path):
    model, lora = tiny
    old = os.umask(0o027)
    try:
        out = export_model(lora, tmp_path / "modes", "llava", model_base=model.base)
    finally:
        os.umask(old)
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert modes["model.safetensors"] == 0o640 and modes["config.json"] == 0o640
    assert modes["clip-tiny"] == 0o750 and modes["clip-tiny/model.safetensors"] == 0o640
    assert all(m in (0o640, 0o750) for m in modes.values()), modes


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9 and parse_size("2GiB") == 2 * 2**30 and parse_size("200KB") == 200_000
    assert parse_size(123) == 123
    from llava.model.errors import LlavaLoadError

    with pytest.raises(LlavaLoadError, match="cannot read the size"):
        parse_size("lots")


def test_adapter_that_misses_a_targeted_layer_is_refused(tiny, tmp_path):
    from safetensors.torch import save_file

    model, lora = tiny
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in lora.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = load_file(str(lora / "adapter_model.safetensors"))
    save_file({k: v for k, v in weights.items() if "layers.1.mlp.down_proj" not in k}, str(broken / "adapter_model.safetensors"))
    argv = ["--model-path", str(broken), "--model-base", str(model.base), "--out", str(tmp_path / "x"), "--layout", "llava"]
    assert main(argv) == 2
    assert not (tmp_path / "x").exists()


# A model ~250x the tiny one's language model (16 layers of hidden 1024, 805 MB in float32),
# whose largest tensor (an MLP matrix) is 11 MB.
WIDE = TinySizes(vocab_size=512, hidden_size=1024, intermediate_size=2752, num_layers=16, num_heads=16, num_kv_heads=16)


def test_export_peak_memory_stays_near_one_tensor(tmp_path):
    """Peak RSS of the export process (its own, in a child) minus that of exporting the tiny
    model stays within a few copies of the largest tensor, far below the model's size."""
    small = make_tiny_llava(tmp_path / "small", seed=0)
    wide = make_tiny_llava(tmp_path / "wide", WIDE, seed=0)
    wide_lora = make_tiny_lora(wide.base, tmp_path / "wide-lora", seed=1, weights_format="safetensors")
    small_lora = make_tiny_lora(small.base, tmp_path / "small-lora", seed=1, weights_format="safetensors")
    model_mb = sum(f.stat().st_size for f in wide.base.glob("*.safetensors")) / 2**20
    largest_mb = WIDE.hidden_size * WIDE.intermediate_size * 4 / 2**20
    peaks = {}
    for name, (lora, base) in {"small": (small_lora, small.base), "wide": (wide_lora, wide.base)}.items():
        args = ["--model-path", str(lora), "--model-base", str(base), "--out", str(tmp_path / f"out-{name}"),
                "--layout", "hf", "--dtype", "fp32"]
        _, peaks[name] = run_module_measured("llava.model.export", args)
    grew = peaks["wide"] - peaks["small"]
    print(f"export peak RSS: tiny {peaks['small']:.0f} MiB, wide {peaks['wide']:.0f} MiB (model {model_mb:.0f} MiB)")
    assert model_mb > 750
    assert grew < 8 * largest_mb + 64, (peaks, largest_mb)  # ~150 MB: a few tensors, not the 805 MB model
    out = TensorFiles(tmp_path / "out-wide")
    assert len(out.keys()) == 16 * 9 + 7 + 55  # every tensor was written
