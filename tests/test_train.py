"""LoRA fine-tuning (llava.train): v1 label mask, bad data, tiny training, save layout, reload.

Tiny models and data are built in tmp_path; the exact-mask test uses the fixture tokenizer
(fixtures/llava_tiny, the tokenizer the original train.py trained the fixture LoRAs with).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, needs_fixture
from PIL import Image, ImageDraw
from transformers import AutoImageProcessor, AutoTokenizer

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model.builder import load_pretrained_model
from llava.model.tiny import make_tiny_llava
from llava.train.data import (
    DataSettings,
    SupervisedCollator,
    SupervisedDataset,
    TrainDataError,
    clean_turns,
    preprocess_v1,
    read_samples,
)
from llava.train.llava_trainer import LengthGroupedSampler, modality_length_grouped_indices
from llava.train.train import TrainSetupError, main, parse_args, train

TINY = FIXTURES / "llava_tiny"
REPO = Path(__file__).resolve().parents[1]

COLORS = {"Red": (220, 30, 30), "Green": (30, 200, 40), "Blue": (30, 40, 220), "Yellow": (240, 230, 20)}
QUESTION = "What color is the shape?\nAnswer the question using a single word or phrase."


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- builders


def write_images(folder: Path, n: int) -> list[tuple[str, str]]:
    """n images (a coloured square on grey, varying aspect ratios) -> [(file name, colour word)]."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        name = list(COLORS)[i % len(COLORS)]
        w, h = (48 + 8 * (i % 3), 40 + 12 * (i % 4))
        img = Image.new("RGB", (w, h), (128, 128, 128))
        ImageDraw.Draw(img).rectangle([w // 4, h // 4, 3 * w // 4, 3 * h // 4], fill=COLORS[name])
        img.save(folder / f"img{i:03d}.png")
        out.append((f"img{i:03d}.png", name))
    return out


def make_samples(images: list[tuple[str, str]], text_only: int = 2) -> list[dict]:
    """One sample per image (every 4th multi-turn) plus `text_only` samples without image."""
    samples = []
    for i, (file, colour) in enumerate(images):
        turns = [{"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": colour}]
        if i % 4 == 3:
            turns += [{"from": "human", "value": "Is it a square?"}, {"from": "gpt", "value": "Yes"}]
        samples.append({"id": f"s{i:03d}", "image": file, "conversations": turns})
    for i in range(text_only):
        samples.append({"id": f"t{i}", "conversations": [
            {"from": "human", "value": "What color is the sky?"}, {"from": "gpt", "value": "Blue"}]})  # fmt: skip
    return samples


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_llava(tmp_path_factory.mktemp("tiny") / "models")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    samples = make_samples(write_images(root / "images", 24))
    (root / "train.json").write_text(json.dumps(samples))
    return root


@pytest.fixture(scope="module")
def tiny_parts(tiny):
    tokenizer = AutoTokenizer.from_pretrained(str(tiny.base))
    processor = AutoImageProcessor.from_pretrained(str(tiny.tower))
    return tokenizer, processor


def settings_for(processor, folder: Path | None, **kw) -> DataSettings:
    base = dict(image_folder=folder, image_processor=processor, model_max_length=512, image_tokens=64)
    return DataSettings(**{**base, **kw})


# ---------------------------------------------------------------- label mask


@needs_fixture("llava_tiny")
def test_v1_label_mask_exact_multi_turn():
    """Frozen: ids and the learned (position, id) pairs of a two-round conversation.

    Everything is -100 except each reply and its </s>: "▁B lack </s>" and "▁ C ircle </s>".
    """
    tokenizer = AutoTokenizer.from_pretrained(str(TINY / "llava-v1.5-tiny"))
    sample = {"id": "mt", "image": "x.png", "conversations": [
        {"from": "human", "value": "What color is the shape?\n<image>"},  # <image> moved to the front
        {"from": "gpt", "value": "Black"},
        {"from": "human", "value": "And the shape?"},
        {"from": "gpt", "value": "Circle"},
    ]}  # fmt: skip
    turns, problem = clean_turns(sample)
    assert problem is None and turns[0]["value"] == "<image>\nWhat color is the shape?"
    ids, labels, matched = preprocess_v1(turns, tokenizer, has_image=True)
    assert matched and len(ids) == len(labels) == 113
    assert ids.index(IMAGE_TOKEN_INDEX) == 73 and ids.count(IMAGE_TOKEN_INDEX) == 1
    learned = [(i, t) for i, (t, lab) in enumerate(zip(ids, labels)) if lab != IGNORE_INDEX]
    assert learned == [(90, 333), (91, 388), (92, 2), (109, 435), (110, 500), (111, 326), (112, 2)]
    assert all(lab == t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX)
    pieces = tokenizer.convert_ids_to_tokens([t for _, t in learned])
    assert pieces == ["▁B", "lack", "</s>", "▁", "C", "ircle", "</s>"]
    # the positions right before each reply are "ASSISTANT:" and are masked
    assert tokenizer.decode(ids[83:90]) == "ASSISTANT:" and tokenizer.decode(ids[102:109]) == "ASSISTANT:"

    # a non-legacy tokenizer (no "▁" after </s>) gets LLaVA's one-token correction per later round
    strict = AutoTokenizer.from_pretrained(str(TINY / "llava-v1.5-tiny"), legacy=False)
    ids2, labels2, matched2 = preprocess_v1(turns, strict, has_image=True)
    assert matched2 and len(ids2) == 112
    learned2 = [(i, t) for i, (t, lab) in enumerate(zip(ids2, labels2)) if lab != IGNORE_INDEX]
    assert learned2 == [(90, 333), (91, 388), (92, 2), (108, 435), (109, 500), (110, 326), (111, 2)]


@needs_fixture("llava_tiny")
def test_fixture_training_data_learns_exactly_the_answers():
    """On the data the fixture LoRAs were trained on: learned tokens decode to answer + </s>."""
    tokenizer = AutoTokenizer.from_pretrained(str(TINY / "llava-v1.5-tiny"))
    for task in ("task_a", "task_b"):
        for sample in read_samples(TINY / "data" / task / "train.json")[:50]:
            turns, problem = clean_turns(sample)
            assert problem is None
            ids, labels, matched = preprocess_v1(turns, tokenizer, has_image=True)
            assert matched, sample["id"]
            learned = [t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX]
            assert tokenizer.decode(learned).strip() == sample["conversations"][1]["value"] + "</s>"


def test_tokenization_mismatch_masks_sample_and_names_it(tiny_parts, tiny_data, caplog):
    """LLaVA's rule: round lengths that do not add up mask the whole sample, with a warning."""
    tokenizer, processor = tiny_parts
    samples = read_samples(tiny_data / "train.json")[:4]
    mismatched = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    mismatched.legacy = False  # claims no "▁" after </s>, but the tokenizer still adds one
    with caplog.at_level(logging.WARNING, logger="llava.train.data"):
        settings = settings_for(processor, tiny_data / "images", lazy_preprocess=False)
        data = SupervisedDataset(samples, mismatched, settings)
    multi = data[3]  # s003 has two rounds -> mismatch
    assert (multi["labels"] == IGNORE_INDEX).all()
    assert (data[0]["labels"] != IGNORE_INDEX).sum() > 0  # one round: unaffected
    assert "tokenization mismatch" in caplog.text and "'s003'" in caplog.text


# ---------------------------------------------------------------- bad data


def _bad_samples() -> list[dict]:
    ok = lambda i: {"id": f"ok{i}", "image": f"img{i:03d}.png", "conversations": [  # noqa: E731
        {"from": "human", "value": f"<image>\n{QUESTION}"}, {"from": "gpt", "value": "Red"}]}  # fmt: skip
    return [
        ok(0),
        {"id": "no_image_file", "image": "missing.png", "conversations": ok(0)["conversations"]},
        {"id": "no_gpt", "image": "img001.png", "conversations": [{"from": "human", "value": "<image>\nHi"}]},
        {"id": "too_long", "image": "img002.png", "conversations": [
            {"from": "human", "value": "<image>\n" + "word " * 400}, {"from": "gpt", "value": "Red"}]},  # fmt: skip
        {"id": "token_no_image", "conversations": ok(0)["conversations"]},
        {"id": "out_of_order", "image": "img003.png", "conversations": [
            {"from": "human", "value": "<image>\nA"}, {"from": "human", "value": "B"},
            {"from": "gpt", "value": "C"}]},  # fmt: skip
        ok(4),
    ]


def test_bad_samples_fail_with_their_ids(tiny_parts, tiny_data):
    tokenizer, processor = tiny_parts
    with pytest.raises(TrainDataError) as err:
        SupervisedDataset(_bad_samples(), tokenizer, settings_for(processor, tiny_data / "images"), source="bad.json")
    message = str(err.value)
    assert "5 of 7 samples" in message and "--bad_sample skip" in message
    for sid, why in [
        ("no_image_file", "image file not found"),
        ("no_gpt", "no gpt turn"),
        ("too_long", "longer than model_max_length 512"),
        ("token_no_image", "no 'image' field"),
        ("out_of_order", "must alternate"),
    ]:
        assert f"id '{sid}'" in message and why in message, (sid, message)


def test_bad_samples_skipped_on_request(tiny_parts, tiny_data, caplog):
    tokenizer, processor = tiny_parts
    with caplog.at_level(logging.WARNING, logger="llava.train.data"):
        data = SupervisedDataset(
            _bad_samples(), tokenizer, settings_for(processor, tiny_data / "images", bad_sample="skip")
        )
    assert data.ids == ["id 'ok0' (index 0)", "id 'ok4' (index 6)"]
    assert "skipping 5 of 7 samples" in caplog.text and "'too_long'" in caplog.text
    item = data[1]
    assert item["image"].shape == (3, 64, 64) and item["input_ids"].shape == item["labels"].shape


def test_unreadable_json_is_named(tmp_path):
    bad = tmp_path / "train.json"
    bad.write_text('[{"id": "a", "conversations": []},\n {"id": ')
    with pytest.raises(TrainDataError, match=r"train.json: not valid JSON \(line 2"):
        read_samples(bad)
    with pytest.raises(TrainDataError, match="no such data file"):
        read_samples(tmp_path / "absent.json")


def test_cli_reports_bad_data_with_exit_status_2(tiny, tiny_data, tmp_path, capsys):
    data = tmp_path / "train.json"
    data.write_text(json.dumps(_bad_samples()))
    argv = ["--model_name_or_path", str(tiny.base), "--data_path", str(data), "--image_folder",
            str(tiny_data / "images"), "--output_dir", str(tmp_path / "out"), "--use_cpu", "True"]  # fmt: skip
    assert main(argv) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "id 'no_gpt'" in errors[0]
    assert main([*argv, "--version", "plain"]) == 2
    errors = _error_lines(capsys.readouterr().err)
    assert len(errors) == 1 and "only v1" in errors[0]


def _error_lines(stderr: str) -> list[str]:
    """The ``error: ...`` lines of a CLI's stderr (progress bars aside); no traceback allowed."""
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


# ---------------------------------------------------------------- batching and sampling


def test_collator_pads_right_and_masks_by_length(tiny_parts, tiny_data):
    tokenizer, processor = tiny_parts
    settings = settings_for(processor, tiny_data / "images")
    data = SupervisedDataset(read_samples(tiny_data / "train.json"), tokenizer, settings)
    items = [data[0], data[3], data[len(data) - 1]]  # one round, two rounds, text only
    batch = SupervisedCollator(pad_token_id=0, model_max_length=512)(items)
    lengths = [len(x["input_ids"]) for x in items]
    assert batch["input_ids"].shape == (3, max(lengths)) and batch["images"].shape == (3, 3, 64, 64)
    assert batch["attention_mask"].sum(1).tolist() == lengths
    assert (batch["labels"][0, lengths[0] :] == IGNORE_INDEX).all()
    assert (batch["images"][2] == 0).all()  # text-only sample: zero image, as LLaVA


def test_modality_grouping_keeps_modalities_apart():
    lengths = [5, 7, -3, 9, -4, 6, 8, -2, 4, 3]  # 7 with image, 3 text-only
    generator = torch.Generator().manual_seed(0)
    order = modality_length_grouped_indices(lengths, batch_size=2, world_size=1, generator=generator)
    assert sorted(order) == list(range(10))
    full = [order[i : i + 2] for i in range(0, 8, 2)]  # all but the mixed leftover megabatch
    assert all(len({lengths[i] > 0 for i in b}) == 1 for b in full)
    sampler = LengthGroupedSampler(2, 1, lengths, seed=3)
    first = list(sampler)
    assert list(sampler) == first  # same epoch, same order (resume-safe)
    sampler.set_epoch(1)
    assert sorted(sampler) == list(range(10))


def test_warmup_ratio_maps_to_float_warmup_steps(tmp_path):
    _, _, args = parse_args(["--model_name_or_path", "m", "--data_path", "d", "--output_dir", str(tmp_path),
                             "--warmup_ratio", "0.03", "--use_cpu", "True"])  # fmt: skip
    assert args.warmup_steps == 0.03 and args.get_warmup_steps(100) == 3
    with pytest.raises(TrainSetupError, match="warmup_ratio"):
        parse_args(["--output_dir", str(tmp_path), "--warmup_ratio", "1.5", "--use_cpu", "True"])


# ---------------------------------------------------------------- training end to end


def _train_argv(tiny, tiny_data, out: Path, **overrides) -> list[str]:
    flags = {
        "model_name_or_path": tiny.base, "version": "v1", "data_path": tiny_data / "train.json",
        "image_folder": tiny_data / "images", "vision_tower": "clip-tiny", "mm_vision_select_layer": -2,
        "mm_projector_type": "mlp2x_gelu", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "image_aspect_ratio": "pad", "group_by_modality_length": True, "lora_enable": True, "lora_r": 8,
        "lora_alpha": 16, "lora_dropout": 0.05, "mm_projector_lr": 1e-3, "learning_rate": 3e-3,
        "weight_decay": 0.0, "warmup_ratio": 0.03, "lr_scheduler_type": "cosine", "max_steps": 36,
        "per_device_train_batch_size": 4, "model_max_length": 512, "gradient_checkpointing": True,
        "lazy_preprocess": True, "logging_steps": 1, "save_strategy": "steps", "save_steps": 12,
        "output_dir": out, "use_cpu": True, "seed": 0, "disable_tqdm": True, "dataloader_pin_memory": False,
    }  # fmt: skip
    flags.update(overrides)
    return [item for k, v in flags.items() for item in (f"--{k}", str(v))]


@pytest.fixture(scope="module")
def trained(tiny, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "task-lora"
    result = train(_train_argv(tiny, tiny_data, out))
    result.trainer.model.eval()
    return result


def _batch(tiny_data, tokenizer, processor):
    settings = settings_for(processor, tiny_data / "images")
    data = SupervisedDataset(read_samples(tiny_data / "train.json"), tokenizer, settings)
    collate = SupervisedCollator(pad_token_id=tokenizer.pad_token_id, model_max_length=512)
    return collate([data[i] for i in (0, 3, 5, 24)])  # one round, two rounds, one round, text only


def test_loss_goes_down(trained):
    losses = trained.losses
    assert trained.global_step == 36 and len(losses) == 36
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    print(f"loss first 4 steps {first:.3f}, last 4 steps {last:.3f}")
    assert first > 5.0 and last < 0.5 * first, losses


def test_saved_layout(trained):
    out = trained.output_dir
    names = {p.name for p in out.iterdir() if p.is_file()}
    assert {"adapter_config.json", "adapter_model.safetensors", "non_lora_trainables.bin", "config.json",
            "trainer_state.json"} <= names  # fmt: skip
    assert not any(n.startswith(("tokenizer", "training_args", "model.safetensors")) for n in names)
    from safetensors.torch import load_file

    lora = load_file(str(out / "adapter_model.safetensors"))
    assert len(lora) == 2 * 7 * 2  # layers x modules x (A, B)
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in lora
    assert lora["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"].shape == (64, 8)
    extra = torch.load(out / "non_lora_trainables.bin", weights_only=True)
    assert sorted(extra) == [f"base_model.model.model.mm_projector.{i}.{w}" for i in (0, 2) for w in ("bias", "weight")]
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["r"] == 8 and adapter["lora_alpha"] == 16 and adapter["task_type"] == "CAUSAL_LM"
    targets = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    assert sorted(adapter["target_modules"]) == targets
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "llava_llama" and config["mm_vision_tower"] == "clip-tiny"
    assert config["tokenizer_padding_side"] == "right" and config["tokenizer_model_max_length"] == 512
    assert config["mm_projector_lr"] == 1e-3 and config["use_cache"] is True and "rope_theta" in config
    for step in (12, 24, 36):
        assert (out / f"checkpoint-{step}" / "non_lora_trainables.bin").is_file()


def test_reload_through_loader_matches_in_memory_model(trained, tiny, tiny_data):
    model = trained.trainer.model  # PeftModel, eval mode
    tokenizer, _, processor, _ = load_pretrained_model(trained.output_dir, tiny.base, device="cpu", dtype="fp32")
    batch = _batch(tiny_data, tokenizer, processor)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "images")}
    with torch.no_grad():
        expected = model(**inputs).logits  # [B, T, V]
        for merge in (False, True):
            _, loaded, _, _ = load_pretrained_model(
                trained.output_dir, tiny.base, device="cpu", dtype="fp32", merge_lora=merge
            )
            diff = (loaded(**inputs).logits - expected).abs().max().item()
            print(f"reload merge_lora={merge}: max |logit diff| {diff:.2e}")
            assert diff <= (1e-5 if merge else 1e-6)
    # the trained adapter is not a no-op
    _, base, _, _ = load_pretrained_model(tiny.base, device="cpu", dtype="fp32")
    with torch.no_grad():
        assert (base(**inputs).logits - expected).abs().max().item() > 1e-2


def test_reload_through_robustmerge_matches_in_memory_weights(trained):
    from robustmerge.adapters import load_adapter_set

    out = trained.output_dir
    adapters = load_adapter_set([out, out / "checkpoint-24"])
    params = dict(trained.trainer.model.named_parameters())
    assert len(adapters.modules) == 14
    for module in adapters.modules:
        a, b = adapters.factors(module)  # [2, r, d_in], [2, d_out, r]
        assert torch.equal(a[0], params[f"{module}.lora_A.default.weight"])
        assert torch.equal(b[0], params[f"{module}.lora_B.default.weight"])
        assert not torch.equal(a[0], a[1])  # the checkpoint is an earlier state
    keys = adapters.extra_keys()
    assert len(keys) == 4
    for key in keys:
        assert torch.equal(adapters.extra_tensor(0, key), params[key])


def test_resume_from_checkpoint_continues_the_run(trained, tiny, tiny_data, tmp_path):
    """A run killed after checkpoint-24 and restarted ends with the same losses and weights."""
    out = tmp_path / "resumed"
    out.mkdir()
    shutil.copytree(trained.output_dir / "checkpoint-24", out / "checkpoint-24")
    resumed = train(_train_argv(tiny, tiny_data, out))  # finds checkpoint-24 by itself
    assert resumed.global_step == 36
    assert len(resumed.losses) == 36  # the checkpoint's history, then the 12 new steps
    assert resumed.losses[24:] == pytest.approx(trained.losses[24:], abs=1e-4)
    params = dict(trained.trainer.model.named_parameters())
    for name, p in resumed.trainer.model.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p, params[name], atol=1e-5), name


