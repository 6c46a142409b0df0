"""Tiny-model factory: a complete offline LLaVA-1.5 checkpoint for tests and demos.

`make_tiny_llava(out)` writes, fully offline and deterministically from `seed`:

    out/clip-tiny/         CLIPVisionModel (random init) + CLIP image processor config
    out/llava-v1.5-tiny/   LlavaLlamaForCausalLM (random init) in the original LLaVA-1.5
                           format (model config with mm_vision_tower "clip-tiny", weights,
                           sentencepiece tokenizer trained here on generated text)

`make_tiny_lora(base, out)` adds a LoRA task folder as LLaVA's train.py writes it (random
factors). CLI: `python -m llava.model.tiny --out DIR [--hidden-size 64 ...] [--loras 2]`.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import logging
import random
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.conversation import conv_templates
from llava.model.errors import LlavaLoadError
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from robustmerge.errors import cli_main
from robustmerge.taskfolder import MODEL_CONFIG, lora_key, peft_name, write_folder

logger = logging.getLogger(__name__)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_COLORS = "red green blue yellow purple orange black white gray brown pink cyan".split()
_SHAPES = "circle square triangle diamond star hexagon".split()
_COMMON = "the a is of and in on image picture photo shows what color shape this answer".split()


@dataclasses.dataclass(frozen=True)
class TinySizes:
    """Sizes of the tiny model (defaults: the `llava_tiny` fixture's)."""

    vocab_size: int = 512
    hidden_size: int = 64
    intermediate_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int = 4
    vision_hidden_size: int = 64
    vision_intermediate_size: int = 128
    vision_layers: int = 3
    vision_heads: int = 4
    image_size: int = 64
    patch_size: int = 8
    max_positions: int = 512


@dataclasses.dataclass(frozen=True)
class TinyLlava:
    root: Path
    base: Path
    tower: Path


def _corpus(seed: int, n_lines: int = 3000) -> list[str]:
    """Generated English-like text covering the LLaVA prompt vocabulary."""
    rng = random.Random(seed)
    conv = conv_templates["vicuna_v1"]
    lines = [
        conv.system,
        "USER: <image>\nWhat color is the shape?\nAnswer the question using a single word or phrase. ASSISTANT: Red</s>",
        "What shape is this? Describe the image briefly. What is shown in the image? Please describe it in detail.",
    ]
    letters = "abcdefghijklmnopqrstuvwxyz"
    for _ in range(n_lines):
        words = [
            rng.choice(_COLORS + _SHAPES + _COMMON)
            if rng.random() < 0.6
            else "".join(rng.choice(letters) for _ in range(rng.randint(2, 8)))
            for _ in range(rng.randint(3, 12))
        ]
        line = " ".join(words).capitalize() + rng.choice([".", "?", "!", ""])
        lines.append(line + (f" {rng.randint(0, 99999)}" if rng.random() < 0.2 else ""))
    return lines


def train_tokenizer_model(vocab_size: int, seed: int = 0) -> bytes:
    """A Llama-style sentencepiece BPE model (<unk>=0, <s>=1, </s>=2, byte fallback).

    `vocab_size` must leave room for the 256 byte pieces, the specials and every character of
    the corpus (about 340); 512 gives a few hundred merges. The corpus grows with the
    vocabulary (3000 lines up to 1500 pieces, then 2 per piece: 32000 pieces train in ~4 s).
    """
    import sentencepiece as spm

    writer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(_corpus(seed, max(3000, 2 * vocab_size))), model_writer=writer, model_type="bpe",
            vocab_size=vocab_size, byte_fallback=True, split_digits=True, add_dummy_prefix=True,
            normalization_rule_name="identity", remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True, character_coverage=1.0, max_sentencepiece_length=16,
            unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1, minloglevel=2,
        )  # fmt: skip
    except RuntimeError as exc:
        raise LlavaLoadError(f"cannot train a {vocab_size}-piece tokenizer ({exc}); use vocab_size >= 384") from exc
    return writer.getvalue()


