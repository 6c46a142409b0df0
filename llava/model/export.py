"""Export any loadable LLaVA model (e.g. base + merged adapter) as one dense checkpoint, streamed.

Two layouts:
- `llava`: the original LLaVA-1.5 format (`llava_llama`, `model.mm_projector.*`, tower named
  in `mm_vision_tower`), loadable by this package, the original LLaVA code and SGLang;
- `hf`: the published llava-hf layout of `LlavaForConditionalGeneration` (as in
  llava-hf/llava-1.5-7b-hf: keys `language_model.model.*`, `language_model.lm_head.*`,
  `vision_tower.vision_model.*`, `multi_modal_projector.linear_{1,2}.*`), with the CLIP tower
  inside, an `<image>` token appended to the vocabulary, the tokenizer files (including the
  sentencepiece `tokenizer.model` when the base has one) and a `LlavaProcessor` (pad-to-square
  image processor + vicuna_v1 chat template); readable by transformers 4.4x-4.5x and 5.x,
  lmms-eval's `llava_hf`, vLLM and SGLang.

    python -m llava.model.export --model-path ADAPTER --model-base BASE --out DIR --layout hf

The model is never built: every output tensor is computed on its own from the base's weight
files and the adapter (a LoRA target as W0 + (B·A)·s in float32, exactly as PEFT's merge does),
cast to `--dtype` (default: the dtype of the base config) and streamed into safetensors shards
of at most `--max-shard-size`, so peak memory is about one tensor (≈1.1 GB at 7B: the grown
embedding), whatever the model's size. Output is written to a temporary folder and renamed
into place; files get the umask's default mode.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.model.adapter_io import check_extra_weights, read_lora_config
from llava.model.builder import (
    _load_config,
    _load_tokenizer,
    folder_kind,
    resolve_dtype,
)
from llava.model.errors import LlavaLoadError
from llava.model.multimodal_encoder.builder import resolve_vision_tower
from llava.model.multimodal_encoder.clip_encoder import load_image_processor
from llava.model.tensor_files import (
    PlannedTensor,
    TensorFiles,
    parse_size,
    write_sharded_safetensors,
)
from robustmerge.atomic import atomic_folder
from robustmerge.errors import cli_main
from robustmerge.taskfolder import (
    ADAPTER_CONFIG,
    MODEL_CONFIG,
    PROJECTOR_FILE,
    PROJECTOR_RUN_FILE,
    WEIGHT_FILES,
    find_weight_file,
    is_adapter_folder,
    module_name,
    parse_lora_key,
    projector_key,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_SHARD_SIZE = "5GB"
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


# ---------------------------------------------------------------------------------------------
# Sources: what each output tensor is computed from
# ---------------------------------------------------------------------------------------------


@dataclass
class LoraSource:
    """The LoRA factors of an adapter folder, read lazily: base weight key -> (A key, B key, scaling)."""

    files: TensorFiles
    modules: dict[str, tuple[str, str, float]]


@dataclass
class ModelSource:
    """Everything a dense export reads, without building the model."""

    path: Path
    config: object  # LlavaConfig
    base: TensorFiles  # language model + projector weights
    shapes: dict[str, tuple[int, ...]]  # expected LM + projector parameters, from a meta-device model
    extra: dict[str, torch.Tensor] = field(default_factory=dict)  # projector replacing the base's
    lora: LoraSource | None = None
    tokenizer_dirs: list[Path] = field(default_factory=list)
    search_dirs: list[Path] = field(default_factory=list)
    config_file: Path | None = None

    def tensor(self, key: str) -> torch.Tensor:
        """One language-model/projector tensor after merging, float32 (shape of `shapes[key]`)."""
        value = self.extra[key] if key in self.extra else self.base.get(key)
        weight = value.to(torch.float32)
        if self.lora is not None and key in self.lora.modules:
            a_key, b_key, scaling = self.lora.modules[key]
            a = self.lora.files.get(a_key).to(torch.float32)  # [r, d_in]
            b = self.lora.files.get(b_key).to(torch.float32)  # [d_out, r]
            weight = weight + (b @ a) * scaling  # [d_out, d_in], PEFT's merge: W += (B @ A) * s
        return weight


def _expected_shapes(config) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of LlavaLlamaForCausalLM(config), built on the meta device."""
    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM

    with torch.device("meta"):
        model = LlavaLlamaForCausalLM(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if ".vision_tower." not in k}


