"""Export any loadable LLaVA model (e.g. base + merged adapter) as one dense checkpoint.

Two layouts:
- `llava`: the original LLaVA-1.5 format (`llava_llama`, `model.mm_projector.*`, tower named
  in `mm_vision_tower`), loadable by this package, the original LLaVA code and SGLang;
- `hf`: transformers' `LlavaForConditionalGeneration` (llava-hf layout, keys
  `model.language_model.*`, `model.vision_tower.*`, `model.multi_modal_projector.*`,
  `lm_head.*`) with the CLIP tower inside, an `<image>` token appended to the vocabulary and a
  `LlavaProcessor` (pad-to-square image processor + vicuna_v1 chat template), for
  lmms-eval, vLLM and SGLang.

    python -m llava.model.export --model-path ADAPTER --model-base BASE --out DIR --layout hf

LoRA deltas are merged in float32 and the result cast to `--dtype` (default: the dtype of
the base config). Output is written to a temporary folder and renamed into place.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.model.builder import load_pretrained_model, resolve_dtype
from llava.model.errors import LlavaLoadError
from robustmerge.errors import cli_main
from robustmerge.taskfolder import MODEL_CONFIG, is_adapter_folder

logger = logging.getLogger(__name__)

_TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")
_TOWER_PREFIX = "model.vision_tower.vision_tower."
VICUNA_CHAT_TEMPLATE = (
    "{{ 'A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user\\'s questions. ' }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ 'USER: ' }}{% else %}{{ 'ASSISTANT: ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ ' ' }}{% else %}{{ '</s>' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _is_hub_id(name: str) -> bool:
    return re.fullmatch(r"[\w.\-]+/[\w.\-]+", name) is not None and not Path(name).exists()


def _dense_state(model, dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(language model + projector, tower) tensors of a merged model, cast to `dtype`."""
    lm, tower = {}, {}
    for key, value in model.state_dict().items():
        value = value.detach().to(dtype).contiguous()
        if key.startswith(_TOWER_PREFIX):
            tower[key[len(_TOWER_PREFIX) :]] = value
        elif ".vision_tower." not in key:
            lm[key] = value
    return lm, tower


def _save_weights(state: dict[str, torch.Tensor], folder: Path) -> None:
    save_torch_state_dict(state, str(folder), max_shard_size="5GB", safe_serialization=True)


def _copy_tokenizer(tokenizer, folder: Path) -> None:
    """The original tokenizer files (sentencepiece model for the slow tokenizer), else a fresh save."""
    source = Path(tokenizer.name_or_path)
    files = [source / f for f in _TOKENIZER_FILES if (source / f).is_file()]
    if any(f.name == "tokenizer.model" for f in files):
        for f in files:
            shutil.copy(f, folder / f.name)
    else:
        tokenizer.save_pretrained(str(folder))


def export_llava_layout(model, tokenizer, folder: Path, dtype: torch.dtype) -> None:
    """Write `folder` in the original LLaVA-1.5 layout (tower copied in unless it is a hub id)."""
    config = model.config
    tower = model.get_vision_tower()
    tower_name = str(config.mm_vision_tower)
    original = config.to_original_dict()
    original["torch_dtype"] = str(dtype).removeprefix("torch.")
    original.pop("dtype", None)
    if not _is_hub_id(tower_name):
        local_name = tower.tower_path.name
        shutil.copytree(tower.tower_path, folder / local_name)
        original["mm_vision_tower"] = local_name
    lm, _ = _dense_state(model, dtype)
    _save_weights(lm, folder)
    (folder / MODEL_CONFIG).write_text(json.dumps(original, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(str(folder))
    _copy_tokenizer(tokenizer, folder)


def _hf_config(config, tower, vocab_size: int, image_token_id: int, dtype: torch.dtype):
    """transformers.LlavaConfig equivalent to a llava_llama config + its CLIP tower."""
    import dataclasses

    from transformers import CLIPVisionConfig, LlamaConfig
    from transformers import LlavaConfig as HFLlavaConfig

    if config.mm_projector_type != "mlp2x_gelu":
        raise LlavaLoadError(f"the hf layout needs mm_projector_type mlp2x_gelu, not {config.mm_projector_type!r}")
    llama_fields = {f.name for f in dataclasses.fields(LlamaConfig)} - {"architectures", "dtype", "transformers_version"}
    text = LlamaConfig(**{k: v for k, v in config.to_dict().items() if k in llama_fields})
    text.vocab_size = vocab_size
    vision = CLIPVisionConfig(**tower.config.to_dict())
    patch_only = config.mm_vision_select_feature == "patch"
    return HFLlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=tower.num_patches + (0 if patch_only else 1),
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if patch_only else "full",
        vision_feature_layer=config.mm_vision_select_layer,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
        architectures=["LlavaForConditionalGeneration"],
        dtype=dtype,
    )


def _grow_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """[V, H] -> [rows, H], new rows = mean of the old ones (so the image token is never the argmax)."""
    extra = weight.mean(dim=0, keepdim=True).expand(rows - weight.shape[0], -1)  # [rows - V, H]
    return torch.cat([weight, extra], dim=0)


def _hf_state(lm: dict, tower: dict, vocab_size: int) -> dict[str, torch.Tensor]:
    """Rename llava_llama keys to LlavaForConditionalGeneration keys."""
    out = {f"model.vision_tower.{k}": v for k, v in tower.items()}
    projector = {"model.mm_projector.0.": "model.multi_modal_projector.linear_1.",
                 "model.mm_projector.2.": "model.multi_modal_projector.linear_2."}  # fmt: skip
    for key, value in lm.items():
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            value = _grow_rows(value, vocab_size)
        prefix = next((p for p in projector if key.startswith(p)), None)
        if prefix is not None:
            out[projector[prefix] + key[len(prefix) :]] = value
        elif key.startswith("model."):
            out["model.language_model." + key[len("model.") :]] = value
        else:
            out[key] = value
    return out


def _hf_processor(tokenizer, tower, config):
    """LlavaProcessor: pad-to-square (image_aspect_ratio 'pad') CLIP preprocessing + vicuna_v1 template."""
    from transformers import LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    ip = tower.image_processor
    image_processor = LlavaImageProcessorPil(
        do_pad=getattr(config, "image_aspect_ratio", None) == "pad",
        size=dict(ip.size), crop_size=dict(ip.crop_size), resample=ip.resample,
        image_mean=list(ip.image_mean), image_std=list(ip.image_std), rescale_factor=ip.rescale_factor,
    )  # fmt: skip
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=tower.config.patch_size,
        vision_feature_select_strategy="default" if config.mm_vision_select_feature == "patch" else "full",
        chat_template=VICUNA_CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )


