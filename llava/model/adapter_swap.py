"""Swap LoRA adapters on one loaded LLaVA base instead of reloading the base for every adapter.

    swapper = AdapterSwapper("checkpoints/llava-v1.5-7b")
    with swapper.attached("checkpoints/ScienceQA_lora") as bundle:      # task folder
        evaluate_task(bundle, "ScienceQA", ...)
    with swapper.attached("checkpoints/merged-robustmerge") as bundle:  # robustmerge output
        ...
    # here the base weights are bit-for-bit what load_pretrained_model(base) returned

`attach(folder)` does what `load_pretrained_model(folder, model_base=base)` does after loading
the base (the same `llava.model.adapter_io` functions, so the result is the same): the
projector from the task folder's projector file (when present), then the LoRA merged into the weights
through PEFT. Before that it keeps a copy of exactly the tensors the adapter changes (the
projector, and the weight of every module the adapter file has factors for), and `detach()`
copies them back. Memory cost: one copy of those tensors (for a 7B model with LoRA on every
linear layer of the language model, about the size of the language model).

The CLIP tower is set aside while PEFT injects the LoRA (its layers share names such as
``q_proj`` with the language model's), as the loader and ``llava.train`` do.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import torch

from llava.model.adapter_io import (
    apply_extra_weights,
    apply_lora,
    is_adapter_folder,
    read_lora_weights,
    read_projector_weights,
)
from llava.model.errors import LlavaLoadError
from robustmerge.taskfolder import ADAPTER_CONFIG, PROJECTOR_FILE, module_name, parse_lora_key

logger = logging.getLogger(__name__)


def lora_module_names(keys) -> list[str]:
    """Model module names (``model.layers.0.self_attn.q_proj``) of the LoRA factors in ``keys``."""
    names = set()
    for key in keys:
        parsed = parse_lora_key(key)
        if parsed is None or parsed[2] is not None:  # (an adapter name has no place in a file's keys)
            raise LlavaLoadError(
                f"adapter key {key!r} is not a LoRA factor of a linear layer (*.lora_A.weight / *.lora_B.weight); "
                "only plain LoRA adapters can be swapped"
            )
        names.add(module_name(parsed[0]))
    return sorted(names)


def _remove_lora_layers(model: torch.nn.Module) -> None:
    """Put back the original layer wherever PEFT left one of its LoRA wrappers (no merging)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, module in wrapped:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config


class AdapterSwapper:
    """A LLaVA base loaded once, with at most one LoRA adapter folder attached at a time.

    Args:
        model_base: the base model folder (a full LLaVA-1.5 checkpoint).
        **load_kwargs: passed to `load_pretrained_model` (device, dtype, vision_tower_path, ...).

    Attributes:
        tokenizer, model, image_processor, context_len: as `load_pretrained_model` returns them.
        current: the attached adapter folder, or None.
    """

    def __init__(self, model_base: str | Path, **load_kwargs):
        from llava.model.builder import folder_kind, load_pretrained_model

        self.model_base = Path(model_base)
        if folder_kind(self.model_base) != "full":
            raise LlavaLoadError(f"{self.model_base}: not a full LLaVA model folder; pass the base model")
        loaded = load_pretrained_model(self.model_base, **load_kwargs)
        self.tokenizer, self.model, self.image_processor, self.context_len = loaded
        self.current: Path | None = None
        self._saved: dict[str, torch.Tensor] = {}
        self._requires_grad = {name: p.requires_grad for name, p in self.model.named_parameters()}

    # ------------------------------------------------------------------ attach / detach

    def attach(self, folder: str | Path) -> None:
        """Attach the adapter in `folder` (detaching the current one first)."""
        folder = Path(folder)
        if not is_adapter_folder(folder):
            raise LlavaLoadError(f"{folder}: no {ADAPTER_CONFIG}; pass a LoRA task folder or a merged adapter")
        self.detach()
        weights, _ = read_lora_weights(folder)
        projector = read_projector_weights(folder)
        params = dict(self.model.named_parameters())
        touched = [f"{m}.weight" for m in lora_module_names(weights)]
        touched += [k for k in (projector[0] if projector else {}) if k in params]
        missing = [k for k in touched if k not in params]
        if missing:
            raise LlavaLoadError(f"{folder}: the adapter names modules this base lacks, e.g. {missing[:3]}")
        self._saved = {k: params[k].detach().clone() for k in touched}
        self.current = folder
        try:
            if projector is None:
                logger.warning("%s has no %s: keeping the base model's projector", folder, PROJECTOR_FILE)
            else:
                apply_extra_weights(self.model, *projector)
            self._merge_lora(folder)
        except Exception:
            self.detach()
            raise
        logger.info("attached %s", folder)

    def _merge_lora(self, folder: Path) -> None:
        """PEFT-inject the folder's LoRA, merge it into the weights, unload the wrapper."""
        inner = self.model.get_model()
        tower = inner.vision_tower
        inner.vision_tower = None
        try:
            merged = apply_lora(self.model, folder, merge=True)
        except Exception:
            _remove_lora_layers(self.model)  # PEFT injected its layers before the load check failed
            raise
        finally:
            inner.vision_tower = tower
        if merged is not self.model:
            raise LlavaLoadError(f"{folder}: PEFT returned a new model object; cannot swap adapters in place")
        if hasattr(self.model, "peft_config"):  # left by PEFT on the unloaded model
            del self.model.peft_config

    def detach(self) -> None:
        """Restore the base weights (bit for bit) and drop the attached adapter, if any."""
        if self.current is None:
            return
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, saved in self._saved.items():
                params[name].copy_(saved)
        for name, param in params.items():
            param.requires_grad_(self._requires_grad.get(name, False))
        self._saved = {}
        logger.info("detached %s", self.current)
        self.current = None

    @contextlib.contextmanager
    def attached(self, folder: str | Path | None, model_id: str | None = None) -> Iterator:
        """Context manager: attach `folder` (None = the base alone) and yield a ModelBundle."""
        if folder is not None:
            self.attach(folder)
        try:
            yield self.bundle(model_id or (Path(folder).name if folder is not None else self.model_base.name))
        finally:
            self.detach()

    def bundle(self, model_id: str = "llava"):
        """The loaded model as a `llava.eval.runner.ModelBundle` (with whatever is attached)."""
        from llava.eval.runner import ModelBundle

        return ModelBundle(self.tokenizer, self.model, self.image_processor, model_id)