def write_tokenizer(folder: Path, vocab_size: int, seed: int = 0) -> None:
    """tokenizer.model + the configs LLaVA's slow LlamaTokenizer wrote (pad = <unk>)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(train_tokenizer_model(vocab_size, seed))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
    config = {
        **special,
        "tokenizer_class": "LlamaTokenizer",
        "add_bos_token": True,
        "add_eos_token": False,
        "legacy": True,
        "clean_up_tokenization_spaces": False,
        "spaces_between_special_tokens": False,
        "use_default_system_prompt": False,
        "model_max_length": 2048,
        "sp_model_kwargs": {},
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


def write_clip_tower(folder: Path, sizes: TinySizes, seed: int) -> None:
    """A random CLIPVisionModel and its image processor config (shortest edge = crop = image size)."""
    config = CLIPVisionConfig(
        hidden_size=sizes.vision_hidden_size, intermediate_size=sizes.vision_intermediate_size,
        num_hidden_layers=sizes.vision_layers, num_attention_heads=sizes.vision_heads,
        image_size=sizes.image_size, patch_size=sizes.patch_size, projection_dim=sizes.vision_hidden_size,
    )  # fmt: skip
    torch.manual_seed(seed)
    CLIPVisionModel(config).save_pretrained(str(folder))
    processor = {
        "image_processor_type": "CLIPImageProcessor",
        "crop_size": {"height": sizes.image_size, "width": sizes.image_size},
        "size": {"shortest_edge": sizes.image_size},
        "do_resize": True, "do_center_crop": True, "do_rescale": True, "do_normalize": True,
        "do_convert_rgb": True, "resample": 3, "rescale_factor": 1 / 255,
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
    }  # fmt: skip
    (folder / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")


def tiny_llava_config(sizes: TinySizes, tower_name: str) -> LlavaConfig:
    """A LlavaConfig with LLaVA-1.5's multimodal settings at tiny sizes."""
    return LlavaConfig(
        vocab_size=sizes.vocab_size, hidden_size=sizes.hidden_size, intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_layers, num_attention_heads=sizes.num_heads,
        num_key_value_heads=sizes.num_kv_heads, max_position_embeddings=sizes.max_positions,
        rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False,
        mm_vision_tower=tower_name, mm_hidden_size=sizes.vision_hidden_size, mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=-2, mm_vision_select_feature="patch", mm_patch_merge_type="flat",
        image_aspect_ratio="pad", mm_use_im_start_end=False, mm_use_im_patch_token=False, use_mm_proj=True,
        tokenizer_padding_side="right", tokenizer_model_max_length=sizes.max_positions,
    )  # fmt: skip


def write_llava_base(folder: Path, sizes: TinySizes, tower_name: str, seed: int, lm_head_scale: float = 4.0) -> None:
    """A random LlavaLlamaForCausalLM in the original format, plus its tokenizer.

    The lm_head is scaled by `lm_head_scale` so greedy decoding is not a near-tie at every step.
    """
    config = tiny_llava_config(sizes, tower_name)
    torch.manual_seed(seed)
    model = LlavaLlamaForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(lm_head_scale)
    model.save_pretrained(str(folder))
    (folder / MODEL_CONFIG).write_text(json.dumps(config.to_original_dict(), indent=2, sort_keys=True) + "\n")
    write_tokenizer(folder, sizes.vocab_size, seed)


# LLaVA-1.5-7B at its real sizes (Vicuna-7B + CLIP ViT-L/14 at 336 px), for throughput
# measurements with random weights (`random_llava`); nothing is downloaded.
LLAVA_V15_7B = TinySizes(
    vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_layers=32, num_heads=32, num_kv_heads=32,
    vision_hidden_size=1024, vision_intermediate_size=4096, vision_layers=24, vision_heads=16,
    image_size=336, patch_size=14, max_positions=4096,
)  # fmt: skip


