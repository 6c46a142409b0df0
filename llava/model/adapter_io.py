"""Loading LLaVA LoRA task folders and merged adapter folders into a model, with every key checked.

The folder format (file names, which weight file wins, key names, the one projector-key
rule, safe reading) is `robustmerge.taskfolder`'s: a folder is an adapter when it holds the
PEFT LoraConfig (`taskfolder.ADAPTER_CONFIG`); its LoRA factors come from the safetensors
file (preferred) or the legacy `.bin` (keys `base_model.model.model.layers.{L}...lora_{A,B}.weight`);
the fine-tuned projector from `taskfolder.PROJECTOR_FILE` (keys
`base_model.model.model.mm_projector.*` as LLaVA's train.py writes them, or
`model.mm_projector.*` as the original merge writes them), renamed by `taskfolder.projector_key`.

Unlike LLaVA's `load_state_dict(strict=False)`, every projector key must name an existing
parameter of the same shape and every LoRA factor must land on an injected LoRA layer (and
every injected layer must receive its factors); anything else raises `LlavaLoadError`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import nn

from llava.model.errors import LlavaLoadError
from robustmerge import taskfolder
from robustmerge.taskfolder import ADAPTER_CONFIG, WEIGHT_FILES, is_adapter_folder  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)


def load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    """A flat tensor dict from `.safetensors` or a `.bin` pickle (weights_only: no code runs)."""
    try:
        return taskfolder.read_tensors(path)
    except Exception as exc:  # noqa: BLE001 - any read failure is a corrupt/foreign file for the user
        raise LlavaLoadError(f"{path}: cannot read tensors ({exc}); re-export or re-download this file") from exc


def read_lora_config(folder: Path):
    """The PEFT LoraConfig of an adapter folder."""
    from peft import LoraConfig

    path = folder / ADAPTER_CONFIG
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise LlavaLoadError(f"{path}: not a readable JSON file ({exc})") from exc
    if raw.get("peft_type", "LORA") != "LORA":
        raise LlavaLoadError(f"{path}: peft_type {raw.get('peft_type')!r}; only LoRA adapters are supported")
    config = LoraConfig.from_pretrained(str(folder))
    config.inference_mode = True
    return config


def read_lora_weights(folder: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """LoRA factors from the adapter file (safetensors preferred over the legacy .bin)."""
    path = taskfolder.find_weight_file(folder)
    if path is None:
        raise LlavaLoadError(
            f"{folder}: has {ADAPTER_CONFIG} but neither {' nor '.join(WEIGHT_FILES)}; "
            "copy the adapter weights next to its config"
        )
    return load_tensor_file(path), path


def read_projector_weights(folder: Path) -> tuple[dict[str, torch.Tensor], Path] | None:
    """The projector file with keys named as in LlavaLlamaForCausalLM, or None if absent."""
    path = taskfolder.find_projector_file(folder)
    if path is None:
        return None
    return {taskfolder.projector_key(k): v for k, v in load_tensor_file(path).items()}, path


def check_extra_weights(weights: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], source: Path) -> None:
    """Every extra (projector) key must name a model parameter of the same shape (``shapes``)."""
    homeless = sorted(k for k in weights if k not in shapes)
    if homeless:
        raise LlavaLoadError(
            f"{source}: {len(homeless)} key(s) match no model parameter, e.g. {homeless[:3]}; "
            "expected names like base_model.model.model.mm_projector.0.weight or model.mm_projector.0.weight. "
            "Check that the file belongs to a LLaVA model of this architecture"
        )
    bad = sorted(k for k, v in weights.items() if tuple(v.shape) != tuple(shapes[k]))
    if bad:
        k = bad[0]
        raise LlavaLoadError(
            f"{source}: shape mismatch for {k}: file {tuple(weights[k].shape)} vs model {tuple(shapes[k])}; "
            "the adapter was trained on a different base model"
        )


def apply_extra_weights(model: nn.Module, weights: dict[str, torch.Tensor], source: Path) -> None:
    """Copy `weights` into `model`; every key must name a parameter of the same shape."""
    params = {k: tuple(v.shape) for k, v in model.state_dict().items() if ".vision_tower." not in k}
    check_extra_weights(weights, params, source)
    result = model.load_state_dict(weights, strict=False)
    assert not result.unexpected_keys, result.unexpected_keys  # guaranteed by the check above
    logger.info("loaded %d extra weights from %s", len(weights), source)


def _check_lora_load(peft_model, weights: dict, result, source: Path) -> None:
    """Every LoRA factor in the file found a layer, and every injected layer got its factors."""
    if result.unexpected_keys:
        raise LlavaLoadError(
            f"{source}: {len(result.unexpected_keys)} adapter key(s) match no LoRA layer of the model, "
            f"e.g. {sorted(result.unexpected_keys)[:3]}; the adapter's keys or target_modules do not fit "
            "this base model (expected base_model.model.model.layers.{L}.self_attn.q_proj.lora_A.weight ...)"
        )
    missing = sorted(k for k in result.missing_keys if ".lora_" in k)
    if missing:
        raise LlavaLoadError(
            f"{source}: no weights for {len(missing)} LoRA layer factor(s) that {ADAPTER_CONFIG} targets, "
            f"e.g. {missing[:3]}; the file is incomplete or its config lists extra target_modules"
        )
    logger.info("loaded %d LoRA tensors from %s", len(weights), source)


def apply_lora(model: nn.Module, folder: Path, merge: bool) -> nn.Module:
    """Inject the folder's LoRA into `model` via PEFT (scaling lora_alpha / r, or rsLoRA).

    Returns the model with the deltas merged into its weights (`merge=True`), or the
    `PeftModel` wrapper keeping the adapter separate.
    """
    from peft import get_peft_model, set_peft_model_state_dict

    config = read_lora_config(folder)
    weights, source = read_lora_weights(folder)
    config.base_model_name_or_path = model.name_or_path  # the base actually used
    peft_model = get_peft_model(model, config)
    try:
        result = set_peft_model_state_dict(peft_model, weights)
    except RuntimeError as exc:  # size mismatch
        raise LlavaLoadError(f"{source}: LoRA shapes do not fit the base model ({exc})") from exc
    _check_lora_load(peft_model, weights, result, source)
    peft_model.eval()
    if merge:
        return peft_model.merge_and_unload()
    return peft_model