def test_finished_output_is_not_overwritten(trained, tiny, tiny_data, tmp_path):
    out = tmp_path / "done"
    out.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(trained.output_dir / name, out / name)
    with pytest.raises(TrainSetupError, match="already holds a trained adapter"):
        train(_train_argv(tiny, tiny_data, out))
    with pytest.raises(TrainSetupError, match="overlaps the input"):
        train(_train_argv(tiny, tiny_data, tiny.base / "lora"))


def test_train_task_python_api(tiny, tiny_data, tmp_path):
    """The typed in-process entry point (as the demo uses it) writes a loadable task folder."""
    from llava.train import train_task

    result = train_task(
        tiny.base, tiny_data / "train.json", tiny_data / "images", tmp_path / "api",
        lora_r=4, lora_alpha=8, learning_rate=3e-3, mm_projector_lr=1e-3, max_steps=3,
        per_device_train_batch_size=4, use_cpu=True, seed=1,
        extra_args=["--dataloader_pin_memory", "False", "--write_adapter_bin", "True"],
    )  # fmt: skip
    assert result.global_step == 3 and len(result.losses) == 3
    args = result.trainer.args  # the arguments as given, the recipe's defaults, and extra_args on top
    assert (args.lora_r, args.lora_alpha, args.learning_rate, args.mm_projector_lr, args.seed) == (4, 8, 3e-3, 1e-3, 1)
    assert (args.warmup_steps, args.lr_scheduler_type, args.save_strategy, args.save_steps) == (0.03, "cosine", "steps", 50000)
    assert args.group_by_modality_length is True and args.dataloader_pin_memory is False and args.write_adapter_bin is True
    out = tmp_path / "api"
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    from safetensors.torch import load_file

    legacy = torch.load(out / "adapter_model.bin", weights_only=True)  # for PEFT < 0.5
    current = load_file(str(out / "adapter_model.safetensors"))
    assert legacy.keys() == current.keys() and all(torch.equal(legacy[k], current[k]) for k in current)


