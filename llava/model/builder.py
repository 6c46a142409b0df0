"""`load_pretrained_model`: LLaVA's loader, deciding what a folder is from its files.

Folder kinds (never guessed from the folder's name; file names: `robustmerge.taskfolder`):
- adapter (a PEFT adapter config): a LoRA task folder or a merged adapter, loaded on top of
  `model_base`: base weights, then the projector from the task folder's projector file, then
  the LoRA via PEFT, merged into the weights (`merge_lora=True`, LLaVA's behaviour) or kept
  as adapter;
- projector (LLaVA's pre-training projector file without model weights): on `model_base`;
- full (model config + weights): a complete LLaVA model.
The CLIP tower is then resolved offline from `mm_vision_tower` (see
`multimodal_encoder.builder`) and attached.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from transformers import AutoTokenizer

from llava.constants import DEFAULT_IM_END_TOKEN, DEFAULT_IM_START_TOKEN, DEFAULT_IMAGE_PATCH_TOKEN
from llava.model.adapter_io import (
    apply_extra_weights,
    apply_lora,
    is_adapter_folder,
    load_tensor_file,
    read_projector_weights,
)
from llava.model.errors import LlavaLoadError
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.builder import build_vision_tower, resolve_vision_tower
from robustmerge.taskfolder import ADAPTER_CONFIG, MODEL_CONFIG, PROJECTOR_FILE, PROJECTOR_RUN_FILE, projector_key

logger = logging.getLogger(__name__)

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
_DTYPES = {
    "fp32": torch.float32, "float32": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}  # fmt: skip


def folder_kind(path: Path) -> str:
    """'adapter', 'projector' or 'full', from the files in `path`."""
    if not path.is_dir():
        raise LlavaLoadError(f"{path}: no such model folder; check --model-path")
    if is_adapter_folder(path):
        return "adapter"
    has_weights = any((path / f).is_file() for f in _WEIGHT_FILES)
    if (path / PROJECTOR_RUN_FILE).is_file() and not has_weights:
        return "projector"
    if (path / MODEL_CONFIG).is_file() and has_weights:
        return "full"
    raise LlavaLoadError(
        f"{path}: not a LLaVA folder: expected {ADAPTER_CONFIG} (LoRA/merged adapter), "
        f"{PROJECTOR_RUN_FILE} (projector run) or {MODEL_CONFIG} with one of {_WEIGHT_FILES}"
    )


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype, device: torch.device) -> torch.dtype:
    """None -> float16 on CUDA (LLaVA's default), float32 on CPU; names like 'bf16' accepted."""
    if dtype is None or dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype) not in _DTYPES:
        raise LlavaLoadError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[str(dtype)]


def pick_attn_implementation(requested: str | None, device: torch.device, dtype: torch.dtype) -> str:
    """`flash_attention_2` when flash-attn is importable (CUDA, half precision), else `sdpa`."""
    has_flash = importlib.util.find_spec("flash_attn") is not None
    if requested == "flash_attention_2" and not has_flash:
        raise LlavaLoadError("attn_implementation='flash_attention_2' needs the flash-attn package; use 'sdpa'")
    if requested:
        return requested
    if has_flash and device.type == "cuda" and dtype in (torch.float16, torch.bfloat16):
        return "flash_attention_2"
    return "sdpa"


def _quantization_kwargs(load_8bit: bool, load_4bit: bool, dtype: torch.dtype) -> dict:
    if not (load_8bit or load_4bit):
        return {}
    if importlib.util.find_spec("bitsandbytes") is None:
        raise LlavaLoadError("load_8bit/load_4bit need the bitsandbytes package (and a CUDA GPU)")
    from transformers import BitsAndBytesConfig

    if load_8bit:
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
    return {
        "quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_compute_dtype=dtype, bnb_4bit_use_double_quant=True, bnb_4bit_quant_type="nf4"
        )
    }


def _load_config(folder: Path) -> LlavaConfig:
    if not (folder / MODEL_CONFIG).is_file():
        raise LlavaLoadError(f"{folder}: no {MODEL_CONFIG}; a LLaVA folder needs its LlavaConfig")
    return LlavaConfig.from_pretrained(str(folder))


def _load_base_weights(folder: Path, config: LlavaConfig, **kwargs) -> LlavaLlamaForCausalLM:
    """The language model + projector from `folder`, failing on any missing or foreign key."""
    model, info = LlavaLlamaForCausalLM.from_pretrained(
        str(folder), config=config, output_loading_info=True, **kwargs
    )
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(k for k in info.get("unexpected_keys") or [] if "vision_tower." not in k)
    mismatched = info.get("mismatched_keys") or []
    if missing or unexpected or mismatched:
        raise LlavaLoadError(
            f"{folder}: weights do not fit {MODEL_CONFIG} (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"mismatched {list(mismatched)[:3]}); check that the folder holds a LLaVA-1.5 llava_llama checkpoint"
        )
    return model


def _load_tokenizer(*folders: Path):
    """The tokenizer of the first folder that has one."""
    for folder in folders:
        if any((folder / f).is_file() for f in ("tokenizer.model", "tokenizer.json")):
            return AutoTokenizer.from_pretrained(str(folder))
    raise LlavaLoadError(f"no tokenizer (tokenizer.model / tokenizer.json) in {[str(f) for f in folders]}")


