"""`CLIPVisionTower`: a frozen CLIPVisionModel that returns LLaVA's patch features."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from transformers import CLIPVisionModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from llava.model.errors import LlavaLoadError

logger = logging.getLogger(__name__)


class CLIPVisionTower(nn.Module):
    """CLIP vision encoder loaded from a local folder (never from the LLaVA checkpoint).

    Args:
        tower_path: folder with a CLIP (vision) model config, weights and `preprocessor_config.json`.
        select_layer: hidden-state index to read (`mm_vision_select_layer`, LLaVA-1.5: -2).
        select_feature: `patch` drops the CLS token, `cls_patch` keeps it.
    """

    def __init__(
        self,
        tower_path: str | Path,
        select_layer: int = -2,
        select_feature: str = "patch",
        dtype: torch.dtype | None = None,
        attn_implementation: str | None = None,
    ):
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(f"unexpected mm_vision_select_feature {select_feature!r}")
        self.tower_path = Path(tower_path)
        self.select_layer = select_layer
        self.select_feature = select_feature
        self.vision_tower = _load_clip(self.tower_path, dtype, attn_implementation)
        self.vision_tower.requires_grad_(False)
        self.image_processor = load_image_processor(self.tower_path)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] -> features [N, P, C] (P patches, C = vision hidden size)."""
        out = self.vision_tower(images.to(device=self.device, dtype=self.dtype), output_hidden_states=True)
        feats = out.hidden_states[self.select_layer]  # [N, 1 + P, C]
        if self.select_feature == "patch":
            feats = feats[:, 1:]  # [N, P, C]
        return feats.to(images.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.dtype

    @property
    def device(self) -> torch.device:
        return self.vision_tower.device

    @property
    def config(self):
        return self.vision_tower.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def num_patches_per_side(self) -> int:
        return self.config.image_size // self.config.patch_size

    @property
    def num_patches(self) -> int:
        return self.num_patches_per_side**2


def load_image_processor(path: str | Path) -> CLIPImageProcessorPil:
    """The tower's CLIP image processor, always the PIL implementation.

    `AutoImageProcessor` picks the torchvision implementation when it is installed and, in
    transformers 5.17 raises "requires the Torchvision library" without it (5.24 falls
    back to PIL). LLaVA's pixels are those of the PIL processor, so it is named directly:
    the same class on every transformers version the project declares, with or without
    torchvision.
    """
    return CLIPImageProcessorPil.from_pretrained(str(path))


def _load_clip(path: Path, dtype, attn_implementation) -> CLIPVisionModel:
    """CLIPVisionModel from `path`, failing if any vision weight is missing from the files."""
    if not (path / "preprocessor_config.json").is_file():
        raise LlavaLoadError(
            f"{path}: no preprocessor_config.json; a vision tower folder needs the CLIP image "
            "processor config next to its weights (save it with CLIPImageProcessor.save_pretrained)"
        )
    kwargs = {"dtype": dtype} if dtype is not None else {}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    model, info = CLIPVisionModel.from_pretrained(str(path), output_loading_info=True, **kwargs)
    if info.get("missing_keys"):
        raise LlavaLoadError(
            f"{path}: the vision tower weights lack {sorted(info['missing_keys'])[:5]}...; "
            "point mm_vision_tower (or --vision-tower) at a complete CLIP checkpoint"
        )
    logger.info("vision tower loaded from %s", path)
    return model.eval()