def export_hf_layout(model, tokenizer, folder: Path, dtype: torch.dtype) -> None:
    """Write `folder` as a transformers-native LlavaForConditionalGeneration checkpoint."""
    config, tower = model.config, model.get_vision_tower()
    tokenizer = _tokenizer_copy(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": [DEFAULT_IMAGE_TOKEN]})
    image_token_id = tokenizer.convert_tokens_to_ids(DEFAULT_IMAGE_TOKEN)
    vocab_size = max(config.vocab_size, image_token_id + 1)
    lm, tower_state = _dense_state(model, dtype)
    _save_weights(_hf_state(lm, tower_state, vocab_size), folder)
    hf_config = _hf_config(config, tower, vocab_size, image_token_id, dtype)
    hf_config.save_pretrained(str(folder))
    model.generation_config.save_pretrained(str(folder))
    _hf_processor(tokenizer, tower, config).save_pretrained(str(folder))
    _write_legacy_preprocessor_config(folder)


def _write_legacy_preprocessor_config(folder: Path) -> None:
    """Also write `preprocessor_config.json`, which transformers 4.x-based servers read."""
    processor = json.loads((folder / "processor_config.json").read_text())
    image = {**processor["image_processor"], "processor_class": "LlavaProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(image, indent=2, sort_keys=True) + "\n")


def _tokenizer_copy(tokenizer):
    """A private copy, so adding `<image>` does not change the caller's tokenizer."""
    import copy

    return copy.deepcopy(tokenizer)


def _source_dtype(model_path: Path, model_base) -> str:
    """The dtype named in the config of the full model (or of the base, for adapters)."""
    folder = Path(model_base) if model_base is not None and is_adapter_folder(model_path) else model_path
    config = json.loads((folder / MODEL_CONFIG).read_text()) if (folder / MODEL_CONFIG).is_file() else {}
    name = config.get("torch_dtype") or config.get("dtype") or "float32"
    return str(name).removeprefix("torch.")


def export_model(
    model_path: str | Path,
    out: str | Path,
    layout: str = "hf",
    model_base: str | Path | None = None,
    dtype: str | torch.dtype | None = None,
    vision_tower_path: str | Path | None = None,
) -> Path:
    """Load (merging any LoRA in float32) and write one dense checkpoint to `out` (atomically)."""
    writers = {"llava": export_llava_layout, "hf": export_hf_layout}
    if layout not in writers:
        raise LlavaLoadError(f"unknown layout {layout!r}; use one of {sorted(writers)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LlavaLoadError(f"{out} exists and is not empty; choose a new --out folder")
    tokenizer, model, _, _ = load_pretrained_model(
        model_path, model_base, device="cpu", dtype=torch.float32, merge_lora=True, vision_tower_path=vision_tower_path
    )
    out_dtype = resolve_dtype(dtype or _source_dtype(Path(model_path), model_base), torch.device("cpu"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        writers[layout](model, tokenizer, tmp, out_dtype)
        tmp.chmod(0o755)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("exported %s (%s layout, %s) to %s", model_path, layout, out_dtype, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.model.export", description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", required=True, help="full model, LoRA task folder or merged adapter")
    parser.add_argument("--model-base", default=None, help="base model folder (for adapters)")
    parser.add_argument("--out", required=True, type=Path, help="new folder to write")
    parser.add_argument("--layout", choices=["llava", "hf", "both"], default="hf",
                        help="llava (original llava_llama), hf (LlavaForConditionalGeneration) or both (OUT/llava, OUT/hf)")  # fmt: skip
    parser.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: the base config's dtype)")
    parser.add_argument("--vision-tower", default=None, help="local CLIP tower folder (overrides mm_vision_tower)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    targets = [("llava", args.out / "llava"), ("hf", args.out / "hf")] if args.layout == "both" else [(args.layout, args.out)]
    def run() -> None:
        for layout, out in targets:
            export_model(args.model_path, out, layout, args.model_base, args.dtype, args.vision_tower)

    return cli_main(run)


if __name__ == "__main__":
    sys.exit(main())