# ---------------------------------------------------------------- scripts


def test_task_script_dry_run_builds_the_command(tmp_path):
    env = {**os.environ, "MODEL_BASE": "/m/llava-v1.5-7b", "DATA_PATH": "/d/train.json", "IMAGE_FOLDER": "/d/img",
           "OUTPUT_DIR": str(tmp_path / "o"), "NUM_GPUS": "0", "DRY_RUN": "1"}  # fmt: skip
    env.pop("ENV_FILE", None)
    run = subprocess.run(["bash", str(REPO / "scripts/v1_5/finetune_task_lora.sh"), "--", "--max_steps", "3"],
                         env=env, capture_output=True, text=True, check=True)  # fmt: skip
    cmd = run.stdout
    for part in ("-m llava.train.train", "--lora_r 16", "--model_name_or_path /m/llava-v1.5-7b",
                 "--data_path /d/train.json", "--version v1", "--image_aspect_ratio pad", "--use_cpu True",
                 "--max_steps 3"):  # fmt: skip
        assert part in cmd, (part, cmd)
    assert "--deepspeed" not in cmd


def test_all_tasks_script_dry_run_lists_eight_tasks(tmp_path):
    env = {**os.environ, "MODEL_BASE": "/m/base", "DATA_ROOT": "/d", "OUTPUT_ROOT": str(tmp_path / "o"),
           "NUM_GPUS": "0", "DRY_RUN": "1"}  # fmt: skip
    env.pop("ENV_FILE", None)
    run = subprocess.run(["bash", str(REPO / "scripts/v1_5/finetune_all_tasks_lora.sh")],
                         env=env, capture_output=True, text=True, check=True)  # fmt: skip
    lines = [line for line in run.stdout.splitlines() if "llava.train.train" in line]
    assert len(lines) == 8
    assert "/d/instructions/flickr30k-caption/train.json" in run.stdout
    assert f"{tmp_path}/o/ScienceQA" in run.stdout
