"""LLaVA-1.5 port against the reference outputs of the ORIGINAL code (fixtures/llava_tiny).

Checked per the fixture README: prompt strings and input ids exact, pixel values exact, fp32
logits within 1e-4, greedy tokens equal up to the first step whose top-2 margin is <= 1e-3.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, needs_fixture
from PIL import Image
from safetensors.torch import load_file, save_file

from llava.conversation import build_prompt, conv_templates
from llava.mm_utils import get_model_name_from_path, pad_token_ids, process_images, tokenizer_image_token
from llava.model import LlavaConfig, LlavaLlamaForCausalLM, LlavaLoadError
from llava.model.builder import folder_kind, load_pretrained_model

TINY = FIXTURES / "llava_tiny"
BASE = TINY / "llava-v1.5-tiny"
MODEL_FOLDERS = {"base": None, "lora_task_a": "lora-task-a", "merged_ab": "lora-merged-ab"}
LOGIT_TOL = 1e-4
MARGIN = 1e-3

needs_tiny = needs_fixture("llava_tiny")  # the tests that read the fixture models; the others run anywhere


# ---------------------------------------------------------------- helpers and fixtures


def _load(name: str, **kwargs):
    folder = MODEL_FOLDERS[name]
    if folder is None:
        return load_pretrained_model(BASE, None, device="cpu", dtype="fp32", **kwargs)
    return load_pretrained_model(TINY / folder, BASE, device="cpu", dtype="fp32", **kwargs)


@pytest.fixture(scope="module")
def llava_loaded():
    """Models loaded once per module: name -> (tokenizer, model, image_processor)."""
    cache = {}

    def get(name: str):
        if name not in cache:
            tokenizer, model, processor, _ = _load(name)
            cache[name] = (tokenizer, model, processor)
        return cache[name]

    return get


def _pixels(pair: dict, processor, config) -> torch.Tensor | None:
    if pair["image"] is None:
        return None
    image = Image.open(TINY / "reference" / pair["image"]).convert("RGB")
    return process_images([image], processor, config)  # [1, 3, 64, 64]


def _greedy(model, pair, pixels, min16: bool) -> list[int]:
    ids = torch.tensor([pair["input_ids"]])  # [1, L]
    extra = {"min_new_tokens": 16} if min16 else {}
    out = model.generate(ids, images=pixels, do_sample=False, num_beams=1, max_new_tokens=16, **extra)
    return out[0].tolist()  # new tokens only


def _reliable_prefix(record: dict) -> int:
    """Steps before the first one whose top-2 margin is too small to decide the argmax."""
    margins = record["top2_margins"]
    return next((i for i, m in enumerate(margins) if m <= MARGIN), len(margins))


def _logits(model, pair, pixels) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([pair["input_ids"]]), images=pixels).logits[0]  # [T, V]


# ---------------------------------------------------------------- prompts, ids, pixels


@needs_tiny
def test_prompt_strings_and_input_ids(llava_ref, llava_loaded):
    ref, tensors = llava_ref
    tokenizer = llava_loaded("base")[0]
    for i, pair in enumerate(ref["pairs"]):
        prompt = build_prompt(pair["question"], "vicuna_v1", with_image=pair["image"] is not None)
        assert prompt == pair["prompt"]
        ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")
        assert ids.tolist() == pair["input_ids"]
        assert torch.equal(ids, tensors[f"pair{i}.input_ids"])


@needs_tiny
def test_tokenizer_cases_match_slow_tokenizer(llava_ref, llava_loaded):
    """Equal to the 4.37 slow tokenizer except strings starting with a space (README, known)."""
    ref, _ = llava_ref
    tokenizer = llava_loaded("base")[0]
    for text, expected in ref["tokenizer_cases"].items():
        if not text.startswith(" "):
            assert tokenizer(text).input_ids == expected, text


@needs_tiny
def test_pixel_values_exact(llava_ref, llava_loaded):
    ref, tensors = llava_ref
    _, model, processor = llava_loaded("base")
    for i, pair in enumerate(ref["pairs"]):
        pixels = _pixels(pair, processor, model.config)
        if pixels is not None:
            assert pixels.shape == (1, 3, 64, 64)
            assert (pixels - tensors[f"pair{i}.pixel_values"]).abs().max().item() <= 1e-6


def test_conversation_multi_turn_rendering():
    conv = conv_templates["vicuna_v1"].copy()
    for role, msg in [("USER", "hi"), ("ASSISTANT", "hello"), ("USER", "again"), ("ASSISTANT", None)]:
        conv.append_message(role, msg)
    assert conv.get_prompt() == conv.system + " USER: hi ASSISTANT: hello</s>USER: again ASSISTANT:"


def test_model_name_from_path():
    assert get_model_name_from_path("/x/llava-v1.5-7b/") == "llava-v1.5-7b"
    assert get_model_name_from_path("runs/task-a/checkpoint-100") == "task-a_checkpoint-100"


# ---------------------------------------------------------------- numerics per model


@needs_tiny
@pytest.mark.parametrize("name", list(MODEL_FOLDERS))
def test_logits_and_image_features_match_reference(name, llava_ref, llava_loaded):
    ref, tensors = llava_ref
    _, model, processor = llava_loaded(name)
    assert isinstance(model, LlavaLlamaForCausalLM) and model.dtype == torch.float32
    for i, pair in enumerate(ref["pairs"]):
        pixels = _pixels(pair, processor, model.config)
        logits = _logits(model, pair, pixels)
        expected = tensors[f"pair{i}.{name}.logits"]
        assert logits.shape == expected.shape == (pair["outputs"][name]["seq_len_after_splice"], 512)
        assert (logits - expected).abs().max().item() <= LOGIT_TOL
        if pixels is not None:
            with torch.no_grad():
                feats = model.encode_images(pixels)[0]  # [64, 64]
            assert (feats - tensors[f"pair{i}.{name}.image_features"]).abs().max().item() <= LOGIT_TOL


@needs_tiny
@pytest.mark.parametrize("name", list(MODEL_FOLDERS))
@pytest.mark.parametrize("mode", ["greedy16", "greedy16_min16"])
def test_greedy_generation_matches_reference(name, mode, llava_ref, llava_loaded):
    ref, _ = llava_ref
    _, model, processor = llava_loaded(name)
    for pair in ref["pairs"]:
        record = pair["outputs"][name][mode]
        tokens = _greedy(model, pair, _pixels(pair, processor, model.config), min16=mode.endswith("min16"))
        n = _reliable_prefix(record)
        assert tokens[:n] == record["new_token_ids"][:n]
        if n == len(record["new_token_ids"]):
            assert tokens == record["new_token_ids"]


@needs_tiny
def test_lora_answers_decode_to_task_words(llava_ref, llava_loaded):
    ref, _ = llava_ref
    tokenizer, model, processor = llava_loaded("lora_task_a")
    pair = ref["pairs"][0]
    tokens = _greedy(model, pair, _pixels(pair, processor, model.config), min16=False)
    assert tokenizer.batch_decode([tokens], skip_special_tokens=True)[0].strip() == pair["outputs"]["lora_task_a"]["greedy16"]["text"]


@needs_tiny
def test_attention_defaults_to_sdpa_on_cpu(llava_loaded):
    model = llava_loaded("base")[1]
    assert model.config._attn_implementation == "sdpa"


# ---------------------------------------------------------------- batching and sampling


def _batch(ref, processor, config):
    ids = [p["input_ids"] for p in ref["pairs"]]
    images = [None if (px := _pixels(p, processor, config)) is None else px[0] for p in ref["pairs"]]
    return ids, images


@needs_tiny
@pytest.mark.parametrize("name", ["base", "lora_task_a"])
def test_batched_greedy_equals_single(name, llava_ref, llava_loaded):
    ref, _ = llava_ref
    tokenizer, model, processor = llava_loaded(name)
    ids, images = _batch(ref, processor, model.config)
    input_ids, mask = pad_token_ids(ids, tokenizer.pad_token_id, "left")  # [5, Lmax]
    assert mask.sum(1).tolist() == [len(x) for x in ids] and mask[:, -1].all()
    out = model.generate(input_ids, attention_mask=mask, images=images, do_sample=False, max_new_tokens=16,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    for row, pair, image in zip(out.tolist(), ref["pairs"], images):
        single = _greedy(model, pair, None if image is None else image[None], min16=False)
        assert row[: len(single)] == single
        assert all(t == tokenizer.pad_token_id for t in row[len(single) :])


@needs_tiny
def test_batched_forward_right_padding_equals_single(llava_ref, llava_loaded):
    """Training-style forward (re-padded on config.tokenizer_padding_side = right)."""
    ref, tensors = llava_ref
    tokenizer, model, processor = llava_loaded("base")
    ids, images = _batch(ref, processor, model.config)
    input_ids, mask = pad_token_ids(ids, tokenizer.pad_token_id, "right")
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=mask, images=images).logits  # [5, T, V]
    for i, pair in enumerate(ref["pairs"]):
        expected = tensors[f"pair{i}.base.logits"]  # [T_i, V]
        assert (logits[i, : expected.shape[0]] - expected).abs().max().item() <= LOGIT_TOL


@needs_tiny
def test_sampled_generation_is_seeded(llava_ref, llava_loaded):
    ref, _ = llava_ref
    _, model, processor = llava_loaded("base")
    pair = ref["pairs"][0]
    ids, pixels = torch.tensor([pair["input_ids"]]), _pixels(pair, processor, model.config)
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(model.generate(ids, images=pixels, do_sample=True, temperature=1.5, top_p=0.95, max_new_tokens=12))
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (1, 12)
    assert runs[0].tolist()[0] != pair["outputs"]["base"]["greedy16"]["new_token_ids"][:12]


# ---------------------------------------------------------------- adapters


@needs_tiny
def test_kept_adapter_equals_merged(llava_ref, llava_loaded):
    ref, tensors = llava_ref
    _, peft_model, processor, _ = _load("lora_task_a", merge_lora=False)
    assert type(peft_model).__name__ == "PeftModelForCausalLM"
    for i in (0, 4):
        pair = ref["pairs"][i]
        pixels = _pixels(pair, processor, peft_model.config)
        with torch.no_grad():
            logits = peft_model(input_ids=torch.tensor([pair["input_ids"]]), images=pixels).logits[0]
        assert (logits - tensors[f"pair{i}.lora_task_a.logits"]).abs().max().item() <= LOGIT_TOL
        out = peft_model.generate(torch.tensor([pair["input_ids"]]), images=pixels, do_sample=False, max_new_tokens=16)
        assert out[0].tolist() == pair["outputs"]["lora_task_a"]["greedy16"]["new_token_ids"]


@needs_tiny
def test_lora_task_b_loads_projector_and_lora(llava_ref, llava_loaded):
    """No reference logits for task b: check the projector came from the file and merged == kept."""
    ref, _ = llava_ref
    _, merged, processor, _ = load_pretrained_model(TINY / "lora-task-b", BASE, device="cpu", dtype="fp32")
    _, kept, _, _ = load_pretrained_model(TINY / "lora-task-b", BASE, device="cpu", dtype="fp32", merge_lora=False)
    projector = torch.load(TINY / "lora-task-b" / "non_lora_trainables.bin", weights_only=True)
    w = merged.get_model().mm_projector[0].weight
    assert torch.equal(w, projector["base_model.model.model.mm_projector.0.weight"])
    base_model = llava_loaded("base")[1]
    assert not torch.equal(merged.model.layers[0].self_attn.q_proj.weight, base_model.model.layers[0].self_attn.q_proj.weight)
    pair = ref["pairs"][1]
    pixels = _pixels(pair, processor, merged.config)
    with torch.no_grad():
        a = merged(input_ids=torch.tensor([pair["input_ids"]]), images=pixels).logits
        b = kept(input_ids=torch.tensor([pair["input_ids"]]), images=pixels).logits
    assert (a - b).abs().max().item() <= 1e-5


def _robustmerge_folder(tmp_path: Path, with_bin: bool) -> Path:
    """lora-merged-ab rewritten as robustmerge writes it: safetensors, unstripped projector keys."""
    src, out = TINY / "lora-merged-ab", tmp_path / "merge-output-2024"
    out.mkdir()
    shutil.copy(src / "adapter_config.json", out / "adapter_config.json")
    shutil.copy(src / "config.json", out / "config.json")
    lora = torch.load(src / "adapter_model.bin", weights_only=True)
    save_file({k: v.contiguous() for k, v in lora.items()}, str(out / "adapter_model.safetensors"))
    if with_bin:
        shutil.copy(src / "adapter_model.bin", out / "adapter_model.bin")
    projector = torch.load(src / "non_lora_trainables.bin", weights_only=True)
    torch.save({f"base_model.model.{k}": v for k, v in projector.items()}, out / "non_lora_trainables.bin")
    (out / "merge_record.json").write_text(json.dumps({"method": "robustmerge", "tasks": ["a", "b"]}))
    return out


@needs_tiny
@pytest.mark.parametrize("with_bin", [False, True])
def test_robustmerge_output_loads_like_reference(with_bin, tmp_path, llava_ref):
    ref, tensors = llava_ref
    folder = _robustmerge_folder(tmp_path, with_bin)
    assert folder_kind(folder) == "adapter"
    _, model, processor, _ = load_pretrained_model(folder, BASE, device="cpu", dtype="fp32")
    for i in (0, 2, 4):
        pair = ref["pairs"][i]
        logits = _logits(model, pair, _pixels(pair, processor, model.config))
        assert (logits - tensors[f"pair{i}.merged_ab.logits"]).abs().max().item() <= LOGIT_TOL


def _copy_adapter(tmp_path: Path, name: str = "run") -> Path:
    out = tmp_path / name
    shutil.copytree(TINY / "lora-task-a", out)
    for f in out.iterdir():
        f.chmod(0o644)
    return out


def _rename(old: str, new: str):
    return lambda state: state.__setitem__(new, state.pop(old))


LORA_Q = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
LORA_DOWN_B = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"
PROJECTOR_0 = "base_model.model.model.mm_projector.0.weight"
BROKEN_ADAPTERS = {  # case: (file of lora-task-a, edit of its state dict, the error's message)
    "unused_lora_key": ("adapter_model.bin", _rename(LORA_Q, LORA_Q.replace("self_attn", "attn")),
                        r"adapter_model\.bin.*match no LoRA layer.*layers\.0\.attn\.q_proj"),
    "missing_lora_factor": ("adapter_model.bin", lambda state: state.pop(LORA_DOWN_B),
                            r"no weights for 1 LoRA.*layers\.1\.mlp\.down_proj\.lora_B"),
    "unused_projector_key": ("non_lora_trainables.bin", _rename(PROJECTOR_0, PROJECTOR_0.replace("projector", "projektor")),
                             r"non_lora_trainables\.bin: 1 key.*mm_projektor"),
}  # fmt: skip


@needs_tiny
@pytest.mark.parametrize("case", list(BROKEN_ADAPTERS))
def test_broken_adapter_fails_loudly(case, tmp_path):
    """An adapter key that matches no layer, a missing LoRA factor, a stray projector key: each
    stops the load with a message naming the file and the key."""
    file, edit, message = BROKEN_ADAPTERS[case]
    folder = _copy_adapter(tmp_path)
    state = torch.load(folder / file, weights_only=True)
    edit(state)
    torch.save(state, folder / file)
    with pytest.raises(LlavaLoadError, match=message):
        load_pretrained_model(folder, BASE, device="cpu")


@needs_tiny
def test_folder_kind_comes_from_files_not_names(tmp_path):
    folder = _copy_adapter(tmp_path, "llava-v1.5-7b-full")  # a misleading name
    assert folder_kind(folder) == "adapter"
    assert folder_kind(BASE) == "full"
    with pytest.raises(LlavaLoadError, match="needs the base model"):
        load_pretrained_model(folder, None, device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LlavaLoadError, match="not a LLaVA folder"):
        folder_kind(tmp_path / "empty")


# ---------------------------------------------------------------- vision tower resolution


def _base_without_tower(tmp_path: Path, tower_name: str | None = None) -> Path:
    """A copy of the base folder somewhere with no tower next to it."""
    folder = tmp_path / "models" / "tiny-base"
    shutil.copytree(BASE, folder)
    for f in folder.iterdir():
        f.chmod(0o644)
    if tower_name is not None:
        config = json.loads((folder / "config.json").read_text())
        config["mm_vision_tower"] = tower_name
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def llava_offline_env(monkeypatch, tmp_path):
    monkeypatch.delenv("LLAVA_VISION_TOWER", raising=False)
    monkeypatch.delenv("LLAVA_VISION_TOWER_DIRS", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hf-cache"))
    return monkeypatch


@needs_tiny
def test_tower_error_names_what_it_looked_for(tmp_path, llava_offline_env):
    folder = _base_without_tower(tmp_path)
    with pytest.raises(LlavaLoadError) as err:
        load_pretrained_model(folder, None, device="cpu")
    message = str(err.value)
    assert "'clip-tiny'" in message and str(folder / "clip-tiny") in message
    assert str(folder.parent / "clip-tiny") in message and "LLAVA_VISION_TOWER" in message


@needs_tiny
def test_tower_override_argument_and_env(tmp_path, llava_offline_env, llava_ref):
    ref, tensors = llava_ref
    folder = _base_without_tower(tmp_path, tower_name="openai/clip-vit-large-patch14-336")
    _, model, processor, _ = load_pretrained_model(folder, None, device="cpu", vision_tower_path=TINY / "clip-tiny")
    pair = ref["pairs"][0]
    assert (_logits(model, pair, _pixels(pair, processor, model.config)) - tensors["pair0.base.logits"]).abs().max() <= LOGIT_TOL
    llava_offline_env.setenv("LLAVA_VISION_TOWER", str(TINY / "clip-tiny"))
    _, model, _, _ = load_pretrained_model(folder, None, device="cpu")
    assert model.get_vision_tower().tower_path == TINY / "clip-tiny"
    llava_offline_env.setenv("LLAVA_VISION_TOWER", str(tmp_path / "nope"))
    with pytest.raises(LlavaLoadError, match=r"nope \(from LLAVA_VISION_TOWER\) is not a vision tower folder"):
        load_pretrained_model(folder, None, device="cpu")


@needs_tiny
def test_tower_hub_id_resolves_in_search_dirs(tmp_path, llava_offline_env):
    folder = _base_without_tower(tmp_path, tower_name="openai/clip-vit-large-patch14-336")
    with pytest.raises(LlavaLoadError, match="clip-vit-large-patch14-336"):
        load_pretrained_model(folder, None, device="cpu")
    towers = tmp_path / "towers"
    shutil.copytree(TINY / "clip-tiny", towers / "clip-vit-large-patch14-336")
    llava_offline_env.setenv("LLAVA_VISION_TOWER_DIRS", str(towers))
    _, model, _, _ = load_pretrained_model(folder, None, device="cpu")
    assert model.get_vision_tower().tower_path == towers / "clip-vit-large-patch14-336"


# ---------------------------------------------------------------- dtypes


@needs_tiny
@pytest.mark.parametrize(("dtype", "tol"), [("bf16", 0.15), ("fp16", 0.03)])
def test_half_precision_loading(dtype, tol, llava_ref):
    ref, tensors = llava_ref
    _, model, processor, _ = load_pretrained_model(TINY / "lora-task-a", BASE, device="cpu", dtype=dtype)
    expected_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    assert model.dtype == expected_dtype and model.get_vision_tower().dtype == expected_dtype
    assert model.get_model().mm_projector[0].weight.dtype == expected_dtype
    pair = ref["pairs"][0]
    pixels = _pixels(pair, processor, model.config).to(expected_dtype)
    logits = _logits(model, pair, pixels).float()
    assert (logits - tensors["pair0.lora_task_a.logits"]).abs().max().item() <= tol
    out = model.generate(torch.tensor([pair["input_ids"]]), images=pixels, do_sample=False, max_new_tokens=16)
    assert out[0].tolist() == pair["outputs"]["lora_task_a"]["greedy16"]["new_token_ids"]


# ---------------------------------------------------------------- tiny factory and CLI


def test_tiny_factory_writes_a_loadable_checkpoint(tmp_path):
    from llava.model.tiny import TinySizes, main, make_tiny_lora

    assert main(["--out", str(tmp_path / "tiny"), "--hidden-size", "32", "--intermediate-size", "64"]) == 0
    root = tmp_path / "tiny"
    assert main(["--out", str(root)]) == 2  # never over an existing output
    lora = make_tiny_lora(root / "llava-v1.5-tiny", root / "task-x", r=4, weights_format="safetensors")
    assert sorted(p.name for p in (root / "llava-v1.5-tiny").iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors",
        "special_tokens_map.json", "tokenizer.model", "tokenizer_config.json",
    ]  # fmt: skip
    config = LlavaConfig.from_pretrained(str(root / "llava-v1.5-tiny"))
    assert (config.hidden_size, config.vocab_size, config.mm_vision_tower) == (32, TinySizes().vocab_size, "clip-tiny")
    tokenizer, model, processor, _ = load_pretrained_model(root / "llava-v1.5-tiny", None, device="cpu")
    _, lora_model, _, _ = load_pretrained_model(lora, root / "llava-v1.5-tiny", device="cpu")
    assert len(tokenizer) == 512 and tokenizer("What color is the shape?").input_ids[0] == 1
    ids = tokenizer_image_token(build_prompt("What color is the shape?"), tokenizer, return_tensors="pt")[None]
    pixels = process_images([Image.new("RGB", (40, 30), (200, 10, 10))], processor, model.config)
    with torch.no_grad():
        a, b = model(input_ids=ids, images=pixels).logits, lora_model(input_ids=ids, images=pixels).logits
    assert a.shape == (1, ids.shape[1] - 1 + 64, 512) and (a - b).abs().max() > 1e-3


def test_tiny_factory_is_deterministic(tmp_path):
    from llava.model.tiny import TinySizes, make_tiny_llava

    sizes = TinySizes(hidden_size=16, intermediate_size=32, num_layers=1, vision_layers=1)
    one, two = make_tiny_llava(tmp_path / "a", sizes, seed=3), make_tiny_llava(tmp_path / "b", sizes, seed=3)
    for rel in ("llava-v1.5-tiny/model.safetensors", "clip-tiny/model.safetensors"):
        wa, wb = load_file(str(one.root / rel)), load_file(str(two.root / rel))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (one.base / "tokenizer.model").read_bytes() == (two.base / "tokenizer.model").read_bytes()


@needs_tiny
def test_run_llava_cli_answers(capsys, llava_ref):
    from llava.eval.run_llava import main

    ref, _ = llava_ref
    pair = ref["pairs"][0]
    argv = ["--model-path", str(TINY / "lora-task-a"), "--model-base", str(BASE), "--device", "cpu",
            "--image-file", str(TINY / "reference" / pair["image"]), "--query", pair["question"], "--temperature", "0"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.strip() == pair["outputs"]["lora_task_a"]["greedy16"]["text"]
    assert main(argv[:2] + argv[4:]) == 2  # adapter without --model-base
    assert "needs the base model" in capsys.readouterr().err


def test_run_llava_answers_as_the_runner(tmp_path, capsys):
    """run_llava and the benchmark runner share one generation call: same question, same answer."""
    from llava.eval import runner
    from llava.eval.run_llava import main
    from llava.eval.tasks import Prompt
    from llava.model.tiny import make_tiny_llava

    tiny = make_tiny_llava(tmp_path / "tiny")
    image, query = tmp_path / "shape.png", "What color is the shape?"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(image)
    argv = ["--model-path", str(tiny.base), "--device", "cpu", "--image-file", str(image), "--query", query,
            "--temperature", "0", "--max-new-tokens", "12"]  # fmt: skip
    assert main(argv) == 0
    cli_answer = capsys.readouterr().out.splitlines()[-1].strip()  # the answer is the last line printed
    item = runner.EvalItem(0, Prompt(f"<image>\n{query}", query, True), "config", image)
    answers = tmp_path / "answers.jsonl"
    settings = runner.GenerationSettings(max_new_tokens=12)
    runner.run_items(runner.load_bundle(tiny.base, device="cpu"), [item], answers, settings, progress=False)
    runner_answer = json.loads(answers.read_text())["text"]
    assert cli_answer == runner_answer and len(cli_answer) > 0
    assert main([*argv[:-2], "--temperature", "-1"]) == 2  # the runner's flag checks apply
    assert "--temperature must be >= 0" in capsys.readouterr().err


@needs_tiny
def test_attention_choice():
    import importlib.util

    from llava.model.builder import pick_attn_implementation

    cpu = torch.device("cpu")
    assert pick_attn_implementation(None, cpu, torch.float32) == "sdpa"
    assert pick_attn_implementation("eager", cpu, torch.float32) == "eager"
    if importlib.util.find_spec("flash_attn") is None:
        assert pick_attn_implementation(None, torch.device("cuda"), torch.float16) == "sdpa"
        with pytest.raises(LlavaLoadError, match="flash-attn"):
            load_pretrained_model(BASE, None, device="cpu", attn_implementation="flash_attention_2")