def random_llava(sizes: TinySizes, tower: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa", seed: int = 0):
    """A randomly initialised LlavaLlamaForCausalLM of ``sizes``, built directly on ``device``
    in ``dtype`` (no weights file: a 7B model never exists on disk), with a random CLIP tower
    of the same sizes attached. The tower is written to ``tower`` once (CLIP-L/336: 1.2 GB)
    and loaded through the regular tower loader. Returns the model in eval mode.
    """
    from llava.model.multimodal_encoder.builder import build_vision_tower

    tower = Path(tower)
    if not (tower / "preprocessor_config.json").is_file():
        tmp = _fresh_output(tower)
        try:
            write_clip_tower(tmp, sizes, seed)
            _publish(tmp, tower)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    config = tiny_llava_config(sizes, tower.name)
    torch.manual_seed(seed)
    with torch.device(device):
        model = LlavaLlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    model.get_model().attach_vision_tower(
        build_vision_tower(config, tower, dtype=dtype, attn_implementation=attn_implementation).to(device))
    return model.eval()


def _refuse_non_empty(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        raise LlavaLoadError(f"{out} exists and is not empty; choose a new --out folder")


def _fresh_output(out: Path) -> Path:
    """A temporary sibling folder to build `out` in (refusing to overwrite a non-empty out)."""
    _refuse_non_empty(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))


def _publish(tmp: Path, out: Path) -> None:
    tmp.chmod(0o755)  # mkdtemp creates 0700
    if out.exists():
        out.rmdir()
    tmp.rename(out)


def make_tiny_llava(out: str | Path, sizes: TinySizes = TinySizes(), seed: int = 0) -> TinyLlava:
    """Write `out/clip-tiny` and `out/llava-v1.5-tiny` (atomically); see the module docstring."""
    out = Path(out)
    tmp = _fresh_output(out)
    try:
        write_clip_tower(tmp / "clip-tiny", sizes, seed)
        write_llava_base(tmp / "llava-v1.5-tiny", sizes, "clip-tiny", seed + 1)
        _publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("tiny LLaVA written to %s", out)
    return TinyLlava(root=out, base=out / "llava-v1.5-tiny", tower=out / "clip-tiny")


def _lora_tensors(config, r: int, scale: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random LoRA factors for every target module: A [r, d_in], B [d_out, r]."""
    h, m = config.hidden_size, config.intermediate_size
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    shapes = {  # module -> (d_in, d_out)
        "self_attn.q_proj": (h, h), "self_attn.k_proj": (h, kv), "self_attn.v_proj": (h, kv),
        "self_attn.o_proj": (h, h), "mlp.gate_proj": (h, m), "mlp.up_proj": (h, m), "mlp.down_proj": (m, h),
    }  # fmt: skip
    out = {}
    for layer in range(config.num_hidden_layers):
        for module, (d_in, d_out) in shapes.items():
            key = peft_name(f"model.layers.{layer}.{module}")
            out[lora_key(key, "A")] = torch.randn(r, d_in, generator=gen) * scale
            out[lora_key(key, "B")] = torch.randn(d_out, r, generator=gen) * scale
    return out


def make_tiny_lora(
    base: str | Path,
    out: str | Path,
    r: int = 8,
    lora_alpha: int = 16,
    seed: int = 0,
    scale: float = 0.1,
    weights_format: str = "bin",
) -> Path:
    """A LoRA task folder as LLaVA's train.py writes it, with random factors, on `base`.

    Files (`robustmerge.taskfolder` names them): the PEFT adapter config, the LoRA as `.bin`
    (or safetensors), the projector file (the base projector plus noise, keys
    `base_model.model.model.mm_projector.*`) and the base's model config.
    """
    from peft import LoraConfig
    from safetensors.torch import load_file

    base, out = Path(base), Path(out)
    config = LlavaConfig.from_pretrained(str(base))
    gen = torch.Generator().manual_seed(seed)
    _refuse_non_empty(out)
    with write_folder(out) as folder:
        folder.adapter_config(LoraConfig(
            r=r, lora_alpha=lora_alpha, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM",
            target_modules=list(LORA_TARGETS), base_model_name_or_path=base.name,
        ))  # fmt: skip
        folder.lora(_lora_tensors(config, r, scale, gen), fmt="safetensors" if weights_format == "safetensors" else "bin")
        weights = load_file(str(base / "model.safetensors"))
        folder.projector({
            peft_name(k): v + torch.randn(v.shape, generator=gen) * scale
            for k, v in weights.items()
            if k.startswith("model.mm_projector.")
        })
        folder.model_config(base / MODEL_CONFIG)
    return out


def main(argv: list[str] | None = None) -> int:
    defaults = TinySizes()
    parser = argparse.ArgumentParser(prog="python -m llava.model.tiny", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="new folder to create")
    parser.add_argument("--seed", type=int, default=0)
    for field in dataclasses.fields(TinySizes):
        flag = "--" + field.name.replace("_", "-")
        parser.add_argument(flag, type=int, default=getattr(defaults, field.name))
    parser.add_argument("--loras", type=int, default=0, help="also write N LoRA task folders lora-task-{0..N-1}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = TinySizes(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TinySizes)})
    def run() -> None:
        tiny = make_tiny_llava(args.out, sizes, seed=args.seed)
        for i in range(args.loras):
            make_tiny_lora(tiny.base, tiny.root / f"lora-task-{i}", seed=args.seed + 100 + i)

    return cli_main(run)


if __name__ == "__main__":
    sys.exit(main())
