"""Prompt and image helpers with upstream LLaVA's names and behaviour.

- `tokenizer_image_token`: tokenize a prompt holding `<image>` markers into ids where each
  marker becomes `IMAGE_TOKEN_INDEX` (-200) and BOS appears once at the start.
- `process_images`: the image preprocessing of the eval runners (`pad` = expand to a square
  filled with the processor's mean colour, then resize + center crop + normalise).
- `get_model_name_from_path`: the display name LLaVA derives from a checkpoint path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from transformers import StoppingCriteria

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX


def tokenizer_image_token(
    prompt: str,
    tokenizer,
    image_token_index: int = IMAGE_TOKEN_INDEX,
    return_tensors: str | None = None,
):
    """Token ids of `prompt` with every `<image>` replaced by `image_token_index`.

    Each text piece is tokenized on its own (as LLaVA does, so a piece after an image starts
    with the tokenizer's dummy-prefix space); the BOS the tokenizer adds to every piece is kept
    only at the very start.

    Returns a list of ints, or a 1-D LongTensor [L] when `return_tensors == "pt"`.
    """
    chunks = [tokenizer(piece).input_ids for piece in prompt.split(DEFAULT_IMAGE_TOKEN)]
    bos = tokenizer.bos_token_id
    adds_bos = bos is not None and len(chunks[0]) > 0 and chunks[0][0] == bos
    input_ids = [bos] if adds_bos else []
    for i, chunk in enumerate(chunks):
        if i > 0:
            input_ids.append(image_token_index)
        input_ids.extend(chunk[1:] if adds_bos else chunk)
    if return_tensors is None:
        return input_ids
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    raise ValueError(f"unsupported return_tensors: {return_tensors!r}")


def pad_token_ids(
    batch: Sequence[Sequence[int]], pad_token_id: int, padding_side: str = "left"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad id lists (placeholders included) into input_ids [B, L] and attention_mask [B, L]."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, ids in enumerate(batch):
        span = slice(width - len(ids), width) if padding_side == "left" else slice(0, len(ids))
        input_ids[i, span] = torch.tensor(list(ids), dtype=torch.long)
        mask[i, span] = 1
    return input_ids, mask


def expand2square(pil_img: Image.Image, background_color: tuple[int, ...]) -> Image.Image:
    """Paste the image centred on a square canvas of its longer side, filled with a colour."""
    width, height = pil_img.size
    if width == height:
        return pil_img
    side = max(width, height)
    canvas = Image.new(pil_img.mode, (side, side), background_color)
    canvas.paste(pil_img, ((side - width) // 2, (side - height) // 2))
    return canvas


def process_images(images: Sequence[Image.Image], image_processor, model_cfg) -> torch.Tensor:
    """Pixel values for a list of PIL images, per `model_cfg.image_aspect_ratio`.

    Returns [N, 3, H, W] (a list of [3, H, W] if the shapes differ, which only happens with
    processors that do not crop).
    """
    aspect = getattr(model_cfg, "image_aspect_ratio", None)
    if aspect not in (None, "pad", "square", "resize", ""):
        raise ValueError(
            f"image_aspect_ratio {aspect!r} is not supported by this port (LLaVA-1.5 uses 'pad')"
        )
    if aspect != "pad":
        return image_processor(images=list(images), return_tensors="pt")["pixel_values"]
    fill = tuple(int(x * 255) for x in image_processor.image_mean)
    pixels = [
        image_processor(images=expand2square(img, fill), return_tensors="pt")["pixel_values"][0]
        for img in images
    ]  # each [3, H, W]
    if all(p.shape == pixels[0].shape for p in pixels):
        return torch.stack(pixels, dim=0)  # [N, 3, H, W]
    return pixels


def load_image(image_file: str | Path) -> Image.Image:
    """Open a local image as RGB (no downloads: URLs must be fetched beforehand)."""
    text = str(image_file)
    if text.startswith(("http://", "https://")):
        raise ValueError(f"{text}: this port never downloads; save the image locally first")
    return Image.open(text).convert("RGB")


def get_model_name_from_path(model_path: str) -> str:
    """Last path component, or `<run>_checkpoint-N` for a trainer checkpoint folder."""
    parts = str(model_path).strip("/").split("/")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]


class KeywordsStoppingCriteria(StoppingCriteria):
    """Stop a generation once any keyword appears in its newly generated text.

    `generate()` from embeddings returns only new tokens, so every row here is a generation.
    """

    def __init__(self, keywords: Sequence[str], tokenizer, input_ids: torch.Tensor | None = None):
        self.keywords = list(keywords)  # input_ids: accepted for LLaVA's signature, unused
        self.tokenizer = tokenizer

    def __call__(self, output_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        # output_ids: [B, T]; look at (up to) the last 32 tokens of each row
        tails = self.tokenizer.batch_decode(output_ids[:, -32:], skip_special_tokens=True)
        done = [any(k in tail for k in self.keywords) for tail in tails]
        return torch.tensor(done, dtype=torch.bool, device=output_ids.device)