def _add_image_tokens(tokenizer, model) -> None:
    """LLaVA variants with `mm_use_im_start_end` / `mm_use_im_patch_token` extend the vocab."""
    config = model.config
    new = []
    if getattr(config, "mm_use_im_patch_token", False):
        new.append(DEFAULT_IMAGE_PATCH_TOKEN)
    if getattr(config, "mm_use_im_start_end", False):
        new += [DEFAULT_IM_START_TOKEN, DEFAULT_IM_END_TOKEN]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
        if len(tokenizer) != config.vocab_size:
            model.resize_token_embeddings(len(tokenizer))


def _load_language_model(path: Path, kind: str, base: Path | None, merge_lora: bool, **kwargs):
    """Config + LM/projector weights (+ LoRA) for a folder of the given kind."""
    if kind == "full":
        if base is not None:
            logger.warning("%s is a full model; ignoring model_base %s", path, base)
        return _load_base_weights(path, _load_config(path), **kwargs)
    if base is None:
        raise LlavaLoadError(
            f"{path} is an {kind} folder and needs the base model: pass model_base (CLI: --model-base)"
        )
    config = _load_config(path if (path / MODEL_CONFIG).is_file() else base)
    model = _load_base_weights(base, config, **kwargs)
    if kind == "projector":
        weights = {projector_key(k): v for k, v in load_tensor_file(path / PROJECTOR_RUN_FILE).items()}
        apply_extra_weights(model, weights, path / PROJECTOR_RUN_FILE)
        return model
    projector = read_projector_weights(path)
    if projector is None:
        logger.warning("%s has no %s: keeping the base model's projector", path, PROJECTOR_FILE)
    else:
        apply_extra_weights(model, *projector)
    return apply_lora(model, path, merge=merge_lora)


def _attach_tower(model, search_dirs: list[Path], override, dtype, attn: str, source: str) -> object:
    """Resolve `mm_vision_tower` offline, load it and install it; returns the tower."""
    inner = model.get_model() if hasattr(model, "get_model") else model.get_base_model().get_model()
    name = getattr(inner.config, "mm_vision_tower", None) or getattr(inner.config, "vision_tower", None)
    if name is None and override is None:
        raise LlavaLoadError(f"{MODEL_CONFIG} has no mm_vision_tower; pass vision_tower_path")
    tower_path = resolve_vision_tower(str(name), search_dirs, override, source=source)
    tower = build_vision_tower(inner.config, tower_path, dtype=dtype, attn_implementation=attn)
    inner.attach_vision_tower(tower)
    return tower


def load_pretrained_model(
    model_path: str | Path,
    model_base: str | Path | None = None,
    model_name: str | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map: str | dict | None = None,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    attn_implementation: str | None = None,
    vision_tower_path: str | Path | None = None,
    merge_lora: bool = True,
    use_flash_attn: bool = False,
):
    """Load a LLaVA-1.5 model folder (full, adapter on `model_base`, or projector run).

    Args:
        model_path: the folder to load; its kind is read from its files (module docstring).
        model_base: the base model folder, required for adapter and projector folders.
        model_name: display name only (LLaVA dispatched on it; this loader does not).
        load_8bit / load_4bit: bitsandbytes quantisation (CUDA only).
        device_map: passed to `from_pretrained` (e.g. "auto" to shard over GPUs); else the
            whole model is moved to `device` ("auto" = cuda if available, else cpu).
        dtype: torch dtype or "fp32"/"bf16"/"fp16"; default fp16 on CUDA, fp32 on CPU.
        attn_implementation: default `flash_attention_2` when available, else `sdpa`.
        vision_tower_path: explicit CLIP tower folder (overrides `mm_vision_tower`).
        merge_lora: merge LoRA deltas into the weights (True) or keep a PEFT adapter (False).
        use_flash_attn: LLaVA's flag, same as attn_implementation="flash_attention_2".

    Returns:
        (tokenizer, model, image_processor, context_len) as LLaVA's loader does.
    """
    path = Path(model_path).expanduser()
    base = Path(model_base).expanduser() if model_base else None
    kind = folder_kind(path)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    attn = pick_attn_implementation("flash_attention_2" if use_flash_attn else attn_implementation, dev, torch_dtype)
    load_kwargs = {"dtype": torch_dtype, "attn_implementation": attn}
    load_kwargs.update(_quantization_kwargs(load_8bit, load_4bit, torch_dtype))
    if device_map is not None:
        load_kwargs["device_map"] = device_map
    logger.info("loading %s (%s folder) as %s on %s, attention %s", model_name or path.name, kind, torch_dtype, dev, attn)
    model = _load_language_model(path, kind, base, merge_lora, **load_kwargs)
    tokenizer = _load_tokenizer(path, *([base] if base else []))
    _add_image_tokens(tokenizer, model)
    search = [path, path.parent] + ([base, base.parent] if base else [])
    config_file = path / MODEL_CONFIG if (path / MODEL_CONFIG).is_file() else (base or path) / MODEL_CONFIG
    tower = _attach_tower(model, search, vision_tower_path, torch_dtype, attn, f"mm_vision_tower in {config_file}")
    if device_map is None and "quantization_config" not in load_kwargs:
        model.to(dev)
    else:
        tower.to(device=model.get_input_embeddings().weight.device)
    model.eval()
    context_len = getattr(model.config, "max_sequence_length", 2048)
    return tokenizer, model, tower.image_processor, context_len