def _check_base(files: TensorFiles, shapes: dict[str, tuple[int, ...]], folder: Path) -> None:
    """Every expected parameter is in the files with its shape; nothing foreign (tower keys aside)."""
    missing = sorted(k for k in shapes if k not in files)
    unexpected = sorted(k for k in files if k not in shapes and "vision_tower." not in k)
    mismatched = sorted(k for k in shapes if k in files and files.infos[k].shape != shapes[k])
    if missing or unexpected or mismatched:
        raise LlavaLoadError(
            f"{folder}: weights do not fit {MODEL_CONFIG} (missing {missing[:3]}, unexpected {unexpected[:3]}, "
            f"mismatched {mismatched[:3]}); check that the folder holds a LLaVA-1.5 llava_llama checkpoint"
        )


def _read_extra(path: Path, shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Projector tensors (PROJECTOR_FILE / PROJECTOR_RUN_FILE), keys checked against the model."""
    files = TensorFiles(path, [path])
    weights = {projector_key(k): files.get(k) for k in files}
    check_extra_weights(weights, shapes, path)
    return weights


def _lora_scaling(config, module: str, rank: int) -> float:
    """PEFT's scaling for one module: alpha / r (or alpha / sqrt(r) with rsLoRA), patterns honoured."""
    from peft.utils.other import get_pattern_key

    r = config.rank_pattern.get(get_pattern_key(list(config.rank_pattern), module), config.r)
    alpha = config.alpha_pattern.get(get_pattern_key(list(config.alpha_pattern), module), config.lora_alpha)
    if r != rank:
        raise LlavaLoadError(f"LoRA factors of {module} have rank {rank} but {ADAPTER_CONFIG} says r={r}")
    return alpha / math.sqrt(r) if config.use_rslora else alpha / r


def _check_plain_lora(config, folder: Path) -> None:
    """The streamed merge covers plain LoRA on Linear layers; anything else is refused clearly."""
    unsupported = [name for name, on in (("use_dora", config.use_dora), ("lora_bias", getattr(config, "lora_bias", False)),
                                         ("fan_in_fan_out", config.fan_in_fan_out),
                                         ("modules_to_save", bool(config.modules_to_save)),
                                         ("target_parameters", bool(getattr(config, "target_parameters", None))))
                   if on]  # fmt: skip
    if unsupported:
        raise LlavaLoadError(f"{folder}/{ADAPTER_CONFIG} sets {unsupported}; the dense export merges plain LoRA "
                             "only: merge it with PEFT first (merge_and_unload) and export the full model")


def _read_lora(folder: Path, shapes: dict[str, tuple[int, ...]]) -> LoraSource:
    """Pair every LoRA A/B with its base weight, checking shapes and that every target got factors."""
    from peft.tuners.tuners_utils import check_target_module_exists

    config = read_lora_config(folder)
    _check_plain_lora(config, folder)
    path = find_weight_file(folder)
    if path is None:
        raise LlavaLoadError(f"{folder}: has {ADAPTER_CONFIG} but none of {WEIGHT_FILES}; "
                             "copy the adapter weights next to its config")
    files = TensorFiles(path, [path])
    pairs: dict[str, dict[str, str]] = {}
    for key in files:
        parsed = parse_lora_key(key)
        module = module_name(parsed[0]) if parsed else None
        if module is None or f"{module}.weight" not in shapes:
            raise LlavaLoadError(f"{path}: adapter key {key} matches no LoRA layer of the model; the adapter's keys or "
                                 "target_modules do not fit this base model")
        pairs.setdefault(module, {})[parsed[1]] = key
    modules = {}
    for module, pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise LlavaLoadError(f"{path}: {module} has lora_{''.join(pair)} but not both factors")
        a, b = files.infos[pair["A"]].shape, files.infos[pair["B"]].shape
        if len(shapes[f"{module}.weight"]) != 2 or (b[0], a[1]) != shapes[f"{module}.weight"] or a[0] != b[1]:
            raise LlavaLoadError(f"{path}: LoRA shapes of {module} ({a}, {b}) do not fit the base weight "
                                 f"{shapes[f'{module}.weight']}")
        modules[f"{module}.weight"] = (pair["A"], pair["B"], _lora_scaling(config, module, a[0]))
    targeted = [k[: -len(".weight")] for k in shapes if k.endswith(".weight") and len(shapes[k]) == 2
                and "mm_projector" not in k and check_target_module_exists(config, k[: -len(".weight")])]
    unfed = sorted(m for m in targeted if m not in pairs and m != "lm_head")
    if unfed and config.target_modules != "all-linear":
        raise LlavaLoadError(f"{path}: no weights for {len(unfed)} LoRA layer(s) that {ADAPTER_CONFIG} targets, "
                             f"e.g. {unfed[:3]}; the file is incomplete or its config lists extra target_modules")
    return LoraSource(files, modules)


def open_source(model_path: str | Path, model_base: str | Path | None = None) -> ModelSource:
    """What a dense export of `model_path` (on `model_base` for adapter/projector folders) reads."""
    path = Path(model_path).expanduser()
    base = Path(model_base).expanduser() if model_base else None
    kind = folder_kind(path)
    if kind == "full":
        if base is not None:
            logger.warning("%s is a full model; ignoring model_base %s", path, base)
        base = None
    elif base is None:
        raise LlavaLoadError(f"{path} is an {kind} folder and needs the base model: pass model_base (CLI: --model-base)")
    weights_folder = base or path
    config_folder = path if (path / MODEL_CONFIG).is_file() else weights_folder
    config = _load_config(config_folder)
    shapes = _expected_shapes(config)
    files = TensorFiles(weights_folder)
    _check_base(files, shapes, weights_folder)
    source = ModelSource(path=path, config=config, base=files, shapes=shapes,
                         tokenizer_dirs=[path, *([base] if base else [])],
                         search_dirs=[path, path.parent] + ([base, base.parent] if base else []),
                         config_file=config_folder / MODEL_CONFIG)  # fmt: skip
    if kind == "projector":
        source.extra = _read_extra(path / PROJECTOR_RUN_FILE, shapes)
    elif kind == "adapter":
        if (path / PROJECTOR_FILE).is_file():
            source.extra = _read_extra(path / PROJECTOR_FILE, shapes)
        else:
            logger.warning("%s has no %s: keeping the base model's projector", path, PROJECTOR_FILE)
        source.lora = _read_lora(path, shapes)
    return source


def _check_vocab(source: ModelSource, tokenizer) -> None:
    """LLaVA variants that grow the vocabulary at load time cannot be exported from files alone."""
    config = source.config
    grows = getattr(config, "mm_use_im_patch_token", False) or getattr(config, "mm_use_im_start_end", False)
    if grows and len(tokenizer) + 2 > config.vocab_size:
        raise LlavaLoadError(f"{source.config_file}: mm_use_im_start_end / mm_use_im_patch_token add tokens at load "
                             "time; save the loaded model first (save_pretrained) and export that folder")


# ---------------------------------------------------------------------------------------------
# Plans: the output tensors, each with the function that computes it
# ---------------------------------------------------------------------------------------------


def _cast(make: Callable[[], torch.Tensor], dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    return lambda: make().to(dtype).contiguous()


def _llava_plan(source: ModelSource, dtype: torch.dtype) -> list[PlannedTensor]:
    """The language model + projector under their llava_llama names."""
    return [PlannedTensor(k, shape, dtype, _cast(lambda k=k: source.tensor(k), dtype))
            for k, shape in source.shapes.items()]


def _grow_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """[V, H] -> [rows, H], new rows = mean of the old ones (so the image token is never the argmax)."""
    extra = weight.mean(dim=0, keepdim=True).expand(rows - weight.shape[0], -1)  # [rows - V, H]
    return torch.cat([weight, extra], dim=0)


def _grown(make: Callable[[], torch.Tensor], rows: int) -> Callable[[], torch.Tensor]:
    return lambda: _grow_rows(make(), rows)


def hf_name(key: str) -> str:
    """llava_llama parameter name -> its name in the published llava-hf checkpoints."""
    for old, new in (("model.mm_projector.0.", "multi_modal_projector.linear_1."),
                     ("model.mm_projector.2.", "multi_modal_projector.linear_2."),
                     ("lm_head.", "language_model.lm_head."), ("model.", "language_model.model.")):  # fmt: skip
        if key.startswith(old):
            return new + key[len(old):]
    return key


def _hf_lm_plan(source: ModelSource, dtype: torch.dtype, vocab_size: int) -> list[PlannedTensor]:
    """The language model + projector under llava-hf names, embeddings grown by the `<image>` row(s)."""
    plan = []
    for key, shape in source.shapes.items():
        make = _cast(lambda k=key: source.tensor(k), dtype)
        if key in ("model.embed_tokens.weight", "lm_head.weight"):
            shape = (vocab_size, shape[1])
            make = _grown(make, vocab_size)  # rows averaged in `dtype`, as before
        plan.append(PlannedTensor(hf_name(key), shape, dtype, make))
    return plan


def tower_weights(tower_path: Path) -> tuple[TensorFiles, dict[str, str], object]:
    """(files, CLIPVisionModel parameter name -> file key, CLIPVisionConfig) of a tower folder.

    Accepts CLIPVisionModel and full CLIPModel checkpoints (keys `vision_model.*`, text side
    ignored) as well as prefix-less vision checkpoints.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModel

    vision_config = CLIPVisionConfig.from_pretrained(str(tower_path))
    with torch.device("meta"):
        names = list(CLIPVisionModel(vision_config).state_dict())
    files = TensorFiles(tower_path)
    keys = set(files.keys())
    mapping = {}
    for name in names:
        found = next((k for k in (f"vision_model.{name}", name) if k in keys), None)
        if found is None:
            raise LlavaLoadError(f"{tower_path}: the vision tower weights lack {name}; point mm_vision_tower "
                                 "(or --vision-tower) at a complete CLIP checkpoint")
        mapping[name] = found
    return files, mapping, vision_config


def _hf_tower_plan(tower_path: Path, dtype: torch.dtype) -> list[PlannedTensor]:
    files, mapping, _ = tower_weights(tower_path)
    return [PlannedTensor(f"vision_tower.vision_model.{name}", files.infos[key].shape, dtype,
                          _cast(lambda key=key: files.get(key).to(torch.float32), dtype))
            for name, key in mapping.items()]


# ---------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------


def _copy_file(src: Path, dst: Path) -> None:
    """Copy contents only: the new file gets the umask's default mode, not the source's."""
    shutil.copyfile(src, dst)


def _copy_tree(src: Path, dst: Path) -> None:
    dst.mkdir()
    for item in sorted(src.iterdir()):
        (_copy_tree if item.is_dir() else _copy_file)(item, dst / item.name)


def _copy_tokenizer_files(tokenizer, folder: Path) -> None:
    """The original tokenizer files (sentencepiece model for the slow tokenizer), else a fresh save."""
    source = Path(tokenizer.name_or_path)
    files = [source / f for f in _TOKENIZER_FILES if (source / f).is_file()]
    if any(f.name == "tokenizer.model" for f in files):
        for f in files:
            _copy_file(f, folder / f.name)
    else:
        tokenizer.save_pretrained(str(folder))


def _generation_config(source: ModelSource):
    """The generation config `from_pretrained` would give the loaded model."""
    from transformers import GenerationConfig

    weights_folder = source.base.source
    if (weights_folder / "generation_config.json").is_file():
        return GenerationConfig.from_pretrained(str(weights_folder))
    return GenerationConfig.from_model_config(source.config)


def _progress(total: int, label: str) -> Callable[[str], None]:
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="tensor", disable=None)
    return lambda _name: bar.update(1)


def _write_llava(source: ModelSource, folder: Path, dtype: torch.dtype, shard_bytes: int, tower_path: Path) -> None:
    """The original LLaVA-1.5 layout (tower copied in unless it is a hub id)."""
    original = source.config.to_original_dict()
    original["torch_dtype"] = str(dtype).removeprefix("torch.")
    original.pop("dtype", None)
    if not _is_hub_id(str(source.config.mm_vision_tower)):
        _copy_tree(tower_path, folder / tower_path.name)
        original["mm_vision_tower"] = tower_path.name
    plan = _llava_plan(source, dtype)
    write_sharded_safetensors(plan, folder, shard_bytes, _progress(len(plan), "export llava"))
    (folder / MODEL_CONFIG).write_text(json.dumps(original, indent=2, sort_keys=True) + "\n")
    _generation_config(source).save_pretrained(str(folder))
    _copy_tokenizer_files(_load_tokenizer(*source.tokenizer_dirs), folder)


def export_llava_layout(model, tokenizer, folder: Path, dtype: torch.dtype, max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE) -> None:
    """Write an in-memory LlavaLlamaForCausalLM (e.g. just trained) in the original LLaVA-1.5 layout."""
    config = model.config
    original = config.to_original_dict()
    original["torch_dtype"] = str(dtype).removeprefix("torch.")
    original.pop("dtype", None)
    tower = model.get_vision_tower()
    if not _is_hub_id(str(config.mm_vision_tower)):
        _copy_tree(tower.tower_path, folder / tower.tower_path.name)
        original["mm_vision_tower"] = tower.tower_path.name
    state = {k: v for k, v in model.state_dict().items() if ".vision_tower." not in k}
    plan = [PlannedTensor(k, tuple(v.shape), dtype, _cast(lambda v=v: v.detach(), dtype)) for k, v in state.items()]
    write_sharded_safetensors(plan, folder, parse_size(max_shard_size))
    (folder / MODEL_CONFIG).write_text(json.dumps(original, indent=2, sort_keys=True) + "\n")
    model.generation_config.save_pretrained(str(folder))
    _copy_tokenizer_files(tokenizer, folder)


def _hf_config(config, vision_config, vocab_size: int, image_token_id: int, dtype: torch.dtype):
    """transformers.LlavaConfig equivalent to a llava_llama config + its CLIP tower."""
    import dataclasses

    from transformers import CLIPVisionConfig, LlamaConfig
    from transformers import LlavaConfig as HFLlavaConfig

    if config.mm_projector_type != "mlp2x_gelu":
        raise LlavaLoadError(f"the hf layout needs mm_projector_type mlp2x_gelu, not {config.mm_projector_type!r}")
    llama_fields = {f.name for f in dataclasses.fields(LlamaConfig)} - {"architectures", "dtype", "transformers_version"}
    text = LlamaConfig(**{k: v for k, v in config.to_dict().items() if k in llama_fields})
    text.vocab_size = vocab_size
    vision = CLIPVisionConfig(**vision_config.to_dict())
    patch_only = config.mm_vision_select_feature == "patch"
    patches = (vision.image_size // vision.patch_size) ** 2
    return HFLlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=image_token_id,
        image_seq_length=patches + (0 if patch_only else 1),
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if patch_only else "full",
        vision_feature_layer=config.mm_vision_select_layer,
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
        architectures=["LlavaForConditionalGeneration"],
        dtype=dtype,
    )


def _hf_processor(tokenizer, image_processor, vision_config, config):
    """LlavaProcessor: pad-to-square (image_aspect_ratio 'pad') CLIP preprocessing + vicuna_v1 template."""
    from transformers import LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import (
        LlavaImageProcessorPil,
    )

    ip = image_processor
    llava_ip = LlavaImageProcessorPil(
        do_pad=getattr(config, "image_aspect_ratio", None) == "pad",
        size=dict(ip.size), crop_size=dict(ip.crop_size), resample=ip.resample,
        image_mean=list(ip.image_mean), image_std=list(ip.image_std), rescale_factor=ip.rescale_factor,
    )  # fmt: skip
    return LlavaProcessor(
        image_processor=llava_ip,
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy="default" if config.mm_vision_select_feature == "patch" else "full",
        chat_template=VICUNA_CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )


def _added_tokens_decoder(tokenizer) -> dict[str, dict]:
    """`added_tokens_decoder` as transformers 4.x writes it (id -> token properties)."""
    return {str(i): {"content": t.content, "lstrip": t.lstrip, "normalized": t.normalized, "rstrip": t.rstrip,
                     "single_word": t.single_word, "special": t.special}
            for i, t in sorted(tokenizer.added_tokens_decoder.items())}  # fmt: skip


def _write_hf_tokenizer_files(folder: Path, tokenizer, source_dir: Path) -> None:
    """Make the saved tokenizer files the ones the published llava-hf checkpoints ship.

    transformers 5 writes `extra_special_tokens` as a list, which 4.x cannot read; the list
    becomes 4.x's `additional_special_tokens` (which 5.x reads too), `added_tokens_decoder`
    is added, the sentencepiece `tokenizer.model` is copied from the base when it has one,
    and `special_tokens_map.json`, `added_tokens.json` and `chat_template.json` are written for
    4.x-based servers.
    """
    path = folder / "tokenizer_config.json"
    saved = json.loads(path.read_text())
    extra = saved.pop("extra_special_tokens", None) or []
    extra = list(extra.values()) if isinstance(extra, dict) else list(extra)
    for key in ("backend", "is_local", "local_files_only"):
        saved.pop(key, None)
    saved["additional_special_tokens"] = extra
    saved["added_tokens_decoder"] = _added_tokens_decoder(tokenizer)
    source_config = source_dir / "tokenizer_config.json"
    if source_config.is_file():
        original = json.loads(source_config.read_text())
        saved.update({k: original[k] for k in ("legacy", "add_bos_token", "add_eos_token") if k in original})
    path.write_text(json.dumps(saved, indent=2, sort_keys=True) + "\n")
    specials = {k: saved[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token") if saved.get(k) is not None}
    specials["additional_special_tokens"] = extra
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2, sort_keys=True) + "\n")
    base_vocab = len(tokenizer) - len(extra)
    added = {t: tokenizer.convert_tokens_to_ids(t) for t in extra if tokenizer.convert_tokens_to_ids(t) >= base_vocab}
    (folder / "added_tokens.json").write_text(json.dumps(added, indent=2, sort_keys=True) + "\n")
    if (source_dir / "tokenizer.model").is_file():
        _copy_file(source_dir / "tokenizer.model", folder / "tokenizer.model")
    (folder / "chat_template.json").write_text(json.dumps({"chat_template": VICUNA_CHAT_TEMPLATE}, indent=2) + "\n")


def _write_legacy_preprocessor_config(folder: Path) -> None:
    """Also write `preprocessor_config.json`, which transformers 4.x-based servers read."""
    processor = json.loads((folder / "processor_config.json").read_text())
    image = {**processor["image_processor"], "processor_class": "LlavaProcessor"}
    (folder / "preprocessor_config.json").write_text(json.dumps(image, indent=2, sort_keys=True) + "\n")


def _write_hf(source: ModelSource, folder: Path, dtype: torch.dtype, shard_bytes: int, tower_path: Path) -> None:
    """The llava-hf layout (LlavaForConditionalGeneration + LlavaProcessor)."""
    config = source.config
    tokenizer = _load_tokenizer(*source.tokenizer_dirs)
    tokenizer.add_special_tokens({"additional_special_tokens": [DEFAULT_IMAGE_TOKEN]})
    image_token_id = tokenizer.convert_tokens_to_ids(DEFAULT_IMAGE_TOKEN)
    vocab_size = max(config.vocab_size, image_token_id + 1)
    _, _, vision_config = tower_weights(tower_path)
    plan = _hf_tower_plan(tower_path, dtype) + _hf_lm_plan(source, dtype, vocab_size)
    write_sharded_safetensors(plan, folder, shard_bytes, _progress(len(plan), "export hf"))
    _hf_config(config, vision_config, vocab_size, image_token_id, dtype).save_pretrained(str(folder))
    _generation_config(source).save_pretrained(str(folder))
    _hf_processor(tokenizer, load_image_processor(tower_path), vision_config, config).save_pretrained(str(folder))
    _write_legacy_preprocessor_config(folder)
    _write_hf_tokenizer_files(folder, tokenizer, Path(tokenizer.name_or_path))


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
    max_shard_size: str | int = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Stream one dense checkpoint of `model_path` (merged with its LoRA) to `out`, atomically."""
    writers = {"llava": _write_llava, "hf": _write_hf}
    if layout not in writers:
        raise LlavaLoadError(f"unknown layout {layout!r}; use one of {sorted(writers)}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise LlavaLoadError(f"{out} exists and is not empty; choose a new --out folder")
    shard_bytes = parse_size(max_shard_size)
    source = open_source(model_path, model_base)
    _check_vocab(source, _load_tokenizer(*source.tokenizer_dirs))
    tower_path = resolve_vision_tower(str(source.config.mm_vision_tower), source.search_dirs, vision_tower_path,
                                      source=f"mm_vision_tower in {source.config_file}")
    out_dtype = resolve_dtype(dtype or _source_dtype(Path(model_path), model_base), torch.device("cpu"))
    with atomic_folder(out) as tmp:
        writers[layout](source, tmp, out_dtype, shard_bytes, tower_path)
    logger.info("exported %s (%s layout, %s) to %s", model_path, layout, out_dtype, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llava.model.export", description=__doc__.split("\n")[0])
    parser.add_argument("--model-path", required=True, help="full model, LoRA task folder or merged adapter")
    parser.add_argument("--model-base", default=None, help="base model folder (for adapters)")
    parser.add_argument("--out", required=True, type=Path, help="new folder to write")
    parser.add_argument("--layout", choices=["llava", "hf", "both"], default="hf",
                        help="llava (original llava_llama), hf (llava-hf LlavaForConditionalGeneration) or both (OUT/llava, OUT/hf)")  # fmt: skip
    parser.add_argument("--dtype", default=None, help="fp32, bf16 or fp16 (default: the base config's dtype)")
    parser.add_argument("--vision-tower", default=None, help="local CLIP tower folder (overrides mm_vision_tower)")
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE,
                        help=f"largest safetensors shard, e.g. 5GB, 500MB (default {DEFAULT_MAX_SHARD_SIZE}); "
                             "more than one shard adds model.safetensors.index.json")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    targets = [("llava", args.out / "llava"), ("hf", args.out / "hf")] if args.layout == "both" else [(args.layout, args.out)]

    def run() -> None:
        for layout, out in targets:
            export_model(args.model_path, out, layout, args.model_base, args.dtype, args.vision_tower,
                         args.max_shard_size)

    return cli_main(run)


if __name__ == "__main__":
    sys.exit(main())
