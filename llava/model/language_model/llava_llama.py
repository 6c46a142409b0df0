"""`LlavaLlamaForCausalLM` (model_type `llava_llama`) on transformers 5.

The language model is transformers' own Llama; this file only adds the image splice to
`forward` and `generate`. Transformers 5 renamed the generation cache kwarg
`past_key_values` -> `cache`; both `forward` and `prepare_inputs_for_generation` take `cache`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM, LlamaModel
from transformers.cache_utils import Cache
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from llava.model.llava_arch import LlavaMetaForCausalLM, LlavaMetaModel


class LlavaConfig(LlamaConfig):
    """A LlamaConfig plus LLaVA's `mm_*` fields (kept as extra attributes)."""

    model_type = "llava_llama"

    def to_original_dict(self) -> dict:
        """The model config file's content, readable by the original LLaVA code (transformers 4.3x) too.

        transformers 5 writes RoPE settings as `rope_parameters`; 4.3x reads `rope_theta` and
        `rope_scaling` and `torch_dtype`, so those are added (transformers 5 reads either).
        """
        out = self.to_dict()
        rope = dict(out.get("rope_parameters") or {})
        out["rope_theta"] = rope.get("rope_theta", 10000.0)
        rope_type = rope.get("rope_type", "default")
        scaling = {k: v for k, v in rope.items() if k not in ("rope_theta", "rope_type")}
        out["rope_scaling"] = None if rope_type == "default" else {"type": rope_type, **scaling}
        if out.get("dtype") is not None:
            out["torch_dtype"] = str(out["dtype"]).removeprefix("torch.")
        out["architectures"] = ["LlavaLlamaForCausalLM"]
        return out


class LlavaLlamaModel(LlavaMetaModel, LlamaModel):
    config_class = LlavaConfig
    # The tower is loaded from `mm_vision_tower`, never from the checkpoint.
    _keys_to_ignore_on_load_unexpected = [r"vision_tower\."]

    def __init__(self, config: LlavaConfig):
        super().__init__(config)
        self.init_multimodal_modules(config)
        self.post_init()  # initialise the projector like the rest (random init only)


class LlavaLlamaForCausalLM(LlamaForCausalLM, LlavaMetaForCausalLM):
    config_class = LlavaConfig
    _keys_to_ignore_on_load_unexpected = [r"vision_tower\."]

    def __init__(self, config: LlavaConfig):
        # Build the parts directly (LlamaForCausalLM.__init__ would build a plain LlamaModel first).
        LlamaPreTrainedModel.__init__(self, config)
        self.model = LlavaLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        images: torch.FloatTensor | None = None,
        image_sizes: list[list[int]] | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Llama forward after splicing `images` into the embeddings of `input_ids` [B, L]."""
        if inputs_embeds is None:
            input_ids, position_ids, attention_mask, cache, inputs_embeds, labels = (
                self.prepare_inputs_labels_for_multimodal(
                    input_ids, position_ids, attention_mask, cache, labels, images, image_sizes
                )
            )
        return super().forward(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            **kwargs,
        )

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_sizes: list[list[int]] | None = None,
        **kwargs,
    ):
        """Generate from `inputs` [B, L] (ids with image placeholders) and `images`.

        The prompt is turned into `inputs_embeds` [B, T, hidden] (left-padded, with an
        attention mask, whatever `tokenizer_padding_side` says, because generation appends on
        the right) and handed to transformers' `generate`, which then returns only the new
        tokens [B, new].
        """
        if "inputs_embeds" in kwargs:
            raise NotImplementedError("pass token ids (with image placeholders), not inputs_embeds")
        position_ids = kwargs.pop("position_ids", None)
        attention_mask = kwargs.pop("attention_mask", None)
        if images is not None:
            _, position_ids, attention_mask, _, inputs_embeds, _ = self.prepare_inputs_labels_for_multimodal(
                inputs, position_ids, attention_mask, None, None, images, image_sizes, padding_side="left"
            )
        else:
            inputs_embeds = self.get_model().embed_tokens(inputs)  # [B, L, hidden]
        return super().generate(
            position_ids=position_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds, **kwargs
        )

    def prepare_inputs_for_generation(self, input_ids, cache=None, inputs_embeds=None, **kwargs):
        """Keep `images`/`image_sizes` out of the parent's handling and pass them through."""
        images = kwargs.pop("images", None)
        image_sizes = kwargs.pop("image_sizes", None)
        inputs = super().prepare_inputs_for_generation(input_ids, cache=cache, inputs_embeds=inputs_embeds, **kwargs)
        if images is not None:
            inputs["images"] = images
        if image_sizes is not None:
            inputs["image_sizes"] = image_sizes
        return inputs


AutoConfig.register("llava_llama", LlavaConfig, exist_ok=True)
AutoModelForCausalLM.register(LlavaConfig, LlavaLlamaForCausalLM, exist_ok=True)
