"""The multimodal part of LLaVA: projector, vision tower slot and the image splice.

`LlavaMetaModel` is mixed into the base (decoder) model and owns `mm_projector` (saved in the
checkpoint) and `vision_tower` (attached after loading, from its own folder).
`LlavaMetaForCausalLM` is mixed into the causal-LM class and turns `input_ids` holding
`IMAGE_TOKEN_INDEX` placeholders plus pixel values into `inputs_embeds` where each placeholder
is replaced by the image's projected patch features, re-padding the batch the way LLaVA does.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.model.errors import LlavaLoadError
from llava.model.multimodal_projector.builder import build_vision_projector


class LlavaMetaModel:
    """Mixin for the decoder model: `mm_projector` and an attachable `vision_tower`."""

    def init_multimodal_modules(self, config) -> None:
        self.vision_tower = None
        if hasattr(config, "mm_hidden_size"):
            self.mm_projector = build_vision_projector(config)

    def get_vision_tower(self):
        return self.vision_tower

    def attach_vision_tower(self, tower: nn.Module) -> None:
        """Install a loaded vision tower, checking its width against `mm_hidden_size`."""
        expected = getattr(self.config, "mm_hidden_size", None)
        if expected is not None and tower.hidden_size != expected:
            raise LlavaLoadError(
                f"vision tower at {getattr(tower, 'tower_path', '?')} has hidden size "
                f"{tower.hidden_size} but the model's mm_hidden_size is {expected}; "
                "point mm_vision_tower at the tower the model was trained with"
            )
        self.vision_tower = tower


class LlavaMetaForCausalLM:
    """Mixin for the causal LM: image encoding and the splice into input embeddings."""

    def get_model(self):
        return self.model

    def get_vision_tower(self):
        return self.get_model().get_vision_tower()

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """images [N, 3, H, W] -> projected features [N, P, hidden_size]."""
        feats = self.get_vision_tower()(images)  # [N, P, mm_hidden_size]
        return self.get_model().mm_projector(feats)

    def _image_feature_slots(self, images) -> list[torch.Tensor | None]:
        """One feature block [P_i, hidden] per image slot (one slot per sample).

        A tensor [N, 3, H, W] gives N slots of P patches; a list (or 5-D tensor) gives one slot
        per element, an element [n, 3, H, W] flattening its n images into n * P positions
        (LLaVA's `flat` patch merge) and a None element an empty slot (a text-only sample in
        a batch with images).
        """
        if getattr(self.config, "mm_patch_merge_type", "flat") != "flat":
            raise NotImplementedError("only mm_patch_merge_type 'flat' (LLaVA-1.5) is supported")
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            return list(self.encode_images(images))  # N x [P, hidden]
        per_sample = [None if x is None else (x.unsqueeze(0) if x.ndim == 3 else x) for x in images]
        present = [x for x in per_sample if x is not None]  # each [n_i, 3, H, W]
        if not present:
            return [None] * len(per_sample)
        feats = self.encode_images(torch.cat(present, dim=0))  # [sum n_i, P, hidden]
        chunks = iter(torch.split(feats, [x.shape[0] for x in present], dim=0))
        return [None if x is None else next(chunks).flatten(0, 1) for x in per_sample]  # [n_i * P, hidden]

    def _splice_sample(
        self, ids: torch.Tensor, labels: torch.Tensor, slots: Iterator[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """ids/labels [L] (padding removed) -> embeds [L', hidden], labels [L'].

        Every placeholder consumes the next image slot; a sample with no placeholder still
        consumes one slot (so images stay aligned with samples, as in LLaVA).
        """
        embed = self.get_model().embed_tokens
        marks = torch.where(ids == IMAGE_TOKEN_INDEX)[0].tolist()
        if not marks:
            next(slots, None)
            return embed(ids), labels
        bounds = [-1, *marks, ids.shape[0]]
        text_ids = [ids[bounds[i] + 1 : bounds[i + 1]] for i in range(len(bounds) - 1)]
        text_labels = [labels[bounds[i] + 1 : bounds[i + 1]] for i in range(len(bounds) - 1)]
        text_embeds = torch.split(embed(torch.cat(text_ids)), [len(t) for t in text_ids], dim=0)
        out_embeds, out_labels = [], []
        for i, (emb, lab) in enumerate(zip(text_embeds, text_labels)):
            out_embeds.append(emb)
            out_labels.append(lab)
            if i < len(marks):
                feat = next(slots, None)
                if feat is None:
                    raise ValueError("a prompt has more <image> placeholders than images were given")
                feat = feat.to(emb.dtype)  # [P, hidden]
                out_embeds.append(feat)
                out_labels.append(torch.full((feat.shape[0],), IGNORE_INDEX, dtype=lab.dtype, device=lab.device))
        return torch.cat(out_embeds), torch.cat(out_labels)

    @staticmethod
    def _pad_batch(embeds: list[torch.Tensor], labels: list[torch.Tensor], side: str):
        """Stack variable-length samples with zero embeddings on `side`.

        Returns embeds [B, T, hidden], labels [B, T], attention mask [B, T] (bool) and
        position ids [B, T] counting from 0 at each sample's first real position.
        """
        batch, max_len, hidden = len(embeds), max(e.shape[0] for e in embeds), embeds[0].shape[1]
        ref = embeds[0]
        out = torch.zeros((batch, max_len, hidden), dtype=ref.dtype, device=ref.device)
        out_labels = torch.full((batch, max_len), IGNORE_INDEX, dtype=labels[0].dtype, device=ref.device)
        mask = torch.zeros((batch, max_len), dtype=torch.bool, device=ref.device)
        pos = torch.zeros((batch, max_len), dtype=torch.long, device=ref.device)
        for i, (emb, lab) in enumerate(zip(embeds, labels)):
            n = emb.shape[0]
            span = slice(max_len - n, max_len) if side == "left" else slice(0, n)
            out[i, span], out_labels[i, span], mask[i, span] = emb, lab, True
            pos[i, span] = torch.arange(n, dtype=torch.long, device=ref.device)
        return out, out_labels, mask, pos

    def prepare_inputs_labels_for_multimodal(
        self,
        input_ids,
        position_ids,
        attention_mask,
        cache,
        labels,
        images,
        image_sizes=None,
        padding_side: str | None = None,
    ):
        """LLaVA's splice: returns (None, position_ids, attention_mask, cache, inputs_embeds, labels).

        input_ids [B, L] with IMAGE_TOKEN_INDEX placeholders, attention_mask [B, L] or None.
        Padding is removed per sample, image features spliced in, sequences truncated to
        `tokenizer_model_max_length` and re-padded on `padding_side` (default
        `config.tokenizer_padding_side`, as LLaVA; generation passes "left"). A returned mask,
        position ids or labels is None when the caller passed None (LLaVA's contract).
        """
        if self.get_vision_tower() is None or images is None or input_ids.shape[1] == 1:
            return input_ids, position_ids, attention_mask, cache, None, labels
        slots = iter(self._image_feature_slots(images))
        keep = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        lab = torch.full_like(input_ids, IGNORE_INDEX) if labels is None else labels
        spliced = [self._splice_sample(ids[m], lb[m], slots) for ids, lb, m in zip(input_ids, lab, keep)]
        max_len = getattr(self.config, "tokenizer_model_max_length", None)
        if max_len is not None:
            spliced = [(e[:max_len], lb[:max_len]) for e, lb in spliced]
        side = padding_side or getattr(self.config, "tokenizer_padding_side", "right")
        embeds, new_labels, new_mask, new_pos = self._pad_batch([e for e, _ in spliced], [lb for _, lb in spliced], side)
        return (
            None,
            None if position_ids is None else new_pos,
            None if attention_mask is None else new_mask.to(attention_mask.dtype),
            cache,
            embeds,
            None if labels is None else new_labels,
        )
